"""Any OpenAI-compatible vision chat endpoint as the LLM backbone (GPT-4o, or Qwen2-VL,
InternVL2, LLaVA served by vLLM / Ollama): the paper's zero-shot general-MLLM baselines."""

from __future__ import annotations

from pixelagent.errors import InputError
from pixelagent.llm import ChatClient, image_content
from pixelagent.parts import Generation, LLMBackbone, LLMRequest

#: Appendix C.3's segmentation prompt, in our words.
SEGMENTATION_PROMPT = (
    "When the user asks you to segment or locate something, box out the position of the focus "
    "and output the detection box as <box>(x1, y1), (x2, y2)</box>, the top-left and bottom-right "
    "corners in pixels of the image. If no focus is detected, return \"no detected\". Always put a "
    "blank space after your output.")

#: Default bound on the dialogue text sent per request, in characters (about 50k tokens: well
#: inside GPT-4o's 128k-token window, and the remote models behind vLLM usually have 32k+).
DEFAULT_CONTEXT_CHARS = 200_000


class ChatBackbone(LLMBackbone):
    """Sends the session history each turn, the image once (as a data URL) with the first question.

    User text only ever travels as the ``text`` of a text content part, so no question can add
    an image part, a message or a role: the JSON structure is the escaping. ``context_chars``
    bounds the questions' and answers' characters per request; when the history outgrows it the
    request's ``context_policy`` applies (the oldest exchanges are left out, the image stays on
    the first message sent, or the turn is refused).
    """

    def __init__(self, client: ChatClient, system_prompt: str = SEGMENTATION_PROMPT,
                 temperature: float | None = None, max_tokens: int | None = None,
                 context_chars: int = DEFAULT_CONTEXT_CHARS) -> None:
        self.client, self.system_prompt = client, system_prompt
        self.temperature, self.max_tokens = temperature, max_tokens
        self.context_chars = context_chars

    def respond(self, request: LLMRequest) -> Generation:
        dropped = self._exchanges_to_drop(request)
        text = self.client.chat(self.messages(request, dropped), temperature=self.temperature,
                                max_tokens=self.max_tokens)
        notes = [] if not dropped else [
            f"left the {dropped} oldest exchange{'' if dropped == 1 else 's'} out of the request: the dialogue "
            f"outgrew {self.context_chars:,} characters (llm.settings.context_chars; limits.context_policy: "
            "drop-oldest)"]
        return Generation(text=text, notes=notes)

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

    def messages(self, request: LLMRequest, dropped: int = 0) -> list[dict]:
        """The chat request: system prompt, the kept exchanges and the new question; the image
        rides on the first user message sent."""
        height, width = request.image.shape[:2]
        image = request.state.get("image_part")
        if image is None:  # encoded once per session, not once per turn
            image = request.state["image_part"] = image_content(request.image, format="png")
        messages = [{"role": "system", "content": f"{self.system_prompt} The image is {width}x{height} pixels."}]
        kept = request.history[dropped:]
        questions = [turn.question for turn in kept] + [request.question]
        answers = [turn.reply.raw_text for turn in kept]
        for index, question in enumerate(questions):
            content = [{"type": "text", "text": question}]
            messages.append({"role": "user", "content": [image, *content] if index == 0 else content})
            if index < len(answers):
                messages.append({"role": "assistant", "content": answers[index]})
        return messages
