"""Presets: a named choice of one part of each kind, with settings. Presets are data.

A preset can be registered by a plugin, written as YAML / JSON, or derived from another with
overrides, so mixing parts (MIRAS with LISA's alignment, say) needs no code::

    name: miras-lisa-align
    visual_encoder: {name: miras-dual, settings: {...}}
    llm: llava-next
    alignment: lisa-seg-projection
    mask_decoder: {name: sam, settings: {size: vit_h}}
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pixelagent.errors import ConfigError, single_line
from pixelagent.limits import Limits
from pixelagent.parts import PART_KINDS


class PartChoice(BaseModel):
    """Which registered part to build (by name or alias) and the settings its builder gets."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    settings: dict[str, Any] = {}

    @model_validator(mode="before")
    @classmethod
    def _name_alone(cls, value: Any) -> Any:
        # `llm: llava-next` is shorthand for `llm: {name: llava-next}`.
        return {"name": value} if isinstance(value, str) else value


class Preset(BaseModel):
    """A complete model description: one part of each kind plus where to run it.

    ``device`` is ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``,
    ``"cuda:N"`` or ``"mps"``; ``dtype`` ``"auto"`` means bfloat16 on CUDA and float32 elsewhere.
    ``weights`` is a directory written by ``SegmentationModel.save_pretrained`` whose trained
    weights are loaded over the freshly built parts. ``limits`` bound what its sessions accept
    (question length, turns, what happens when the context window is full; see
    :mod:`pixelagent.limits`). ``threads`` is torch's CPU thread count for this model (see
    :func:`pixelagent.agent.choose_threads`; ``None``: ``$PIXELAGENT_NUM_THREADS`` or automatic).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    visual_encoder: PartChoice
    llm: PartChoice
    alignment: PartChoice
    mask_decoder: PartChoice
    device: str = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    weights: Optional[str] = None
    limits: Limits = Limits()
    threads: Optional[int] = Field(None, ge=1)

    def choice(self, kind: str) -> PartChoice:
        """The :class:`PartChoice` for ``kind`` (one of :data:`~pixelagent.parts.PART_KINDS`)."""
        return getattr(self, kind)

    def with_overrides(self, **overrides: Any) -> Preset:
        """A copy with fields replaced; a part given as a dict has its settings merged.

        ``preset.with_overrides(device="cpu", llm={"settings": {"max_new_tokens": 64}})`` keeps
        the LLM's name and other settings; ``llm="other-llm"`` (or a dict with another ``name``)
        swaps the part and starts its settings afresh.
        """
        data = self.model_dump()
        for key, value in overrides.items():
            if key == "limits" and isinstance(value, dict):  # merged too: limits={"max_turns": 50}
                data[key] = {**data[key], **value}
            elif key in PART_KINDS and isinstance(value, dict):
                current = data[key]
                name = value.get("name", current["name"])
                kept = current["settings"] if name == current["name"] else {}  # new part: fresh settings
                data[key] = {**value, "name": name, "settings": {**kept, **value.get("settings", {})}}
            else:
                data[key] = value
        return parse_preset(data, source="overrides")


def parse_preset(data: Any, source: str = "preset") -> Preset:
    """Validate ``data`` as a :class:`Preset`, reporting every problem at once as a ConfigError."""
    from pixelagent.validation import problems as readable

    try:
        return Preset.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"invalid {source}: {'; '.join(readable(exc, Preset))}") from None


def load_preset_file(path: str | os.PathLike) -> Preset:
    """Read a preset from a ``.yaml`` / ``.yml`` / ``.json`` file."""
    from pixelagent.files import read_text

    path = Path(path)
    text = read_text(path, "preset file", max_bytes=16 << 20)
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # json.JSONDecodeError or yaml.YAMLError (which is no ValueError)
        # PyYAML's messages span lines (the text and a caret under it): one line for the CLI
        raise ConfigError(f"cannot parse preset file {path}: {single_line(str(exc))}") from None
    return parse_preset(data, source=f"preset file {path}")


def looks_like_preset_file(value: str | os.PathLike) -> bool:
    """True for a path ending in .yaml / .yml / .json (whether or not it exists yet)."""
    return Path(value).suffix.lower() in {".yaml", ".yml", ".json"}
