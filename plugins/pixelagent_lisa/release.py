"""LISA's released checkpoints (``xinlai/LISA-7B-v1`` and kin) as pixelagent presets.

What a release is, from LISA's code (dvlab-research/LISA, the v1 code: ``model/LISA.py``,
``model/llava/model/llava_arch.py``, ``model/llava/model/multimodal_encoder/clip_encoder.py``,
``model/llava/conversation.py``, ``model/llava/mm_utils.py``, ``chat.py``, ``utils/utils.py``,
``merge_lora_weights_and_save_hf_model.py``) and the published folders:

- **Files.** ``config.json``, ``generation_config.json``, ``pytorch_model-00001-of-00002.bin`` and
  ``-00002-of-00002.bin`` (7B: 9.98 GB + 6.14 GB; the 13B v0 had three) with
  ``pytorch_model.bin.index.json``, and the LLaMA tokenizer: ``tokenizer.model``
  (SentencePiece), ``tokenizer_config.json``, ``special_tokens_map.json``, ``added_tokens.json``.
  Written by ``merge_lora_weights_and_save_hf_model.py``: the LoRA merged in
  (``merge_and_unload``), ``model.save_pretrained(state_dict=...)`` with every ``vision_tower``
  key left out, then ``tokenizer.save_pretrained``; transformers 4.31 (``requirements.txt``).
- **Model.** ``LISAForCausalLM`` (``model/LISA.py``) is LLaVA's ``LlavaLlamaForCausalLM`` whose
  ``model`` (``LisaModel``) also holds SAM and the projection. ``config.json``:
  ``model_type: "llava"``, the LLaMA fields (7B-v1: hidden 4096, 32 layers, 32 heads,
  intermediate 11008, ``max_position_embeddings`` 2048, ``rms_norm_eps`` 1e-6,
  ``vocab_size`` 32004; 13B-llama2-v1: hidden 5120, 40 layers, 4096 positions, 1e-5, 32003),
  ``mm_hidden_size: 1024``, ``mm_vision_tower: "openai/clip-vit-large-patch14"``,
  ``mm_vision_select_layer: -2``, ``mm_vision_select_feature: "patch"``,
  ``mm_use_im_start_end: true``, ``out_dim: 256``, ``train_mask_decoder: true``.
- **Keys.** ``model.embed_tokens.weight``, ``model.layers.{i}.*``, ``model.norm.weight`` and
  ``lm_head.weight`` (LLaMA, bf16); ``model.mm_projector.{weight,bias}``: a single
  ``nn.Linear(1024, hidden)`` (``llava_arch.py``; no GELU MLP); ``model.visual_model.*``: SAM ViT-H
  (``build_sam_vit_h``) with the official ``Sam`` key names under the prefix, its prompt encoder
  and mask decoder unchanged from segment-anything (LISA's fork only adds a ``text_embeds``
  argument that appends the prompt as one more sparse token); ``model.text_hidden_fcs.0.{0,2}.*``:
  ``ModuleList([Sequential(Linear(hidden, hidden), ReLU, Linear(hidden, 256), Dropout(0.0))])``.
  SAM and ``text_hidden_fcs`` are float32 in the files (the merge script rebuilds them with
  ``initialize_lisa_modules`` outside the bf16 load before saving; the shards' pickles hold
  ``FloatStorage`` beside ``BFloat16Storage``). The CLIP tower is not in the release: it is
  loaded from ``mm_vision_tower``.
- **Visual tokens.** CLIP ViT-L/14 at 224 px (``openai/clip-vit-large-patch14``), hidden layer -2,
  CLS dropped: 16x16 = 256 tokens of 1024-d, projected to the LLM width and put where the
  ``<image>`` placeholder (``IMAGE_TOKEN_INDEX = -200``) was (``prepare_inputs_labels_for_multimodal``).
  LISA's fixed "255" offset is those 256 positions minus the placeholder; pixelagent finds the
  ``[SEG]`` position in the expanded sequence instead (DESIGN §2). CLIP preprocessing is
  ``CLIPImageProcessor`` of the tower: shortest side → 224 (bicubic), centre crop, CLIP mean/std.
- **Tokens.** ``added_tokens.json``: 7B releases ``<im_patch>`` 32000, ``<im_start>`` 32001,
  ``<im_end>`` 32002, ``[SEG]`` 32003 (the LLaVA-Lightning tokenizer already had the first
  three); 13B-llama2 releases ``[SEG]`` 32000, ``<im_start>`` 32001, ``<im_end>`` 32002. So the
  ``[SEG]`` id is read from the tokenizer (``chat.py``: ``tokenizer("[SEG]",
  add_special_tokens=False).input_ids[0]``, LISA's ``seg_token_idx``), never assumed. The pad
  token is ``<unk>``. pixelagent adds ``[OBJ]`` and its ``<image>`` placeholder as new rows.
- **Prompt.** ``conv_templates["llava_v1"]`` (``chat.py``'s default for every release, the 13B
  llama2 ones included): ``"{system} USER: <im_start><image><im_end>\\n{question} ASSISTANT:"``
  with the vicuna system line, ``</s>`` after each answer; tokenized by ``tokenizer_image_token``
  (see :class:`~pixelagent_llava.template.LlavaV1Template` for the whitespace transformers 4.31
  stripped). Training questions end with "Please output segmentation mask." and answers are
  "It is [SEG].", "Sure, [SEG].", ... (``utils/utils.py``); no ``[OBJ]``.
- **Masks.** SAM input: longest side → 1024 (``ResizeLongestSide``), ``(x - mean) / std`` with
  SAM's pixel mean / std, zero-padded bottom-right to 1024x1024; the ``[SEG]`` state (the
  last-layer state at the position before ``[SEG]``, i.e. the one that predicted it) through
  ``text_hidden_fcs`` → one 256-d sparse prompt, no dense prompt (``no_mask_embed``),
  ``multimask_output=False``; ``postprocess_masks``: bilinear to 1024, crop the padding, bilinear
  to the original size, threshold at 0.
- **Generation.** ``chat.py``: greedy (``num_beams=1``), ``max_new_tokens=512``, bf16 by default;
  ``--load_in_8bit`` / ``--load_in_4bit`` load through bitsandbytes (4-bit: NF4, double
  quantization) with SAM kept out of the quantization (``llm_int8_skip_modules=["visual_model"]``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: The published v1 releases: preset name → hub id (each id is also an alias of its preset).
RELEASES: dict[str, str] = {
    "lisa-7b-v1": "xinlai/LISA-7B-v1",
    "lisa-7b-v1-explanatory": "xinlai/LISA-7B-v1-explanatory",
    "lisa-13b-llama2-v1": "xinlai/LISA-13B-llama2-v1",
    "lisa-13b-llama2-v1-explanatory": "xinlai/LISA-13B-llama2-v1-explanatory",
}
SAM_PREFIX = "model.visual_model."
FCS_PREFIX = "model.text_hidden_fcs.0."


def release_preset_data(source: str, name: str | None = None, description: str = "") -> dict[str, Any]:
    """A preset (as data) that reads every part from the LISA release ``source`` (folder or hub id)."""
    return {
        "name": name or _name(source),
        "description": description or f"LISA release {source}: CLIP-L/14 @224 + LLaVA-v1 + [SEG] projection + SAM ViT-H",
        "visual_encoder": {"name": "clip-v1", "settings": {"release": source}},
        # inference: no adapter (r 0); the converter adds LoRA for fine-tuning
        "llm": {"name": "llava-v1", "settings": {"pretrained": source, "lora": {"r": 0}}},
        "alignment": {"name": "lisa-projection", "settings": {"release": source}},
        "mask_decoder": {"name": "lisa-sam", "settings": {"release": source}},
    }


def release_preset(source: str | Path, **overrides: Any):
    """The :class:`~pixelagent.presets.Preset` of a LISA release at ``source`` (a folder, or a hub
    id in the Hugging Face cache), with ``Preset.with_overrides`` ``overrides``::

        Agent(release_preset("/models/LISA-7B-v1", llm={"settings": {"quantize": "4bit"}}))
    """
    from pixelagent.presets import parse_preset

    preset = parse_preset(release_preset_data(str(source)), source=f"LISA release {source}")
    return preset.with_overrides(**overrides) if overrides else preset


def _name(source: str) -> str:
    """``lisa-7b-v1`` for its hub id or its HF-cache snapshot folder, else the folder's name."""
    path = Path(source)
    if path.parent.name == "snapshots" and path.parent.parent.name.startswith("models--"):
        source = path.parent.parent.name[len("models--"):].replace("--", "/")  # models--xinlai--LISA-7B-v1
    for name, hub_id in RELEASES.items():
        if source == hub_id:
            return name
    return Path(source).name.lower() or "lisa-release"


def is_release(folder: str | Path) -> bool:
    """Whether ``folder`` looks like a LISA release: its config.json names ``LISAForCausalLM``
    (reads that one small file; builds nothing)."""
    import json

    try:
        config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and "LISAForCausalLM" in (config.get("architectures") or [])


def open_release(source: str, setting: str, shared: dict[str, Any] | None):
    """(folder, its :class:`~pixelagent_llava.checkpoints.CheckpointFiles`), one per build."""
    from pixelagent_llava.checkpoints import cached_files, resolve_folder

    folder = resolve_folder(source, setting, "LISA release")
    return folder, cached_files(folder, shared)
