"""Settings of the LLaVA-v1 parts, ``llava-v1`` and ``clip-v1`` (light: pydantic only, so the
plugin loads without torch)."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from pixelagent_llava.settings import LoraSettings


class LlavaV1Settings(BaseModel):
    """The ``llava-v1`` backbone.

    Attributes:
        pretrained: local folder or hub id of a LLaVA-v1-layout checkpoint, e.g. a LISA release
            (``xinlai/LISA-7B-v1``); a hub id is read from the Hugging Face cache when
            ``HF_HUB_OFFLINE`` is set (``hf download ID`` fills it).
        load_weights: False builds ``pretrained``'s architecture and tokenizer with random
            weights, for a model whose weights come from a pixelagent save (``Agent(dir)``,
            a training run's ``init_from``): the folder then needs only config.json and the
            tokenizer.
        quantize: ``"8bit"`` / ``"4bit"`` load the LLaMA weights quantized with bitsandbytes
            (LISA's ``--load_in_8bit`` / ``--load_in_4bit``: 4-bit is NF4 with double
            quantization); needs a CUDA device and the ``bitsandbytes`` package.
        max_new_tokens: generation stops there if no ``</s>`` came first (LISA's chat: 512).
        context_window: most positions per turn; ``None``: the config's
            ``max_position_embeddings`` (2,048 for LISA-7B-v1, 4,096 for the llama2 13B).
        lora: LoRA applied at build (r=0: none), so trained adapters load into the same shape.
        merge_lora: built for inference (``Agent``), fold saved LoRA weights into the base
            weights as they load instead of running the adapter every token (as ``llava-next``).
        train_full: train every LLM weight and the projector too.
        seed: seed of the random parts (new token rows, LoRA A, ``load_weights: false``).
    """

    model_config = ConfigDict(extra="forbid")

    pretrained: str = "xinlai/LISA-7B-v1"
    load_weights: bool = True
    quantize: Optional[Literal["8bit", "4bit"]] = None
    max_new_tokens: int = Field(512, ge=1)
    context_window: Optional[int] = Field(None, ge=16)
    lora: LoraSettings = LoraSettings()
    merge_lora: bool = True
    train_full: bool = False
    seed: int = 0


class ClipV1Settings(BaseModel):
    """The ``clip-v1`` visual encoder.

    Attributes:
        release: a LLaVA-v1 checkpoint (a LISA release: folder or hub id) whose config.json names
            the tower, the layer and the features; the settings below override it.
        pretrained: the CLIP tower (folder or hub id); default: the release's ``mm_vision_tower``,
            else ``openai/clip-vit-large-patch14``.
        load_weights: False builds ``pretrained``'s architecture (its config.json, or the
            built-in one of a known hub id) with random weights, for a model whose weights come
            from a pixelagent save.
        select_layer: the hidden layer read (default: the release's, else -2).
        select_feature: ``patch`` (CLS dropped) or ``cls_patch`` (default: the release's, else patch).
        crop: ``center`` (LISA / LLaVA-v1's CLIPImageProcessor) or ``squash``.
        train_backbone: train the tower too (frozen by default, as in LISA).
        seed: seed of the random weights when ``load_weights`` is false.
    """

    model_config = ConfigDict(extra="forbid")

    release: Optional[str] = None
    pretrained: Optional[str] = None
    load_weights: bool = True
    select_layer: Optional[int] = None
    select_feature: Optional[Literal["patch", "cls_patch"]] = None
    crop: Literal["center", "squash"] = "center"
    train_backbone: bool = False
    seed: int = 0
