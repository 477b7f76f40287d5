"""A LISA release → a pixelagent model folder (``save_pretrained``'s format), to load and to train.

``pixelagent convert lisa xinlai/LISA-7B-v1 --out runs/lisa_7b/release`` writes::

    runs/lisa_7b/release/
        config.json          the preset below (pixelagent's model format) — Agent(folder) loads it
        model.safetensors    every weight: LLaMA, projector, CLIP, SAM, [SEG] projection (bf16)
        adapter/             the LoRA adapter in peft's format (zero-initialised B: same answers)
        llm/                 the release's config.json and tokenizer (with [OBJ]), no weights
        clip/                the CLIP tower's config.json, no weights
        preset.yaml          the same preset with weights: <this folder>, for training configs

The saved preset builds each part's architecture without reading the release (``llava-v1`` and
``clip-v1`` with ``load_weights: false`` from ``llm/`` and ``clip/``, ``lisa-sam`` with
``random_init``) and the weights come from ``model.safetensors``, so the folder stands alone.
Its ``llm/`` and ``clip/`` are named by absolute path: moving the folder needs a new conversion
(or an edit of those two paths in config.json and preset.yaml).

With LoRA (``lora_r`` > 0, r=8 by default, DESIGN §2) the stage-2 recipe can start from it
(``init_from``: every key matches); an :class:`~pixelagent.Agent` folds the zero adapter away.
"""

from __future__ import annotations

import inspect
import json
import shutil
from pathlib import Path
from typing import Any

from pixelagent.errors import ConfigError
from pixelagent_lisa.release import is_release, release_preset


CARD = ("LISA's released checkpoint {source} (dvlab-research/LISA), converted to pixelagent's format by "
        "`pixelagent convert lisa`. The weights keep the release's terms: LISA's code is Apache-2.0, and the "
        "LLaMA / LLaVA / SAM / CLIP weights inside it are under their own licenses.")


def convert_release(source: str, out: str | Path, *, dtype: str = "bfloat16", lora_r: int = 8,
                    device: str = "cpu", overwrite: bool = False) -> Path:
    """Read the release at ``source`` (folder or hub id) and write it as a pixelagent model to ``out``.

    ``dtype`` is the stored dtype (the release's LLaMA is bf16); ``device`` where the parts are
    built (a GPU only makes it faster). Returns ``out``.
    """
    from pixelagent.nn.model import SegmentationModel
    from pixelagent.registry import get_registry
    from pixelagent_llava.checkpoints import resolve_folder

    folder = resolve_folder(str(source), "the release to convert", "LISA release")
    if not is_release(folder):
        raise ConfigError(f"{folder} is not a LISA release: its config.json does not name LISAForCausalLM "
                          "(the architecture of xinlai/LISA-7B-v1 and kin)")
    out = _empty_folder(Path(out).expanduser().resolve(), overwrite)
    preset = release_preset(folder, device=device, dtype=dtype, llm={"settings": {"lora": {"r": lora_r}}})
    parts = get_registry().build(preset)
    llm, encoder = parts["llm"], parts["visual_encoder"]
    _write_llm_folder(llm, out / "llm")
    (out / "clip").mkdir(parents=True, exist_ok=True)
    encoder.clip.config.to_json_file(str(out / "clip" / "config.json"))
    saved = preset_data(preset, out, parts)
    model = SegmentationModel(parts, parse(saved))
    card = {"license": "other", "description": CARD.format(source=source)}
    accepts_card = "card" in inspect.signature(model.save_pretrained).parameters
    model.save_pretrained(out, **({"card": card} if accepts_card else {}))
    import yaml

    (out / "preset.yaml").write_text(f"# LISA release {source}, converted by `pixelagent convert lisa`; "
                                     "weights in this folder\n" + yaml.safe_dump({**saved, "weights": str(out)},
                                                                                sort_keys=False))
    return out


def preset_data(preset, out: Path, parts: dict[str, Any]) -> dict[str, Any]:
    """The converted model's preset: the same parts, their architectures from ``out``, no release."""
    llm = preset.llm.settings
    encoder = parts["visual_encoder"]
    return {
        "name": f"{preset.name}-converted",
        "description": f"{preset.description} (converted)",
        "visual_encoder": {"name": "clip-v1", "settings": {
            "pretrained": str(out / "clip"), "load_weights": False, "select_layer": encoder.layer,
            "select_feature": "cls_patch" if encoder.keep_cls else "patch", "crop": encoder.crop}},
        "llm": {"name": "llava-v1", "settings": {
            "pretrained": str(out / "llm"), "load_weights": False, "lora": llm.get("lora", {}),
            **{k: llm[k] for k in ("max_new_tokens", "context_window") if k in llm}}},
        "alignment": {"name": "lisa-projection"},
        "mask_decoder": {"name": "lisa-sam", "settings": {"size": _sam_size(parts["mask_decoder"]),
                                                          "random_init": True}},
    }


def parse(data: dict[str, Any]):
    from pixelagent.presets import parse_preset

    return parse_preset(data, source="converted LISA preset")


def _write_llm_folder(llm, folder: Path) -> None:
    """The LLaVA-v1 config.json (vocabulary grown by [OBJ] and <image>) and the tokenizer."""
    folder.mkdir(parents=True, exist_ok=True)
    config = json.loads((llm.source / "config.json").read_text(encoding="utf-8"))
    config["vocab_size"] = int(llm.llava.get_input_embeddings().weight.shape[0])
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    llm.tokenizer.save_pretrained(str(folder))


def _sam_size(decoder) -> str:
    from pixelagent_sam.checkpoint import guess_size

    size = guess_size({k[len("sam."):]: v for k, v in decoder.state_dict().items() if k.startswith("sam.")})
    if size is None:
        raise ConfigError("the release's SAM matches none of the known sizes")
    return size


def _is_saved_model(folder: Path) -> bool:
    """Whether ``folder`` holds a pixelagent model (its config.json says so), which --force may replace."""
    from pixelagent.nn.model import FORMAT

    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and config.get("format") == FORMAT


def _empty_folder(out: Path, overwrite: bool) -> Path:
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ConfigError(f"{out} is not empty; pick a new folder or pass --force to replace it")
        if not _is_saved_model(out):
            raise ConfigError(f"{out} holds files but no saved model; refusing to delete it, pick another folder")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out
