"""A tiny LISA release, written in the exact layout of ``xinlai/LISA-7B-v1`` (test helper).

The published folder holds ``config.json`` (``LISAForCausalLM``, ``model_type: llava``),
``generation_config.json``, ``pytorch_model-0000{1,2}-of-00002.bin`` with
``pytorch_model.bin.index.json``, and a LLaMA tokenizer (``tokenizer.model``,
``tokenizer_config.json``, ``special_tokens_map.json``, ``added_tokens.json`` with
``<im_patch>`` 32000, ``<im_start>`` 32001, ``<im_end>`` 32002, ``[SEG]`` 32003). This writes
the same files at CPU sizes: LLaMA 64-d x 2 layers, SAM ``tiny``, a 32-d CLIP at 32 px (16 patch
tokens) in its own folder named by ``mm_vision_tower``, and the LLaMA tokenizer as a
``tokenizer.json`` (SentencePiece is not installed here) built with ``tokenizers``: byte-fallback
BPE over ``▁``-prefixed pieces, ``<unk>`` ``<s>`` ``</s>`` at 0-2 and the 256 byte tokens at
3-258, as LLaMA's. The added tokens are only in ``added_tokens.json``, as in the release
(transformers 4.31 wrote no ``added_tokens_decoder``).

Key names are those of LISA's ``LISAForCausalLM.state_dict()``: ``model.embed_tokens``,
``model.layers.*``, ``model.norm``, ``model.mm_projector`` (one Linear), ``model.visual_model.*``
(SAM), ``model.text_hidden_fcs.0.{0,2}.*`` (Linear-ReLU-Linear-Dropout), ``lm_head``; the CLIP
tower is not saved. LLaMA and the projector are bfloat16, SAM and ``text_hidden_fcs`` float32, as
in the release (its merge script rebuilds those two in float32 before saving).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"
LLAMA = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=4, max_position_embeddings=2048, rms_norm_eps=1e-6)
CLIP = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
            image_size=32, patch_size=8, projection_dim=16)
SPECIALS = ["<unk>", "<s>", "</s>"]
ADDED = ["<im_patch>", "<im_start>", "<im_end>", "[SEG]"]  # LISA-7B-v1's order (32000..32003)


@dataclass
class TinyRelease:
    """What :func:`write_release` made: the folder, its CLIP, the state dict and the vocabulary."""

    folder: Path
    clip: Path
    state: dict[str, torch.Tensor]
    base_vocab: int
    added: dict[str, int] = field(default_factory=dict)

    @property
    def seg_id(self) -> int:
        return self.added["[SEG]"]

    def sub(self, prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix):]: v for k, v in self.state.items() if k.startswith(prefix)}


def build_tokenizer(vocab_size: int = 700):
    """A LLaMA-style ``tokenizers.Tokenizer`` trained on the llava plugin's tiny corpus."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    corpus = (PLUGINS / "pixelagent_llava" / "tiny_corpus.txt").read_text(encoding="utf-8").splitlines()
    corpus += ["Sure, it is the segmentation result. Please output segmentation mask and explain why.",
               "What is the astronaut holding in this image? What is in the cup?"]
    trainer_core = Tokenizer(models.BPE(unk_token="<unk>"))
    trainer_core.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False)
    trainer_core.train_from_iterator(corpus, trainer=trainer)
    trained = json.loads(trainer_core.to_str())["model"]
    vocab = {token: i for i, token in enumerate(SPECIALS + [f"<0x{b:02X}>" for b in range(256)])}
    for token, _ in sorted(trained["vocab"].items(), key=lambda item: item[1]):
        vocab.setdefault(token, len(vocab))
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in trained["merges"]]
    core = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    core.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    core.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                      decoders.Strip(" ", 1, 0)])
    core.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in SPECIALS])
    core.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                        special_tokens=[("<s>", 1)])
    return core


def _token(content: str, typed: bool) -> dict:
    token = {"content": content, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}
    return {"__type": "AddedToken", **token} if typed else token


def write_tokenizer(folder: Path, added_order: list[str] = ADDED) -> tuple[int, dict[str, int]]:
    core = build_tokenizer()
    core.save(str(folder / "tokenizer.json"))
    base = core.get_vocab_size()
    added = {token: base + i for i, token in enumerate(added_order)}
    (folder / "added_tokens.json").write_text(json.dumps(dict(sorted(added.items())), indent=2))
    (folder / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": _token("<s>", False), "eos_token": _token("</s>", False), "pad_token": "<unk>",
         "unk_token": _token("<unk>", False)}, indent=2))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"add_bos_token": True, "add_eos_token": False, "bos_token": _token("<s>", True),
         "clean_up_tokenization_spaces": False, "eos_token": _token("</s>", True), "legacy": False,
         "model_max_length": 512, "pad_token": None, "padding_side": "right", "sp_model_kwargs": {},
         "tokenizer_class": "LlamaTokenizer", "unk_token": _token("<unk>", True)}, indent=2))
    return base, added


def write_clip(folder: Path, seed: int = 5) -> Path:
    """A tiny ``CLIPVisionModel`` saved as transformers saves one (config.json + safetensors)."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(seed)
    CLIPVisionModel(CLIPVisionConfig(**CLIP)).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(
        {"crop_size": CLIP["image_size"], "do_center_crop": True, "do_normalize": True, "do_resize": True,
         "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": [0.48145466, 0.4578275, 0.40821073],
         "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3, "size": CLIP["image_size"]}))
    return folder


def lisa_state(vocab: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under LISA's key names (LLaMA bf16, SAM and text_hidden_fcs float32)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from pixelagent_sam.modeling import build_sam_model

    torch.manual_seed(seed)
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=vocab, **LLAMA))
    state = {k: v.to(torch.bfloat16) for k, v in llama.state_dict().items() if "rotary_emb" not in k}
    lm_head = state.pop("lm_head.weight")  # LISA's order: model.* (projector, SAM, fcs) first, lm_head last
    projector = nn.Linear(CLIP["hidden_size"], LLAMA["hidden_size"])
    state["model.mm_projector.weight"] = projector.weight.detach().to(torch.bfloat16)
    state["model.mm_projector.bias"] = projector.bias.detach().to(torch.bfloat16)
    sam = build_sam_model("tiny")
    state.update({f"model.visual_model.{k}": v for k, v in sam.state_dict().items()})
    fcs = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 256), nn.Dropout(0.0))
    state.update({f"model.text_hidden_fcs.0.{k}": v for k, v in fcs.state_dict().items()})
    state["lm_head.weight"] = lm_head
    return {k: v.contiguous() for k, v in state.items()}


def script_answers(state: dict[str, torch.Tensor], chain: list[int]) -> None:
    """Make the LLaMA a bigram machine that answers every prompt ending in ``chain[0]`` with
    ``chain[1:]`` (``▁ASSISTANT:`` → ``▁Sure,`` ``[SEG]`` ``.`` ``</s>``), greedily.

    Attention and MLP outputs are zeroed, so the last-layer state of a token is its normalised
    embedding, and each ``lm_head`` row of the chain points at its predecessor's state. The
    session, KV cache and alignment paths run as ever; the answers are only predictable.
    """
    for key in state:
        if key.endswith(("o_proj.weight", "down_proj.weight")):
            state[key] = torch.zeros_like(state[key])
    embed = state["model.embed_tokens.weight"].float()
    states = embed * torch.rsqrt(embed.pow(2).mean(-1, keepdim=True) + LLAMA["rms_norm_eps"])
    head = torch.zeros_like(state["lm_head.weight"], dtype=torch.float32)
    for before, after in zip(chain, chain[1:]):
        head[after] += 4.0 * states[before] / states[before].norm()
    state["lm_head.weight"] = head.to(state["lm_head.weight"].dtype).contiguous()


def lisa_config(vocab: int, clip: str) -> dict:
    """config.json as LISA-7B-v1's (its fields, tiny sizes; the tower is a local folder here)."""
    return {"_name_or_path": "./LLaVA/LLaVA-Lightning-7B-v1-1", "architectures": ["LISAForCausalLM"],
            "bos_token_id": 1, "eos_token_id": 2, "freeze_mm_mlp_adapter": True, "hidden_act": "silu",
            "hidden_size": LLAMA["hidden_size"], "image_aspect_ratio": "square", "image_grid_pinpoints": None,
            "initializer_range": 0.02, "intermediate_size": LLAMA["intermediate_size"],
            "max_position_embeddings": 2048, "max_sequence_length": 2048, "mm_hidden_size": CLIP["hidden_size"],
            "mm_use_im_patch_token": False, "mm_use_im_start_end": True, "mm_vision_select_feature": "patch",
            "mm_vision_select_layer": -2, "mm_vision_tower": clip, "model_type": "llava",
            "num_attention_heads": LLAMA["num_attention_heads"], "num_hidden_layers": LLAMA["num_hidden_layers"],
            "num_key_value_heads": LLAMA["num_key_value_heads"], "out_dim": 256, "pad_token_id": 0,
            "pretrain_mm_mlp_adapter": None, "pretraining_tp": 1, "rms_norm_eps": 1e-06, "rope_scaling": None,
            "tie_word_embeddings": False, "torch_dtype": "bfloat16", "train_mask_decoder": True,
            "transformers_version": "4.31.0", "tune_mm_mlp_adapter": False, "use_cache": False,
            "use_mm_proj": True, "vision_tower": clip, "vocab_size": vocab}


def write_shards(folder: Path, state: dict[str, torch.Tensor], layout: str = "bin") -> None:
    """Two shards split inside the LLaMA layers, plus the index, as ``save_pretrained`` shards."""
    keys = list(state)
    cut = keys.index("model.layers.1.input_layernorm.weight")
    parts = [keys[:cut], keys[cut:]]
    if layout == "bin":
        names = [f"pytorch_model-0000{i + 1}-of-00002.bin" for i in range(2)]
        for name, part in zip(names, parts):
            torch.save({k: state[k] for k in part}, folder / name)
        index = "pytorch_model.bin.index.json"
    else:
        from safetensors.torch import save_file

        names = [f"model-0000{i + 1}-of-00002.safetensors" for i in range(2)]
        for name, part in zip(names, parts):
            save_file({k: state[k] for k in part}, str(folder / name), metadata={"format": "pt"})
        index = "model.safetensors.index.json"
    total = sum(v.numel() * v.element_size() for v in state.values())
    weight_map = {k: names[i] for i, part in enumerate(parts) for k in part}
    (folder / index).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))


def write_release(root: Path, seed: int = 0, layout: str = "bin", scripted: bool = False) -> TinyRelease:
    """Write a tiny LISA release under ``root`` (``root/LISA-tiny-v1`` and its CLIP ``root/clip-vit-tiny``).

    ``scripted``: the LLM answers every turn "Sure, [SEG]." (see :func:`script_answers`).
    """
    root = Path(root)
    folder, clip = root / "LISA-tiny-v1", root / "clip-vit-tiny"
    folder.mkdir(parents=True, exist_ok=True)
    write_clip(clip)
    base, added = write_tokenizer(folder)
    vocab = base + len(added)
    state = lisa_state(vocab, seed)
    if scripted:
        core = build_tokenizer()
        chain = [core.token_to_id("▁ASSISTANT:"), *core.encode("Sure,", add_special_tokens=False).ids,
                 added["[SEG]"], core.token_to_id("."), core.token_to_id("</s>")]
        script_answers(state, chain)
    (folder / "config.json").write_text(json.dumps(lisa_config(vocab, str(clip)), indent=2))
    (folder / "generation_config.json").write_text(json.dumps(
        {"_from_model_config": True, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
         "transformers_version": "4.31.0"}, indent=2))
    write_shards(folder, state, layout)
    return TinyRelease(folder, clip, state, base, added)
