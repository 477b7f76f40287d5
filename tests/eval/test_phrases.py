from pixelagent.eval.phrases import FocusPhraseMeter, text_reading


def test_text_reading_compares_the_quoted_word():
    assert text_reading("the title 'JAZZ' on it", "the title 'BIRDS' on it") == {
        "said": "JAZZ", "truth": "BIRDS", "correct": False}
    assert text_reading("the word 'TEA'", "the word 'TEA' printed")["correct"] is True
    assert text_reading("the blue mug", "the blue mug at the top") is None
    assert text_reading("no word here", "the word 'TEA'") == {"said": None, "truth": "TEA", "correct": False}
    assert text_reading("the mug's handle by the bus's door", "the mug's handle") is None  # possessives


def test_a_possessive_before_the_quote_does_not_open_it():
    assert text_reading("the book's title 'JAZZ'", "the book's title 'POEMS'") == {
        "said": "JAZZ", "truth": "POEMS", "correct": False}


def test_each_check_counts_only_where_the_focus_calls_for_it():
    meter = FocusPhraseMeter()
    meter.add("the word 'STOP' on the green sign's board", "the word 'CAFE' on the green sign's board")
    meter.add("the black mug at the top left", "the black mug at the top right")
    meter.add("the red bus at the bottom", "the red bus at the bottom")
    meter.add(None, "the white mug")  # named nothing: its colour check is wrong
    result = meter.result()
    assert result["dialogues"] == 4
    assert result["text"] == {"asked": 1, "correct": 0, "rate": 0.0}
    assert result["place"] == {"asked": 2, "correct": 1, "rate": 0.5}  # 'top left' is not 'top right'
    assert result["colour"] == {"asked": 4, "correct": 3, "rate": 0.75}


def test_places_must_match_exactly_and_quoted_words_are_not_places_or_colours():
    meter = FocusPhraseMeter()
    meter.add("the mug at the top", "the mug at the top left")
    meter.add("the word 'RED' on the sign", "the word 'BLUE' on the sign")
    result = meter.result()
    assert result["place"] == {"asked": 1, "correct": 0, "rate": 0.0}
    assert result["colour"] == {"asked": 0, "correct": 0, "rate": None}  # 'BLUE' is a reading, not a colour
    assert result["text"]["correct"] == 0
