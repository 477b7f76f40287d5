"""The reply markup shared by segmentation LLMs: ``[OBJ]{phrase}[SEG]``.

MIRAS (and LISA, with only ``[SEG]``) answer a segmentation request with text such as
``"Sure, it is [OBJ]the red label[SEG]."``. The phrase between the two tokens names the target;
the ``[SEG]`` token's hidden state carries it to the mask decoder. A reply may hold zero, one
or several such spans.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SEG_TOKEN = "[SEG]"
OBJ_TOKEN = "[OBJ]"

# A span runs from an [OBJ] to the next [SEG]; a bare [SEG] (LISA style) has an empty phrase.
_SPAN = re.compile(r"(?:\[OBJ\](?P<phrase>(?:(?!\[OBJ\]|\[SEG\]).)*?))?\[SEG\]", re.DOTALL)


@dataclass(frozen=True)
class FocusSpan:
    """One ``[OBJ]…[SEG]`` span of a reply.

    ``start``/``end`` are character offsets into the raw reply (``end`` exclusive, after ``[SEG]``);
    ``index`` is the span's order in the reply (0-based), which is also the order of ``[SEG]`` tokens.
    """

    phrase: str
    start: int
    end: int
    index: int


def find_focus_spans(text: str) -> list[FocusSpan]:
    """Every ``[OBJ]phrase[SEG]`` (or bare ``[SEG]``) span of ``text``, in order."""
    return [
        FocusSpan(phrase=(m.group("phrase") or "").strip(), start=m.start(), end=m.end(), index=i)
        for i, m in enumerate(_SPAN.finditer(text))
    ]


def render_plain(text: str) -> str:
    """The reply as a person should read it: special tokens removed, phrases kept.

    ``"It is [OBJ]the label[SEG]."`` → ``"It is the label."``
    """
    plain = text.replace(OBJ_TOKEN, "").replace(SEG_TOKEN, "")
    plain = re.sub(r"[ \t]+([.,;:!?])", r"\1", plain)  # the tokens often leave "label ." behind
    return re.sub(r"[ \t]{2,}", " ", plain).strip()


def format_focus(phrase: str) -> str:
    """The answer template for one target: ``[OBJ]{phrase}[SEG]``."""
    return f"{OBJ_TOKEN}{phrase}{SEG_TOKEN}"
