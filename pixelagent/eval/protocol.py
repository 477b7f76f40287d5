"""The evaluation protocols: the paper's (``paper``) and ours (``pixelagent``), where they differ.

==========================  ==============================================  ==============================================
                            ``paper``                                       ``pixelagent`` (default)
==========================  ==============================================  ==============================================
general-MLLM baseline       Appendix C.3: no system prompt; the             the segmentation instruction is the system
(``openai-chat``)           segmentation prompt and box format are added    prompt of every turn (an app cannot know
                            to the segmentation query only                  which turn will ask for a mask)
response metrics            segmentation-trained models: every answer,      every model: the reasoning answers only (the
                            the segmentation answer included; general       templated segmentation answer is left out for
                            MLLMs: the last round left out ("for fairness,  all, so like is compared with like)
                            we exclude the last round of dialogue")
LLM judge                   the conversation (and image) only, as Figure 8  the dialogue's focal target is given too
==========================  ==============================================  ==============================================

Which question is "the segmentation query": the dataset marks it. In a PRIST dialogue it is the
user turn whose reference answer holds ``[SEG]`` (the last one, the templated segmentation
request); ``eval-prist`` wraps it in :class:`SegmentationQuery` before asking. In an interactive
session nothing marks it, so the ``openai-chat`` backbone's ``keyword`` rule
(:func:`asks_to_segment`) also treats any question that asks to segment, mask, outline, box,
locate or highlight something as one; wrap a question yourself
(``session.ask(SegmentationQuery("..."))``) to mark it explicitly.
"""

from __future__ import annotations

import re
from typing import Any, Literal

__all__ = ["GENERAL_MLLM_BASELINE", "PROTOCOLS", "Protocol", "SegmentationQuery", "asks_to_segment",
           "is_general_mllm"]

Protocol = Literal["paper", "pixelagent"]
PROTOCOLS: tuple[str, ...] = ("paper", "pixelagent")
#: The value of an LLM backbone's ``baseline`` attribute that marks a general MLLM (C.3).
GENERAL_MLLM_BASELINE = "general-mllm"

_SEGMENT_WORDS = re.compile(
    r"\b(segment\w*|mask\w*|outline\w*|box(?:es)?\s+out|bounding\s+box\w*|locate\w*|locali[sz]\w*|"
    r"highlight\w*|detect(?:ion)?\s+box\w*)\b", re.IGNORECASE)


class SegmentationQuery(str):
    """A question marked as the segmentation query of a dialogue (a ``str``, unchanged as text).

    ``session.ask(SegmentationQuery(question))`` tells backbones that treat the segmentation
    query specially (the ``paper`` protocol of ``openai-chat``) that this is it.
    """

    __slots__ = ()


def asks_to_segment(question: str) -> bool:
    """The keyword rule: does ``question`` ask to segment, mask, outline, box, locate or
    highlight something? (PRIST's own templated requests mostly say "segment"; a few say
    "divide" or "structure", which this rule misses, so evaluation marks them instead.)"""
    return bool(_SEGMENT_WORDS.search(question))


def is_general_mllm(llm: Any) -> bool:
    """Whether an LLM backbone declares itself a general-MLLM baseline (``baseline`` attribute)."""
    return getattr(llm, "baseline", None) == GENERAL_MLLM_BASELINE
