"""Any OpenAI-compatible vision chat endpoint as the LLM backbone (GPT-4o, or Qwen2-VL,
InternVL2, LLaVA served by vLLM / Ollama): the paper's zero-shot general-MLLM baselines."""

from __future__ import annotations

from pixelagent.llm import ChatClient, image_content
from pixelagent.parts import Generation, LLMBackbone, LLMRequest

#: Appendix C.3's segmentation prompt, in our words.
SEGMENTATION_PROMPT = (
    "When the user asks you to segment or locate something, box out the position of the focus "
    "and output the detection box as <box>(x1, y1), (x2, y2)</box>, the top-left and bottom-right "
    "corners in pixels of the image. If no focus is detected, return \"no detected\". Always put a "
    "blank space after your output.")


class ChatBackbone(LLMBackbone):
    """Sends the whole session history each turn, the image once (as a data URL) with the first question."""

    def __init__(self, client: ChatClient, system_prompt: str = SEGMENTATION_PROMPT,
                 temperature: float | None = None, max_tokens: int | None = None) -> None:
        self.client, self.system_prompt = client, system_prompt
        self.temperature, self.max_tokens = temperature, max_tokens

    def respond(self, request: LLMRequest) -> Generation:
        text = self.client.chat(self.messages(request), temperature=self.temperature, max_tokens=self.max_tokens)
        return Generation(text=text)

    def messages(self, request: LLMRequest) -> list[dict]:
        height, width = request.image.shape[:2]
        image = request.state.get("image_part")
        if image is None:  # encoded once per session, not once per turn
            image = request.state["image_part"] = image_content(request.image, format="png")
        messages = [{"role": "system", "content": f"{self.system_prompt} The image is {width}x{height} pixels."}]
        questions = [turn.question for turn in request.history] + [request.question]
        answers = [turn.reply.raw_text for turn in request.history]
        for index, question in enumerate(questions):
            content = [{"type": "text", "text": question}]
            messages.append({"role": "user", "content": [image, *content] if index == 0 else content})
            if index < len(answers):
                messages.append({"role": "assistant", "content": answers[index]})
        return messages
