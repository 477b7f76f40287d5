"""Any OpenAI-compatible vision chat endpoint as the LLM backbone (GPT-4o, or Qwen2-VL,
InternVL2, LLaVA served by vLLM / Ollama): the paper's zero-shot general-MLLM baselines.

Two protocols (``protocol``), both asking for ``<box>(x1, y1), (x2, y2)</box>`` or "no detected":

* ``"pixelagent"`` (the default, for apps): the segmentation instruction is the system prompt
  of every request (prompt file ``segmentation_system``, with the image's size), so the model
  may box something in any turn, as a user of a chat app expects.
* ``"paper"`` (Appendix C.3): no system prompt; the paper's segmentation prompt and output
  format (prompt file ``segmentation_c3``, or the user's own) are appended to the
  **segmentation query only**, and every other turn goes out as the user wrote it. Which
  question is the segmentation query is decided by ``segmentation_queries``: ``"marked"``
  (only questions wrapped in :class:`~pixelagent.eval.protocol.SegmentationQuery`: how
  ``eval-prist`` marks the last user turn of a PRIST dialogue, its templated segmentation
  request) or ``"keyword"`` (also any question that asks to segment, mask, outline, box,
  locate or highlight something: the rule for interactive sessions, the default).

The earlier segmentation queries of a session are sent again with the prompt they went out
with, so the model sees its own history as it happened.
"""

from __future__ import annotations

import os
from typing import Literal, Optional, Union

from pixelagent.data.prompts import PromptTemplate, load_prompt
from pixelagent.errors import ConfigError, InputError
from pixelagent.eval.protocol import GENERAL_MLLM_BASELINE, SegmentationQuery, asks_to_segment
from pixelagent.llm import ChatClient, image_content
from pixelagent.parts import Generation, LLMBackbone, LLMRequest

Protocol = Literal["paper", "pixelagent"]
QueryRule = Literal["marked", "keyword"]

#: Our system prompt of the ``pixelagent`` protocol, without the image-size sentence (kept for
#: callers that read it; the backbone renders the prompt file with the size filled in).
SEGMENTATION_PROMPT = (
    "When the user asks you to segment or locate something, box out the position of the focus "
    "and output the detection box as <box>(x1, y1), (x2, y2)</box>, the top-left and bottom-right "
    "corners in pixels of the image. If no focus is detected, return \"no detected\". Always put a "
    "blank space after your output.")

#: Default bound on the dialogue text sent per request, in characters (about 50k tokens: well
#: inside GPT-4o's 128k-token window, and the remote models behind vLLM usually have 32k+).
DEFAULT_CONTEXT_CHARS = 200_000
_SEGMENTATION_TURNS = "segmentation_turns"  # request.state key: indices of turns sent as segmentation queries


class ChatBackbone(LLMBackbone):
    """Sends the session history each turn, the image once (as a data URL) with the first question.

    User text only ever travels as the ``text`` of a text content part, so no question can add
    an image part, a message or a role: the JSON structure is the escaping. ``context_chars``
    bounds the questions' and answers' characters per request; when the history outgrows it the
    request's ``context_policy`` applies (the oldest exchanges are left out, the image stays on
    the first message sent, or the turn is refused).

    ``system_prompt`` replaces our ``pixelagent``-protocol system prompt with a fixed text (the
    image's size is appended); ``protocol``, ``segmentation_prompt`` (a path to the user's own
    C.3 prompt file) and ``segmentation_queries`` are described in the module docstring and can
    be changed later with :meth:`configure`.
    """

    #: Marks this backbone as a general-MLLM baseline (paper Appendix C.3) for the evaluation.
    baseline = GENERAL_MLLM_BASELINE

    def __init__(self, client: ChatClient, system_prompt: Optional[str] = None,
                 temperature: float | None = None, max_tokens: int | None = None,
                 context_chars: int = DEFAULT_CONTEXT_CHARS, *, protocol: Protocol = "pixelagent",
                 segmentation_prompt: Union[str, os.PathLike, None] = None,
                 segmentation_queries: QueryRule = "keyword") -> None:
        self.client, self.system_prompt = client, system_prompt
        self.temperature, self.max_tokens = temperature, max_tokens
        self.context_chars = context_chars
        self._system_template = load_prompt("segmentation_system")
        self.configure(protocol=protocol, segmentation_prompt=segmentation_prompt,
                       segmentation_queries=segmentation_queries)

    def configure(self, *, protocol: Optional[Protocol] = None,
                  segmentation_prompt: Union[str, os.PathLike, None] = None,
                  segmentation_queries: Optional[QueryRule] = None) -> ChatBackbone:
        """Switch the protocol, the C.3 prompt file (None keeps the current one; ours at first)
        or the rule that finds segmentation queries. Returns the backbone."""
        if protocol is not None:
            if protocol not in ("paper", "pixelagent"):
                raise ConfigError(f"protocol must be 'paper' or 'pixelagent', got {protocol!r}")
            self.protocol = protocol
        if segmentation_queries is not None:
            if segmentation_queries not in ("marked", "keyword"):
                raise ConfigError(f"segmentation_queries must be 'marked' or 'keyword', got {segmentation_queries!r}")
            self.segmentation_queries = segmentation_queries
        if segmentation_prompt is not None or not hasattr(self, "segmentation_template"):
            self.segmentation_template: PromptTemplate = load_prompt("segmentation_c3", segmentation_prompt)
        return self

    def respond(self, request: LLMRequest) -> Generation:
        dropped = self._exchanges_to_drop(request)
        text = self.client.chat(self.messages(request, dropped), temperature=self.temperature,
                                max_tokens=self.max_tokens)
        if self.protocol == "paper" and self.is_segmentation_query(request.question):
            request.state.setdefault(_SEGMENTATION_TURNS, set()).add(len(request.history) + 1)
        notes = [] if not dropped else [
            f"left the {dropped} oldest exchange{'' if dropped == 1 else 's'} out of the request: the dialogue "
            f"outgrew {self.context_chars:,} characters (llm.settings.context_chars; limits.context_policy: "
            "drop-oldest)"]
        return Generation(text=text, notes=notes)

    def is_segmentation_query(self, question: str) -> bool:
        """Whether ``question`` is a segmentation query under the current rule (module docstring)."""
        if isinstance(question, SegmentationQuery):
            return True
        return self.segmentation_queries == "keyword" and asks_to_segment(question)

    def _exchanges_to_drop(self, request: LLMRequest) -> int:
        sizes = [len(t.question) + len(t.reply.raw_text) for t in request.history]
        total = sum(sizes) + len(request.question)
        if len(request.question) > self.context_chars:
            raise InputError(f"the question is {len(request.question):,} characters, more than the "
                             f"{self.context_chars:,} sent per request (llm.settings.context_chars); shorten it")
        dropped = 0
        while total > self.context_chars:
            if request.context_policy == "refuse":
                raise InputError(f"the dialogue outgrew the {self.context_chars:,} characters sent per request "
                                 "(llm.settings.context_chars); call session.reset() or open a new session, or "
                                 "set limits.context_policy to drop-oldest")
            total -= sizes[dropped]
            dropped += 1
        return dropped

    def system_text(self, width: int, height: int) -> str:
        """The ``pixelagent`` protocol's system prompt for an image of ``width`` x ``height``."""
        if self.system_prompt is not None:
            return f"{self.system_prompt} The image is {width}x{height} pixels."
        return self._system_template.render(width=width, height=height).strip()

    def messages(self, request: LLMRequest, dropped: int = 0) -> list[dict]:
        """The chat request: (in the ``pixelagent`` protocol) the system prompt, the kept
        exchanges and the new question; the image rides on the first user message sent."""
        height, width = request.image.shape[:2]
        image = request.state.get("image_part")
        if image is None:  # encoded once per session, not once per turn
            image = request.state["image_part"] = image_content(request.image, format="png")
        messages = [] if self.protocol == "paper" else [{"role": "system", "content": self.system_text(width, height)}]
        kept = request.history[dropped:]
        questions = [self._as_sent(turn.question, turn.index in request.state.get(_SEGMENTATION_TURNS, ()),
                                   width, height) for turn in kept]
        questions.append(self._as_sent(request.question, self.protocol == "paper"
                                       and self.is_segmentation_query(request.question), width, height))
        answers = [turn.reply.raw_text for turn in kept]
        for index, question in enumerate(questions):
            content = [{"type": "text", "text": question}]
            messages.append({"role": "user", "content": [image, *content] if index == 0 else content})
            if index < len(answers):
                messages.append({"role": "assistant", "content": answers[index]})
        return messages

    def _as_sent(self, question: str, segmentation: bool, width: int, height: int) -> str:
        """The question as it goes out: in the ``paper`` protocol a segmentation query carries the
        C.3 prompt after it."""
        if not segmentation:
            return str(question)
        prompt = self.segmentation_template.render(width=width, height=height).strip()
        return f"{question}\n{prompt}"
