"""Settings of the LLaVA plugin's parts (light: no torch, so the plugin loads fast)."""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field


class LoraSettings(BaseModel):
    """LoRA on the LLM (DESIGN §2: r 8, alpha 16, dropout 0.05 on q_proj / v_proj). r=0 disables it."""

    model_config = ConfigDict(extra="forbid")

    r: int = Field(8, ge=0)
    alpha: int = 16
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    targets: list[str] = ["q_proj", "v_proj"]


class LlavaSettings(BaseModel):
    """The LLaVA-NeXT backbone.

    Attributes:
        pretrained: local directory or hub id of an HF LLaVA-NeXT checkpoint
            (``llava-hf/llava-v1.6-vicuna-7b-hf``); ignored when ``tiny`` unless it is a directory.
        tiny: build a small random-initialised model (CPU tests, the shipped miras-tiny).
        random_init: build ``pretrained``'s full architecture with random weights, from its
            built-in config (:mod:`pixelagent.nn.architectures`) or a local directory's
            ``config.json``, with the tiny tokenizer: nothing is downloaded. For GPU benchmarks
            and memory plans only; the answers are meaningless.
        tiny_config: LlamaConfig overrides for the tiny model (hidden_size, num_hidden_layers, ...).
        max_new_tokens: generation stops there if no ``</s>`` came first.
        context_window: the most positions (visual tokens, prompt and answer together) the
            model is given; ``None`` means the checkpoint's ``max_position_embeddings`` (4,096
            for LLaVA-v1.6-vicuna). Set it lower for a model trained on shorter dialogues than
            its positions allow (the shipped miras-tiny: 448, its longest training dialogue
            being 422): past what it saw in training a model's answers degenerate. When the
            dialogue outgrows it, the preset's ``limits.context_policy`` applies.
        lora: LoRA settings, applied at build so trained checkpoints load into the same shape.
        merge_lora: built for inference (``Agent``), fold the LoRA weights into the base weights
            as they load (W + alpha/r · B A) instead of running the adapter every token; training
            builds keep the adapter. The greedy answers are the same.
        batch_sessions: turns of different sessions running at the same time (from several
            threads, or ``pixelagent serve``) share their decoding steps in one batch
            (:mod:`pixelagent_llava.batching`); each answer is the one it would be alone. Off
            (and always with a static cache), such turns take the model one at a time.
        batch_window_ms: how long the first of such turns waits for the others (milliseconds).
        batch_prefill_tokens: the most positions one batched prefill computes (rows × the
            longest new part): turns beyond it are prefilled in a later pass, so eight long
            prompts arriving together do not need eight prompts' activations at once.
        sync_every: read the chosen tokens back to the host every k tokens (None: 8 on CUDA,
            where each read stalls the device, 1 on the CPU, where it costs nothing; always 1 with
            a static cache, which cannot be cut back after tokens chosen past ``</s>``).
        kv_cache: ``dynamic`` (grows with the dialogue; turns can batch across sessions) or
            ``static`` (preallocated to ``context_window``, fixed shapes for ``compile``).
        compile: ``torch.compile`` the language model for decode steps (CUDA; first turns
            are slow while it compiles).
        lean_decode: run decode steps as plain tensor calls on the model's weights instead of
            transformers' ``LlamaModel.forward`` (:mod:`pixelagent_llava.lean_step`): the same
            arithmetic, bit-identical states, about half the time of a step on the CPU. Used for
            a plain Llama with SDPA attention and a dynamic cache; otherwise, or off, the
            transformers forward runs.
        train_full: train every weight of the language model and the projector as well (by
            default only LoRA, ``lm_head`` and the token embeddings train). For tiny models
            trained from scratch, whose random weights LoRA alone cannot make useful.
        seed: random-initialisation seed for the tiny model and the new token embeddings.
    """

    model_config = ConfigDict(extra="forbid")

    pretrained: Optional[str] = "llava-hf/llava-v1.6-vicuna-7b-hf"
    tiny: bool = False
    random_init: bool = False
    tiny_config: dict[str, Any] = {}
    max_new_tokens: int = Field(256, ge=1)
    context_window: Optional[int] = Field(None, ge=16)
    lora: LoraSettings = LoraSettings()
    merge_lora: bool = True
    batch_sessions: bool = True
    batch_window_ms: float = Field(2.0, ge=0)
    batch_prefill_tokens: int = Field(8192, ge=1)
    sync_every: Optional[int] = Field(None, ge=1)
    kv_cache: Literal["dynamic", "static"] = "dynamic"
    compile: bool = False
    lean_decode: bool = True
    train_full: bool = False
    seed: int = 0


class ClipEncoderSettings(BaseModel):
    """Settings of the ``clip`` visual encoder.

    Attributes:
        pretrained: local checkpoint directory or hub id. With ``tiny`` it is used only if it
            is a local directory (a tiny checkpoint saved with ``save_pretrained``).
        tiny: a random-init tiny CLIP (64 px, 64 tokens of 64-d) for CPU tests.
        random_init: ``pretrained``'s full architecture with random weights (no download;
            see :mod:`pixelagent.nn.architectures`), for benchmarks and memory plans.
        image_size: input side in pixels; must match the checkpoint (no position-embedding
            interpolation). Left unset with ``tiny``, the tiny model's 64 px is used.
        train_backbone: train the tower too (frozen by default, as in LISA). For tiny models
            trained from scratch; the frozen-feature cache then skips this part.
        seed: seed of the tiny random init.
    """

    model_config = ConfigDict(extra="forbid")

    pretrained: Optional[str] = "openai/clip-vit-large-patch14-336"
    tiny: bool = False
    random_init: bool = False
    image_size: int = Field(336, gt=0)
    train_backbone: bool = False
    seed: int = 0
