"""The entry point for applications: ``Agent(preset=...)`` → ``agent.session(image)``."""

from __future__ import annotations

import os
from pathlib import Path
from collections.abc import Iterable
from typing import Any

from pixelagent.images import DEFAULT_MAX_PIXELS, ImageInput, load_image
from pixelagent.parts import Part
from pixelagent.presets import Preset, load_preset_file, looks_like_preset_file
from pixelagent.registry import get_registry
from pixelagent.results import Reply
from pixelagent.session import Session

#: Environment variable naming the preset ``Agent()`` uses when none is given.
PRESET_ENV = "PIXELAGENT_PRESET"
DEFAULT_PRESET = "miras-tiny"


class Agent:
    """A built model (one part of each kind) that opens conversations about images.

    Args:
        preset: a registered preset name or alias, a :class:`~pixelagent.presets.Preset`, the
            path of a preset ``.yaml`` / ``.json`` file, or a model directory written by
            ``save_pretrained`` (its preset and trained weights). ``None`` takes
            ``$PIXELAGENT_PRESET``, else ``"miras-tiny"``.
        **overrides: preset fields to replace, e.g. ``device="cpu"`` or
            ``llm={"settings": {"max_new_tokens": 64}}`` (merged into that part's settings).

    The parts are built here, once; sessions share them. Unknown names raise
    :class:`~pixelagent.errors.UnknownNameError` listing what is available.
    """

    def __init__(self, preset: str | os.PathLike | Preset | None = None, **overrides: Any) -> None:
        registry = get_registry()
        base = resolve_preset(preset, registry)
        self.preset: Preset = base.with_overrides(**overrides) if overrides else base
        self.parts: dict[str, Part] = registry.build(self.preset)
        if self.preset.weights:
            from pixelagent.nn.model import load_weights_into

            load_weights_into(self.parts, self.preset)

    @classmethod
    def from_parts(cls, preset: Preset, parts: dict[str, Part]) -> Agent:
        """An agent over parts you already hold (e.g. ``SegmentationModel.parts`` after training)."""
        agent = cls.__new__(cls)
        agent.preset, agent.parts = preset, dict(parts)
        return agent

    def session(self, image: ImageInput, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Session:
        """Open a conversation about ``image`` (a path, bytes, PIL image or numpy array).

        The image is EXIF-oriented and converted to RGB (H, W, 3) uint8; masks come back at
        that oriented size. ``max_pixels`` guards against decompression bombs (``None``: off).
        """
        return Session(self, load_image(image, max_pixels=max_pixels))

    def segment(self, image: ImageInput, question: str, *, earlier: Iterable[str] = ()) -> Reply:
        """One-shot helper: ask the ``earlier`` questions, then ``question``; return its reply."""
        session = self.session(image)
        for text in earlier:
            session.ask(text)
        return session.ask(question)

    def __repr__(self) -> str:
        names = ", ".join(f"{kind}={self.preset.choice(kind).name}" for kind in self.parts)
        return f"Agent(preset={self.preset.name!r}, {names})"


def resolve_preset(preset: str | os.PathLike | Preset | None, registry: Any = None) -> Preset:
    """Turn what a user passed as ``preset`` into a :class:`Preset`."""
    if isinstance(preset, Preset):
        return preset
    if preset is None:
        preset = os.environ.get(PRESET_ENV) or DEFAULT_PRESET
    if looks_like_preset_file(preset):
        return load_preset_file(preset)
    if Path(preset, "config.json").is_file():
        from pixelagent.nn.model import read_preset

        return read_preset(preset)
    return (registry or get_registry()).preset(str(preset)).preset
