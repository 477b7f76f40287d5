"""The LLaVA-NeXT LLM backbone: dialogue + visual tokens → reply text and hidden states.

We use the language model and the multimodal projector of an HF ``LlavaNextForConditionalGeneration``
and feed it visual tokens made by the preset's visual encoder: one 336-px view (576 tokens) as
LISA and the official MIRAS code do, not LLaVA-NeXT's any-resolution tiling. The checkpoint's
own vision tower is therefore dropped after loading.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import (DynamicCache, LlamaConfig, LlamaModel, LlavaNextConfig,
                          LlavaNextForConditionalGeneration)
from transformers.utils import logging as hf_logging

from pixelagent.errors import ConfigError, InputError, WeightsNotFoundError
from pixelagent.markup import OBJ_TOKEN, SEG_TOKEN
from pixelagent.nn.device import building_on, seeded_rng, torch_device, torch_dtype
from pixelagent.nn.tokens import Expanded, align_to_tokens, expand_visual
from pixelagent.parts import Generation, LLMBackbone, LLMRequest
from pixelagent_llava.batching import DecodeBatcher, DecodeJob
from pixelagent_llava.lean_step import LeanDecoder, lean_decoder
from pixelagent_llava.settings import LlavaSettings
from pixelagent_llava.template import Exchange, VicunaTemplate
from pixelagent_llava.tokenizer import build_tiny_tokenizer, load_tokenizer

SETTING = "llm.settings.pretrained"
# transformers 5.x renamed LlamaModel.forward's `past_key_values` to `cache` (the old name warns).
_CACHE_ARG = "cache" if "cache" in inspect.signature(LlamaModel.forward).parameters else "past_key_values"
TINY_TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=4, max_position_embeddings=4096)


@dataclass
class TrainOutput:
    """What ``forward_train`` returns.

    Attributes:
        loss: mean next-token cross-entropy over supervised (answer) tokens; 0 if there are none.
        hidden: (B, L, d) last-layer states aligned with the tokens they predict
            (see :mod:`pixelagent.nn.tokens`).
        ids: (B, L) expanded token ids (visual positions -1, padding = pad id).
        lengths: the unpadded length of each expanded sequence.
    """

    loss: torch.Tensor
    hidden: torch.Tensor
    ids: torch.Tensor
    lengths: list[int]


class LlavaBackbone(LLMBackbone, nn.Module):
    """LLaVA-NeXT with ``[SEG]`` / ``[OBJ]``, LoRA, KV-cache reuse across turns and greedy decoding."""

    def __init__(self, llava: LlavaNextForConditionalGeneration, tokenizer, settings: LlavaSettings) -> None:
        nn.Module.__init__(self)
        self.llava = llava
        self.tokenizer = tokenizer
        self.settings = settings
        self.template = VicunaTemplate(tokenizer)
        self.seg_id = tokenizer.convert_tokens_to_ids(SEG_TOKEN)
        self.obj_id = tokenizer.convert_tokens_to_ids(OBJ_TOKEN)
        self.hidden_size = llava.config.text_config.hidden_size
        self.vision_dim = llava.config.vision_config.hidden_size
        positions = llava.config.text_config.max_position_embeddings
        if settings.context_window is not None and settings.context_window > positions:
            raise ConfigError(f"llm.settings.context_window is {settings.context_window} but the model has only "
                              f"{positions} positions; use at most {positions}")
        #: positions one turn may use: visual tokens + dialogue prompt + the answer
        self.context_window = settings.context_window or positions
        if self.context_window <= settings.max_new_tokens:
            raise ConfigError(f"llm.settings.max_new_tokens ({settings.max_new_tokens}) leaves no room for a "
                              f"prompt in the {self.context_window}-position context window; lower it")

    # -- pieces -------------------------------------------------------------------------------
    @property
    def language_model(self) -> nn.Module:
        return self.llava.model.language_model

    def project_visual(self, visual: torch.Tensor) -> torch.Tensor:
        """Visual features (..., N, C_vis) → LLM input embeddings (..., N, d) via LLaVA's projector."""
        projector = self.llava.model.multi_modal_projector
        return projector(visual.to(projector.linear_1.weight.dtype))

    def _embed(self, ids: list[int] | torch.Tensor) -> torch.Tensor:
        ids = torch.as_tensor(ids, device=self.llava.lm_head.weight.device)
        return self.llava.get_input_embeddings()(ids)

    def _expand(self, ids: list[int], labels: list[int], visual: torch.Tensor | None) -> Expanded:
        # ids and labels stay on the CPU: positions are bookkeeping, and reading them there costs
        # no device sync (and works on the meta device, where plan-memory runs the model)
        ids_t = torch.tensor(ids)
        labels_t = torch.tensor(labels)
        embeds = self._embed(ids_t)
        if visual is None:
            return Expanded(embeds, ids_t, labels_t)
        return expand_visual(ids_t, labels_t, embeds, self.project_visual(visual), self.template.image_id)

    # -- inference ----------------------------------------------------------------------------
    @torch.no_grad()
    def respond(self, request: LLMRequest) -> Generation:
        """Greedy decoding of the next answer, reusing the dialogue's KV cache from earlier turns.

        The prompt holds the image, as many of the latest exchanges as fit the context window
        with room for ``max_new_tokens``, and the question (``request.context_policy`` decides
        what happens when earlier exchanges do not fit).
        """
        state = request.state
        # answers[i]: the exact ids we generated for history turn i (None: only its text is known)
        answers: list[list[int] | None] = state.setdefault("answers", [])
        if len(answers) != len(request.history):  # a history we did not produce: use its text
            answers[:] = [None] * len(request.history)
        exchanges = [Exchange(t.question, t.reply.raw_text, None if a is None else tuple(a))
                     for t, a in zip(request.history, answers)]
        visual_tokens = 1 if request.visual is None else int(request.visual.shape[-2])
        dropped = self._exchanges_to_drop(exchanges, request.question, visual_tokens, request.context_policy)
        ids, _ = self.template.encode([*exchanges[dropped:], Exchange(request.question)])
        cache, fed = state.get("cache"), state.get("fed", [])
        if cache is None or ids[:len(fed)] != fed:
            cache, fed = self._new_cache(), []
        new = ids[len(fed):]
        visual = request.visual if self.template.image_id in new else None
        try:
            generated, hiddens, cache = self._generate(self._expand(new, [-100] * len(new), visual).embeds, cache)
        except BaseException:
            # the cache may hold part of this failed turn: the next turn starts it afresh
            state.pop("cache", None)
            state.pop("fed", None)
            raise
        ended = bool(generated) and generated[-1] == self.template.eos_id
        # the last emitted token was never fed back, so the cache holds all but it
        state.update(cache=cache, fed=ids + generated[:-1])
        answers.append(generated if ended else generated + [self.template.eos_id])
        reply_ids = generated[:-1] if ended else generated
        notes = [] if not dropped else [
            f"left the {_count(dropped, 'oldest exchange')} out of the prompt: the dialogue outgrew the "
            f"model's {self.context_window}-token context window (limits.context_policy: drop-oldest)"]
        return Generation(
            text=self.tokenizer.decode(reply_ids, skip_special_tokens=False),
            hidden_states=torch.stack(hiddens[:len(reply_ids)]) if reply_ids else torch.zeros(0, self.hidden_size),
            token_ids=torch.tensor(reply_ids, dtype=torch.long),
            notes=notes,
        )

    def drop_cache(self, state: dict[str, Any]) -> None:
        """Drop the dialogue's key/value cache (the largest thing a session holds); keep the exact
        answer ids, which re-tokenising the answers' text need not give back."""
        state.pop("cache", None)
        state.pop("fed", None)

    def _exchanges_to_drop(self, exchanges: list[Exchange], question: str, visual_tokens: int,
                           policy: str) -> int:
        """How many of the oldest ``exchanges`` to leave out so that the prompt fits the window.

        The prompt may use ``context_window - max_new_tokens`` positions; the image placeholder
        counts as ``visual_tokens``. Each exchange is tokenised once. Raises InputError when the
        question cannot fit even alone, or when something must be dropped under ``refuse``.
        """
        budget = self.context_window - self.settings.max_new_tokens - (visual_tokens - 1)
        template = self.template
        later = [len(template.prompt_ids(e.question, first=False)) + len(template.answer_ids(e)) for e in exchanges]
        question_later = len(template.prompt_ids(question, first=False))
        after = question_later + sum(later)  # positions of everything after the first kept exchange's prompt
        for dropped, exchange in enumerate(exchanges):
            after -= later[dropped]
            answer = len(template.answer_ids(exchange))
            if len(template.prompt_ids(exchange.question, first=True)) + answer + after <= budget:
                return dropped
            if policy == "refuse":  # it does not fit whole, and nothing may be left out
                break
        alone = len(template.prompt_ids(question, first=True))
        if alone > budget:
            raise InputError(
                f"the question is too long for the model: with the image ({visual_tokens} visual tokens) and room "
                f"for a {self.settings.max_new_tokens}-token answer, its {alone} prompt tokens exceed the "
                f"{self.context_window}-token context window (llm.settings.context_window); shorten it")
        if policy == "refuse" and exchanges:
            raise InputError(
                f"the dialogue no longer fits the model's {self.context_window}-token context window (room is kept "
                f"for a {self.settings.max_new_tokens}-token answer); call session.reset() or open a new session, "
                "or set limits.context_policy to drop-oldest")
        return len(exchanges)

    def _generate(self, embeds: torch.Tensor, cache: DynamicCache) -> tuple[list[int], list[torch.Tensor], DynamicCache]:
        """Feed ``embeds`` (T, d) after ``cache``, then greedily emit tokens until ``</s>``.

        Returns the emitted ids, for each the last-layer state that predicted it (d,), and the
        cache holding everything fed (every emitted token but the last). The prefill is this
        turn's own; the decoding is shared with the turns other threads run at the same time
        (:mod:`pixelagent_llava.batching`) unless ``batch_sessions`` is off.
        """
        # the prompt was fitted to leave max_new_tokens positions; never run past the window
        room = self.context_window - cache.get_seq_length() - embeds.shape[0] + 1
        budget = max(0, min(self.settings.max_new_tokens, room))
        if budget == 0:
            return [], [], cache
        job = DecodeJob(cache=cache, length=cache.get_seq_length(), embeds=embeds, budget=budget)
        shared = self.settings.batch_sessions and self.settings.kv_cache == "dynamic"
        job = (self._batcher if shared else self._solo).decode(job)
        return job.generated, job.hiddens, job.cache

    def _step(self, embeds: torch.Tensor, attention: torch.Tensor | None, positions: torch.Tensor | None,
              cache: DynamicCache, last: torch.Tensor | None = None) -> torch.Tensor:
        """One forward over ``embeds`` (B, T, d) after ``cache`` → each row's states (B, d) at
        position ``last`` (B,) of the T (None: the last). ``attention`` (B, past + T) masks pads;
        ``positions`` (B, T) are each row's own (both None for a batch without padding)."""
        if embeds.shape[1] == 1 and last is None:  # a decode step
            lean = self._lean_decoder()
            if lean is not None:
                return lean.step(embeds, attention, positions, cache)
        extra = {} if attention is None else {"attention_mask": attention, "position_ids": positions}
        model = self._compiled if embeds.shape[1] == 1 and self.settings.compile else self.language_model
        hidden = model(inputs_embeds=embeds, use_cache=True, **{_CACHE_ARG: cache}, **extra).last_hidden_state
        if last is None:
            return hidden[:, -1]
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]

    def _new_cache(self):
        """A session's key/value cache: growing (``dynamic``) or preallocated to the context window
        (``static``: fixed shapes, what ``torch.compile`` and CUDA graphs need)."""
        if self.settings.kv_cache == "static":
            from transformers import StaticCache

            return StaticCache(config=self.llava.config.text_config, max_cache_len=self.context_window)
        return DynamicCache()

    def _lean_decoder(self) -> LeanDecoder | None:
        """The lean decode step (:mod:`pixelagent_llava.lean_step`) when it applies: on by
        ``lean_decode``, with a dynamic cache and no ``compile``, in eval mode; rebuilt when the
        language model or its weights were replaced."""
        settings = self.settings
        if not settings.lean_decode or settings.compile or settings.kv_cache != "dynamic" or self.training:
            return None
        model = self.language_model
        first = next(model.parameters(), None)  # replaced by LoRA merging or an assigning load
        cached = self.__dict__.get("_lean")
        if cached is None or cached[0] is not model or cached[1] is not first:
            cached = self.__dict__["_lean"] = (model, first, lean_decoder(model))  # None: checked, not lean
        return cached[2]

    @property
    def _compiled(self):
        """The language model compiled for one-token decode steps (``compile: true``), on first use."""
        if self.__dict__.get("_compiled_model") is None:
            self.__dict__["_compiled_model"] = torch.compile(self.language_model, dynamic=False)
        return self.__dict__["_compiled_model"]

    @property
    def _batcher(self) -> DecodeBatcher:
        if self.__dict__.get("_shared_batcher") is None:
            self.__dict__["_shared_batcher"] = self._new_batcher(window_s=self.settings.batch_window_ms / 1000,
                                                                 in_flight=self.in_flight,
                                                                 max_prefill_tokens=self.settings.batch_prefill_tokens)
        return self.__dict__["_shared_batcher"]

    @property
    def _solo(self) -> DecodeBatcher:
        if self.__dict__.get("_solo_batcher") is None:
            self.__dict__["_solo_batcher"] = self._new_batcher(window_s=0.0, max_batch=1)
        return self.__dict__["_solo_batcher"]

    def _new_batcher(self, **options) -> DecodeBatcher:
        sync_every = self.settings.sync_every or (8 if self.llava.lm_head.weight.device.type == "cuda" else 1)
        if self.settings.kv_cache == "static":
            sync_every = 1  # a static cache cannot be cut back after an overshoot past </s>
        return DecodeBatcher(step=self._step, embed=lambda tokens: self._embed(tokens).unsqueeze(1),
                             logits=self.llava.lm_head, eos=self.template.eos_id, new_cache=DynamicCache,
                             sync_every=sync_every, **options)

    # -- training -----------------------------------------------------------------------------
    def encode_dialogue(self, turns: Sequence[tuple[str, str]]) -> tuple[list[int], list[int]]:
        """Token ids and labels of ``(question, answer)`` turns (answers with their markup)."""
        return self.template.encode([Exchange(q, a) for q, a in turns])

    def forward_train(self, ids: list[list[int]], labels: list[list[int]],
                      visual: torch.Tensor | None) -> TrainOutput:
        """Teacher-forced pass over a batch; ``visual`` (B, N, C_vis) or None for text-only batches."""
        rows = [self._expand(i, l, None if visual is None else visual[b])
                for b, (i, l) in enumerate(zip(ids, labels))]
        embeds, tokens, targets, mask = _pad(rows, self.tokenizer.pad_token_id)
        # No padding: no mask (what transformers would decide itself from an all-ones mask, but
        # decided here on the CPU, without reading the device tensor)
        attention = None if bool(mask.all()) else mask.to(embeds.device)
        hidden = self.language_model(inputs_embeds=embeds, attention_mask=attention).last_hidden_state
        logits = self.llava.lm_head(hidden[:, :-1]).float()
        shifted = targets[:, 1:]
        supervised = bool((shifted != -100).any())  # on the CPU
        loss = (nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                            shifted.reshape(-1).to(logits.device), ignore_index=-100)
                if supervised else logits.sum() * 0)
        return TrainOutput(loss=loss, hidden=align_to_tokens(hidden), ids=tokens,
                           lengths=[len(r.ids) for r in rows])

    def enable_gradient_checkpointing(self) -> None:
        """Recompute each decoder layer in the backward pass instead of storing its activations
        (transformers' gradient checkpointing, non-reentrant, so frozen inputs need no grad)."""
        model = self.language_model
        with _library_deprecations_silenced():
            if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x's name
                model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    # -- LoRA ---------------------------------------------------------------------------------
    def merge_lora(self) -> None:
        """Fold the LoRA weights into the base weights and drop the adapters (in place)."""
        from peft import PeftModel

        if isinstance(self.language_model, PeftModel):
            self.llava.model.language_model = self.language_model.merge_and_unload()
            self.settings = self.settings.model_copy(update={"lora": self.settings.lora.model_copy(update={"r": 0})})

    folded_lora = None  # the LoRA settings folded in at load time (an inference build), or None
    in_flight = None  # the agent's turns under way (pixelagent.batching.InFlight), set by the builder

    def convert_state_dict(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Saved weights (this part's keys) in this build's form: with ``folded_lora``, peft's
        ``base_model.model.…base_layer.weight`` + ``lora_A`` / ``lora_B`` become plain weights
        ``W + (alpha / r) · B @ A`` (computed in float32). A trainable-only save holds no base
        weight: the one already loaded from the checkpoint is used."""
        if self.folded_lora is None:
            return state
        scale = self.folded_lora.alpha / self.folded_lora.r
        wrapped = "llava.model.language_model.base_model.model."
        plain = "llava.model.language_model."
        out, adapters = {}, {}
        for key, value in state.items():
            if not key.startswith(wrapped):
                out[key] = value
                continue
            rest = key[len(wrapped):]
            if ".lora_A." in rest or ".lora_B." in rest:
                module, _, tail = rest.partition(".lora_")
                adapters.setdefault(module, {})[tail[0]] = value
            else:
                out[plain + rest.replace(".base_layer.", ".")] = value
        own = self.state_dict()
        for module, pair in adapters.items():
            if set(pair) != {"A", "B"}:
                raise ConfigError(f"the saved LoRA of {module} lacks lora_{'A' if 'A' not in pair else 'B'}; "
                                  "re-save the model")
            target = f"{plain}{module}.weight"
            base = out.get(target, own[target])
            delta = (pair["B"].float() @ pair["A"].float()) * scale
            out[target] = (base.float() + delta.to(base.device)).to(base.dtype)
        return out

    def save_language_model(self, directory: str) -> None:
        """Write the language model without its adapter in the transformers layout (a
        ``LlamaModel``: ``config.json`` + ``model.safetensors``), the base that the saved
        ``adapter/`` loads onto with ``peft.PeftModel.from_pretrained``."""
        from pathlib import Path

        from safetensors.torch import save_file

        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        state = {}
        for name, tensor in self.language_model.state_dict().items():
            if "lora_" in name:
                continue
            name = name.removeprefix("base_model.model.").replace(".base_layer.", ".")
            state[name] = tensor.detach().contiguous().cpu()
        config = self.llava.config.text_config.to_dict()
        config["architectures"] = ["LlamaModel"]
        (folder / "config.json").write_text(json.dumps(config, indent=2))
        save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})

    def save_adapter(self, directory: str, state: dict[str, torch.Tensor] | None = None) -> None:
        """Write the LoRA adapter in peft's format (adapter_config.json + adapter_model.safetensors).

        ``state``: this backbone's full state dict when the caller gathered it (FSDP shards)."""
        from peft import PeftModel

        if isinstance(self.language_model, PeftModel):
            prefix = "llava.model.language_model."
            own = None if state is None else {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            self.language_model.save_pretrained(directory, **({} if own is None else {"state_dict": own}))


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _pad(rows: list[Expanded], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad expanded rows to (B, L, d) embeds (on their device), (B, L) ids, labels and
    attention mask (on the CPU, like the rows' ids)."""
    length = max(len(r.ids) for r in rows)
    embeds = rows[0].embeds.new_zeros(len(rows), length, rows[0].embeds.shape[-1])
    ids = rows[0].ids.new_full((len(rows), length), pad_id)
    labels = rows[0].labels.new_full((len(rows), length), -100)
    mask = rows[0].ids.new_zeros(len(rows), length)
    for b, row in enumerate(rows):
        n = len(row.ids)
        embeds[b, :n], ids[b, :n], labels[b, :n], mask[b, :n] = row.embeds, row.ids, row.labels, 1
    return embeds, ids, labels, mask


# -- building -----------------------------------------------------------------------------------
def build_backbone(settings: LlavaSettings, device: str, dtype: str, vision_dim: int) -> LlavaBackbone:
    """Load (or, tiny, create) the model, add the special tokens, apply LoRA, set the trainable split."""
    hf_logging.disable_progress_bar()
    with seeded_rng(settings.seed):
        if settings.random_init and not settings.tiny:
            # the checkpoint's vocabulary size is kept (the tiny tokenizer's ids fit in it), so
            # memory and speed are those of the real model
            tokenizer = build_tiny_tokenizer()
            with building_on(device, dtype):
                llava = _random_llava(settings.pretrained)
        else:
            if settings.tiny and not _is_local_dir(settings.pretrained):
                tokenizer = build_tiny_tokenizer()
                llava = _tiny_llava(settings, len(tokenizer), vision_dim, tokenizer)
            else:
                tokenizer = load_tokenizer(settings.pretrained, SETTING)
                llava = _load_llava(settings.pretrained, torch_dtype(dtype))
            with _library_deprecations_silenced():
                llava.resize_token_embeddings(len(tokenizer))
    _drop_vision_tower(llava)
    if llava.config.vision_config.hidden_size != vision_dim:
        raise ConfigError(
            f"the visual encoder gives {vision_dim}-d features but the LLaVA projector expects "
            f"{llava.config.vision_config.hidden_size}-d; pick a matching visual encoder")
    backbone = LlavaBackbone(llava, tokenizer, settings)
    with seeded_rng(settings.seed + 1):  # LoRA A is random: two builds must still agree
        _apply_lora(backbone, settings)
    _set_trainable(backbone, settings.train_full)
    # eval: inference is the default use (no LoRA dropout); training recipes call .train()
    return backbone.to(device=torch_device(device), dtype=torch_dtype(dtype)).eval()


@contextlib.contextmanager
def _library_deprecations_silenced():
    # transformers' resize and peft's wrapper call transformers' deprecated
    # is_gradient_checkpointing; a warning users can do nothing about
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        yield


def _is_local_dir(path: str | None) -> bool:
    import os

    return bool(path) and os.path.isdir(path)


def _tiny_llava(settings: LlavaSettings, vocab: int, vision_dim: int, tokenizer) -> LlavaNextForConditionalGeneration:
    text = LlamaConfig(vocab_size=vocab, **{**TINY_TEXT, **settings.tiny_config},
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id)
    vision = dict(model_type="clip_vision_model", hidden_size=vision_dim, intermediate_size=vision_dim * 2,
                  num_hidden_layers=1, num_attention_heads=2, image_size=16, patch_size=8)
    config = LlavaNextConfig(text_config=text, vision_config=vision, image_grid_pinpoints=[[16, 16]],
                             image_token_index=tokenizer.convert_tokens_to_ids("<image>"))
    return LlavaNextForConditionalGeneration(config)


def _random_llava(source: str | None) -> LlavaNextForConditionalGeneration:
    """``source``'s architecture with random weights (built where ``building_on`` says)."""
    from pixelagent.nn.architectures import LLAVA_NEXT, architecture

    config = architecture(LLAVA_NEXT, source, SETTING)
    text, vision = config.pop("text_config"), config.pop("vision_config")
    vision.pop("model_type", None)
    return LlavaNextForConditionalGeneration(LlavaNextConfig(
        text_config=LlamaConfig(**{k: v for k, v in text.items() if k != "model_type"}),
        vision_config=dict(model_type="clip_vision_model", **vision), **config))


def _load_llava(source: str | None, dtype: torch.dtype) -> LlavaNextForConditionalGeneration:
    if not source:
        raise WeightsNotFoundError(f"no LLaVA checkpoint given; set {SETTING} to a local directory "
                                   "or hub id such as llava-hf/llava-v1.6-vicuna-7b-hf")
    try:
        return LlavaNextForConditionalGeneration.from_pretrained(source, dtype=dtype)
    except (OSError, ValueError) as exc:
        raise WeightsNotFoundError(
            f"cannot load LLaVA-NeXT weights from {source!r} ({type(exc).__name__}); fetch the checkpoint "
            f"with `hf download {source}` and point {SETTING} at its local directory (or keep the id: "
            "the Hugging Face cache is read)") from None


def _drop_vision_tower(llava: LlavaNextForConditionalGeneration) -> None:
    # The preset's visual encoder makes the visual tokens; LLaVA's own tower would only cost memory.
    if getattr(llava.model, "vision_tower", None) is not None:
        llava.model.vision_tower = None


def _apply_lora(backbone: LlavaBackbone, settings: LlavaSettings) -> None:
    if settings.lora.r == 0:
        return
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=settings.lora.r, lora_alpha=settings.lora.alpha, lora_dropout=settings.lora.dropout,
                        target_modules=settings.lora.targets, bias="none")
    with _library_deprecations_silenced():
        backbone.llava.model.language_model = get_peft_model(backbone.language_model, config)
    # What adapter_config.json tells peft users: the adapter sits on the LLaVA checkpoint's
    # language model (a LlamaModel, so a feature-extraction model to peft); None for a tiny one
    saved = backbone.language_model.peft_config["default"]
    saved.base_model_name_or_path = None if settings.tiny or settings.random_init else settings.pretrained
    saved.task_type = "FEATURE_EXTRACTION"


def _set_trainable(backbone: LlavaBackbone, train_full: bool = False) -> None:
    """DESIGN §2: LoRA, lm_head and embed_tokens train; the rest of the LLM and the projector do
    not, unless ``train_full`` (then everything does)."""
    for name, param in backbone.named_parameters():
        param.requires_grad_(train_full or "lora_" in name)
    backbone.llava.lm_head.requires_grad_(True)
    backbone.llava.get_input_embeddings().requires_grad_(True)


def build_from_settings(settings: LlavaSettings, context: Any) -> LlavaBackbone:
    """The registry builder: the projector's input width comes from the preset's visual encoder."""
    encoder = context.parts["visual_encoder"]
    vision_dim = getattr(encoder, "out_dim", None)
    if vision_dim is None:
        raise ConfigError("the llava-next backbone needs a visual encoder with an out_dim "
                          f"(got {type(encoder).__name__}); use clip or miras-dual")
    folded = None
    if context.inference and settings.merge_lora and settings.lora.r > 0:
        # built without the adapter; convert_state_dict folds saved LoRA weights into the base
        folded, settings = settings.lora, settings.model_copy(update={"lora": settings.lora.model_copy(update={"r": 0})})
    backbone = build_backbone(settings, context.device, context.dtype, vision_dim)
    backbone.folded_lora = folded
    backbone.in_flight = context.in_flight
    return backbone
