import pytest

from pixelagent.markup import find_focus_spans, format_focus, render_plain


def test_one_span_with_offsets():
    text = "Sure, it is [OBJ]the red label[SEG]."
    (span,) = find_focus_spans(text)
    assert span.phrase == "the red label"
    assert text[span.start:span.end] == "[OBJ]the red label[SEG]"
    assert span.index == 0


def test_several_spans_and_bare_seg_in_order():
    text = "[OBJ]a[SEG] then [SEG] then [OBJ] b c [SEG]"
    assert [(s.phrase, s.index) for s in find_focus_spans(text)] == [("a", 0), ("", 1), ("b c", 2)]


def test_obj_without_seg_is_not_a_span_and_nested_obj_restarts():
    assert find_focus_spans("It is [OBJ]the label, I think.") == []
    # an [OBJ] left open is superseded by the next one: the span is the innermost
    assert [s.phrase for s in find_focus_spans("[OBJ]x [OBJ]y[SEG]")] == ["y"]


@pytest.mark.parametrize("raw, plain", [
    ("It is [OBJ]the label[SEG].", "It is the label."),
    ("Sure, [SEG] .", "Sure,."),
    ("no tokens here", "no tokens here"),
])
def test_render_plain(raw, plain):
    assert render_plain(raw) == plain


def test_format_focus_round_trips():
    assert [s.phrase for s in find_focus_spans(format_focus("the word 'OPEN'"))] == ["the word 'OPEN'"]
