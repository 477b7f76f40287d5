"""pixelagent plugin: OpenAI-compatible chat models with box answers (the ``gpt4o-bbox`` preset).

Registers the ``openai-chat`` LLM backbone, the ``box-tags`` alignment (parses
``<box>(x1, y1), (x2, y2)</box>``) and the ``filled-box`` mask decoder. The endpoint and key
come from ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY`` unless the settings name them.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from pixelagent import hookimpl


class ChatSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = "gpt-4o"
    base_url: Optional[str] = None  # default: $OPENAI_BASE_URL, else the OpenAI API
    timeout: float = 60.0  # seconds: the deadline of each request attempt, the whole reply included
    max_retries: int = 5
    max_response_bytes: int = 16 << 20  # the largest reply body accepted (a chat completion is a few KiB)
    temperature: Optional[float] = None
    max_tokens: Optional[int] = None
    # the most characters of questions and answers sent per request; past it limits.context_policy applies
    context_chars: int = Field(200_000, ge=1)
    # paper: Appendix C.3's prompt only in segmentation queries, no system prompt; pixelagent: ours
    protocol: Literal["paper", "pixelagent"] = "pixelagent"
    segmentation_prompt: Optional[str] = None  # a prompt file of your own (default: the bundled one)
    segmentation_queries: Literal["marked", "keyword"] = "keyword"


class BoxSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    coordinates: Literal["pixels", "norm1000", "auto"] = "pixels"


def _build_chat(settings: ChatSettings, context):
    from pixelagent.llm import ChatClient
    from pixelagent_openai.backbone import ChatBackbone

    client = ChatClient(base_url=settings.base_url, model=settings.model, timeout=settings.timeout,
                        max_retries=settings.max_retries, max_response_bytes=settings.max_response_bytes)
    return ChatBackbone(client, temperature=settings.temperature, max_tokens=settings.max_tokens,
                        context_chars=settings.context_chars, protocol=settings.protocol,
                        segmentation_prompt=settings.segmentation_prompt,
                        segmentation_queries=settings.segmentation_queries)


def _build_boxes(settings: BoxSettings, context):
    from pixelagent_openai.boxes import BoxTagAlignment

    return BoxTagAlignment(settings.coordinates)


def _build_filled(settings: dict, context):
    from pixelagent_openai.boxes import FilledBoxDecoder

    return FilledBoxDecoder()


@hookimpl
def register_llm_backbones(register):
    register("openai-chat", _build_chat, aliases=("gpt4o",), settings=ChatSettings,
             description="any OpenAI-compatible vision chat endpoint (httpx)")


@hookimpl
def register_alignment_strategies(register):
    register("box-tags", _build_boxes, settings=BoxSettings,
             description="parse <box>(x1, y1), (x2, y2)</box> → box prompts")


@hookimpl
def register_mask_decoders(register):
    register("filled-box", _build_filled, description="box → filled box (the paper's general-MLLM baseline)")


@hookimpl
def register_presets(register):
    register({"name": "gpt4o-bbox", "description": "GPT-4o (or any OpenAI-compatible VLM) boxes as filled masks",
              "visual_encoder": "none", "llm": {"name": "openai-chat", "settings": {"model": "gpt-4o"}},
              "alignment": "box-tags", "mask_decoder": "filled-box", "device": "cpu"})
    register({"name": "gpt4o-bbox-sam", "description": "GPT-4o boxes refined by a SAM ViT-H box prompt",
              "visual_encoder": "none", "llm": {"name": "openai-chat", "settings": {"model": "gpt-4o"}},
              "alignment": "box-tags",
              "mask_decoder": {"name": "sam", "settings": {"size": "vit_h", "checkpoint": "sam_vit_h_4b8939.pth"}}})
