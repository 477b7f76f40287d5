"""The LLaVA-v1 LLM backbone: the original LLaVA repository's checkpoint layout, which LISA's
releases (``xinlai/LISA-7B-v1``, ``-explanatory``, ``xinlai/LISA-13B-llama2-v1``, ...) use.

A LLaVA-v1 folder (``LlavaLlamaForCausalLM`` / ``LISAForCausalLM`` saved by transformers 4.31)
holds:

- ``config.json`` with ``model_type: "llava"``: LLaMA's fields (``hidden_size``,
  ``num_hidden_layers``, ``rms_norm_eps``, ``vocab_size``, ...) plus LLaVA's ``mm_hidden_size``
  (the CLIP width, 1024), ``mm_vision_tower`` (the CLIP it was trained with, not stored in the
  folder), ``mm_vision_select_layer: -2``, ``mm_vision_select_feature: "patch"`` (CLS dropped)
  and ``mm_use_im_start_end`` (``<im_start>`` / ``<im_end>`` around the visual tokens);
- weights named as ``LlamaForCausalLM``'s (``model.embed_tokens.weight``,
  ``model.layers.{i}.self_attn.q_proj.weight``, ..., ``model.norm.weight``, ``lm_head.weight``),
  plus the projector ``model.mm_projector.{weight,bias}``: one ``Linear(mm_hidden_size,
  hidden_size)`` (LISA's ``llava_arch.py`` builds it so whatever ``mm_projector_type`` says;
  LLaVA-1.5-style ``mlp2x_gelu`` folders, ``model.mm_projector.{0,2}.*``, load too). Other keys
  (LISA's ``model.visual_model.*`` and ``model.text_hidden_fcs.*``) belong to other parts and
  are left alone here;
- the tokenizer (LISA: a SentencePiece ``tokenizer.model`` with ``added_tokens.json``).

The LLaMA weights load through ``transformers.LlamaForCausalLM.from_pretrained`` (so sharded
``.bin`` / safetensors folders, bf16, and 8-bit / 4-bit ``bitsandbytes`` quantization all work
as transformers does them); the projector is read from the shard that holds it. The result is
handed to :class:`~pixelagent_llava.backbone.LlavaBackbone` in the shape it reads (a
language model, a projector, ``lm_head``), so decoding, KV-cache reuse, training and LoRA are
that backbone's, with :class:`~pixelagent_llava.template.LlavaV1Template` as the prompt format.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from pixelagent.errors import ConfigError, MissingDependencyError, WeightsNotFoundError
from pixelagent.nn.device import building_on, seeded_rng, torch_device, torch_dtype
from pixelagent_llava.backbone import LlavaBackbone
from pixelagent_llava.checkpoints import cached_files, quiet_transformers, read_config, require_keys, resolve_folder
from pixelagent_llava.settings import LlavaSettings
from pixelagent_llava.settings_v1 import LlavaV1Settings
from pixelagent_llava.template import LlavaV1Template
from pixelagent_llava.tokenizer import load_checkpoint_tokenizer

SETTING = "llm.settings.pretrained"
PROJECTOR_PREFIX = "model.mm_projector."
#: LLaMA fields of a LLaVA-v1 config.json that LlamaConfig takes.
LLAMA_KEYS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "hidden_act", "max_position_embeddings", "initializer_range", "rms_norm_eps",
              "rope_scaling", "rope_theta", "attention_bias", "mlp_bias", "pretraining_tp", "tie_word_embeddings",
              "bos_token_id", "eos_token_id", "pad_token_id")


class LlavaV1(nn.Module):
    """A LLaVA-v1 model in the shape :class:`LlavaBackbone` reads a LLaVA-NeXT one.

    State-dict keys: ``model.language_model.*`` (a ``LlamaModel``), ``model.multi_modal_projector.*``
    (LLaVA-v1's ``mm_projector``), ``lm_head.weight``.
    """

    def __init__(self, language_model: nn.Module, lm_head: nn.Linear, projector: nn.Module,
                 text_config: Any, vision_dim: int) -> None:
        super().__init__()
        self.model = nn.Module()
        self.model.language_model = language_model
        self.model.multi_modal_projector = projector
        self.lm_head = lm_head
        self.config = SimpleNamespace(text_config=text_config, vision_config=SimpleNamespace(hidden_size=vision_dim))

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.language_model.get_input_embeddings()


class LlavaV1Backbone(LlavaBackbone):
    """:class:`LlavaBackbone` over a :class:`LlavaV1` model, with the ``llava_v1`` template."""

    def __init__(self, llava: LlavaV1, tokenizer, settings: LlavaV1Settings, image_markers: bool = True) -> None:
        super().__init__(llava, tokenizer, backbone_settings(settings))
        self.v1_settings = settings
        self.template = LlavaV1Template(tokenizer, image_markers=image_markers)
        #: where the weights came from (a local folder), for the parts that share the checkpoint
        self.source: Path | None = None

    def project_visual(self, visual: torch.Tensor) -> torch.Tensor:
        """Visual features (..., N, C_vis) → LLM input embeddings (..., N, d) via ``mm_projector``."""
        projector = self.llava.model.multi_modal_projector
        return projector(visual.to(next(projector.parameters()).dtype))

    def save_adapter(self, directory: str, state: dict[str, torch.Tensor] | None = None) -> None:
        """As :meth:`LlavaBackbone.save_adapter`, without peft's notes on the LLaVA-v1 config it
        reads back (its ``model_type`` is "llava", the adapter's base a LLaMA)."""
        with quiet_transformers():
            super().save_adapter(directory, state)


def backbone_settings(settings: LlavaV1Settings) -> LlavaSettings:
    """The :class:`LlavaSettings` :class:`LlavaBackbone` reads: ours where both have the field
    (``max_new_tokens``, ``context_window``, ``lora``, ...), its defaults for the rest."""
    shared = {k: getattr(settings, k) for k in type(settings).model_fields if k in LlavaSettings.model_fields}
    return LlavaSettings(**shared)


# -- building -----------------------------------------------------------------------------------
def build_llava_v1(settings: LlavaV1Settings, context: Any) -> LlavaV1Backbone:
    """The registry builder: the projector's input width must be the visual encoder's ``out_dim``."""
    encoder = context.parts.get("visual_encoder")
    vision_dim = getattr(encoder, "out_dim", None)
    if vision_dim is None:
        raise ConfigError("the llava-v1 backbone needs a visual encoder with an out_dim "
                          f"(got {type(encoder).__name__}); use clip-v1 or clip")
    folded = None
    if getattr(context, "inference", False) and settings.merge_lora and settings.lora.r > 0:
        # built without the adapter; the inherited convert_state_dict folds saved LoRA weights in
        folded, settings = settings.lora, settings.model_copy(update={"lora": settings.lora.model_copy(update={"r": 0})})
    backbone = build_backbone_v1(settings, context.device, context.dtype, vision_dim, getattr(context, "shared", None))
    backbone.folded_lora = folded
    return backbone


def build_backbone_v1(settings: LlavaV1Settings, device: str, dtype: str, vision_dim: int,
                      shared: dict[str, Any] | None = None) -> LlavaV1Backbone:
    """Load (or, ``load_weights: false``, build randomly) a LLaVA-v1 checkpoint as a backbone."""
    _check_quantize(settings, device)
    folder = resolve_folder(settings.pretrained, SETTING, "LLaVA-v1 checkpoint")
    config = read_config(folder)
    text_config = llama_config(config, folder)
    mm_hidden = int(config.get("mm_hidden_size", vision_dim))
    if mm_hidden != vision_dim:
        raise ConfigError(f"the visual encoder gives {vision_dim}-d features but {folder}'s projector expects "
                          f"{mm_hidden}-d (mm_hidden_size); pick the CLIP it names ({config.get('mm_vision_tower')})")
    tokenizer = load_checkpoint_tokenizer(str(folder), SETTING)
    with seeded_rng(settings.seed):
        if settings.load_weights:
            causal_lm = _load_llama(folder, text_config, settings, device, dtype)
            projector = _projector(config, text_config.hidden_size, mm_hidden)
            _load_projector(projector, cached_files(folder, shared).tensors(PROJECTOR_PREFIX), folder)
        else:
            with building_on(device, dtype):
                causal_lm = _random_llama(text_config)
                projector = _projector(config, text_config.hidden_size, mm_hidden)
        if len(tokenizer) > causal_lm.config.vocab_size:  # [OBJ] and <image> are new to a LISA release
            with quiet_transformers():
                causal_lm.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    llava = LlavaV1(causal_lm.model, causal_lm.lm_head, projector, causal_lm.config, vision_dim)
    backbone = LlavaV1Backbone(llava, tokenizer, settings, image_markers=bool(config.get("mm_use_im_start_end")))
    backbone.source = folder
    with seeded_rng(settings.seed + 1):  # LoRA A is random: two builds must still agree
        apply_lora(backbone, settings)
    set_trainable(backbone, settings.train_full)
    if settings.quantize:  # bitsandbytes placed the LLM; a quantized model refuses .to(dtype)
        projector.to(device=torch_device(device), dtype=torch_dtype(dtype))
        return backbone.eval()
    return backbone.to(device=torch_device(device), dtype=torch_dtype(dtype)).eval()


def apply_lora(backbone: LlavaV1Backbone, settings: LlavaV1Settings) -> None:
    """peft LoRA on the language model's ``lora.targets`` (r=0: none). The saved adapter names
    the checkpoint it sits on, as ``llava-next``'s does."""
    if settings.lora.r == 0:
        return
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=settings.lora.r, lora_alpha=settings.lora.alpha, lora_dropout=settings.lora.dropout,
                        target_modules=settings.lora.targets, bias="none")
    with quiet_transformers():
        backbone.llava.model.language_model = get_peft_model(backbone.language_model, config)
    saved = backbone.language_model.peft_config["default"]
    saved.base_model_name_or_path = settings.pretrained if settings.load_weights else None
    saved.task_type = "FEATURE_EXTRACTION"


def set_trainable(backbone: LlavaV1Backbone, train_full: bool = False) -> None:
    """DESIGN §2: LoRA, ``lm_head`` and ``embed_tokens`` train; the rest of the LLM and the
    projector do not, unless ``train_full``. Quantized weights never train."""
    for name, param in backbone.named_parameters():
        param.requires_grad_((train_full and param.is_floating_point()) or "lora_" in name)
    backbone.llava.lm_head.requires_grad_(True)
    backbone.llava.get_input_embeddings().requires_grad_(True)


def llama_config(config: dict[str, Any], folder: Path | str = "the checkpoint"):
    """A ``LlamaConfig`` from a LLaVA-v1 ``config.json`` (its LLaMA fields; LLaVA's are dropped)."""
    from transformers import LlamaConfig

    missing = [k for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size") if k not in config]
    if missing:
        raise ConfigError(f"{folder}'s config.json lacks {', '.join(missing)}: not a LLaVA-v1 / LISA checkpoint")
    fields = {k: config[k] for k in LLAMA_KEYS if k in config and config[k] is not None}
    text_config = LlamaConfig(**fields)
    text_config.use_cache = True  # LISA saved use_cache: false (training); decoding wants the cache
    return text_config


def _random_llama(text_config) -> nn.Module:
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM(text_config)


def _load_llama(folder: Path, text_config, settings: LlavaV1Settings, device: str, dtype: str) -> nn.Module:
    """``LlamaForCausalLM`` with the checkpoint's LLaMA weights (every one of them, or an error)."""
    from transformers import LlamaForCausalLM

    kwargs: dict[str, Any] = {"config": text_config, "dtype": torch_dtype(dtype), "output_loading_info": True}
    if str(device).startswith("cuda"):  # straight onto the GPU: no 14 GB copy in host memory first
        kwargs["device_map"] = {"": str(device)}
    if settings.quantize:
        kwargs["quantization_config"] = bnb_config(settings.quantize, dtype)
    try:
        with quiet_transformers():  # the other parts' tensors (SAM, [SEG] projection) are "unexpected" here
            model, info = LlamaForCausalLM.from_pretrained(str(folder), **kwargs)
    except (OSError, ValueError) as exc:
        raise WeightsNotFoundError(f"cannot load the LLaMA weights of {folder} ({type(exc).__name__}: "
                                   f"{str(exc).splitlines()[0] if str(exc) else ''}); re-download the checkpoint "
                                   f"or point {SETTING} at a complete LLaVA-v1 folder") from None
    missing = [k for k in info.get("missing_keys") or () if "rotary_emb" not in k]
    if missing:
        raise ConfigError(f"{folder} lacks {len(missing)} LLaMA weights (e.g. {', '.join(sorted(missing)[:3])}): "
                          "is it a LLaVA-v1 / LISA checkpoint?")
    return model


def bnb_config(quantize: str, dtype: str):
    """transformers' ``BitsAndBytesConfig`` for LISA's 8-bit / 4-bit loading."""
    from transformers import BitsAndBytesConfig

    if quantize == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    compute = torch.float16 if dtype == "float16" else torch.bfloat16
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=compute, bnb_4bit_use_double_quant=True,
                              bnb_4bit_quant_type="nf4")


def _check_quantize(settings: LlavaV1Settings, device: str) -> None:
    if not settings.quantize:
        return
    from importlib.util import find_spec

    if find_spec("bitsandbytes") is None:
        raise MissingDependencyError(f"llm.settings.quantize: {settings.quantize} needs the bitsandbytes package: "
                                     "pip install bitsandbytes (and a CUDA GPU); or leave quantize unset for bf16")
    if not str(device).startswith("cuda"):
        raise ConfigError(f"llm.settings.quantize: {settings.quantize} runs on a CUDA GPU only (device is {device}); "
                          "leave quantize unset on this machine")
    if not settings.load_weights:
        raise ConfigError("llm.settings.quantize quantizes the checkpoint's weights as they load, but "
                          "load_weights is false; quantize a model loaded from its checkpoint")


def _projector(config: dict[str, Any], hidden: int, mm_hidden: int) -> nn.Module:
    """LLaVA-v1's projector: one Linear (LISA), or ``mlp{N}x_gelu`` (LLaVA-1.5-style folders)."""
    kind = config.get("mm_projector_type") or "linear"
    if kind == "linear":
        return nn.Linear(mm_hidden, hidden)
    found = re.fullmatch(r"mlp(\d+)x_gelu", kind)
    if not found:
        raise ConfigError(f"unsupported mm_projector_type {kind!r}; llava-v1 reads linear and mlpNx_gelu")
    layers: list[nn.Module] = [nn.Linear(mm_hidden, hidden)]
    for _ in range(int(found.group(1)) - 1):
        layers += [nn.GELU(), nn.Linear(hidden, hidden)]
    return nn.Sequential(*layers)


def _load_projector(projector: nn.Module, state: dict[str, torch.Tensor], folder: Path) -> None:
    expected = projector.state_dict()
    require_keys(state, expected, folder, f"multimodal projector ({PROJECTOR_PREFIX}*)")
    for key, value in expected.items():
        if tuple(state[key].shape) != tuple(value.shape):
            raise ConfigError(f"{folder}: {PROJECTOR_PREFIX}{key} has shape {tuple(state[key].shape)}, the config "
                              f"says {tuple(value.shape)}; is config.json from the same checkpoint?")
    projector.load_state_dict({k: state[k].float() for k in expected})
