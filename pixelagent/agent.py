"""The entry point for applications: ``Agent(preset=...)`` → ``agent.session(image)``."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pixelagent.batching import Coalescer, InFlight
from pixelagent.images import DEFAULT_MAX_PIXELS, ImageInput, load_image
from pixelagent.parts import Part
from pixelagent.presets import Preset, load_preset_file, looks_like_preset_file
from pixelagent.registry import get_registry
from pixelagent.results import Reply
from pixelagent.session import Session

#: Environment variable naming the preset ``Agent()`` uses when none is given.
PRESET_ENV = "PIXELAGENT_PRESET"
#: Environment variable with torch's CPU thread count for agents (``threads`` in a preset wins).
THREADS_ENV = "PIXELAGENT_NUM_THREADS"
#: Models with fewer parameters run on one CPU thread unless told otherwise (see choose_threads).
SMALL_MODEL_PARAMETERS = 100_000_000
#: Environment variable naming a trained MIRAS model directory (written by ``save_pretrained``).
MIRAS_WEIGHTS_ENV = "PIXELAGENT_MIRAS_WEIGHTS"
DEFAULT_PRESET = "miras-tiny"

logger = logging.getLogger("pixelagent")
_COALESCER_LOCK = threading.Lock()


class Agent:
    """A built model (one part of each kind) that opens conversations about images.

    Args:
        preset: a registered preset name or alias, a :class:`~pixelagent.presets.Preset`, the
            path of a preset ``.yaml`` / ``.json`` file, or a model directory written by
            ``save_pretrained`` (its preset and trained weights). ``None`` picks one (see
            :func:`default_preset`) and says which in :attr:`choice`.
        **overrides: preset fields to replace, e.g. ``device="cpu"`` or
            ``llm={"settings": {"max_new_tokens": 64}}`` (merged into that part's settings).

    The parts are built here, once; sessions share them. Unknown names raise
    :class:`~pixelagent.errors.UnknownNameError` listing what is available.
    """

    def __init__(self, preset: str | os.PathLike | Preset | None = None, **overrides: Any) -> None:
        registry = get_registry()
        #: How the preset was chosen: "given" or, for ``Agent()``, the reason for the default.
        self.choice = "given"
        if preset is None:
            preset, self.choice = default_preset()
            logger.info("pixelagent: using %s (%s)", preset, self.choice)
        base = resolve_preset(preset, registry)
        self.preset: Preset = base.with_overrides(**overrides) if overrides else base
        #: this agent's turns under way, from any session or thread (parts batch concurrent ones)
        self.in_flight = InFlight()
        self.parts: dict[str, Part] = _build(registry, self.preset, self.in_flight)
        #: torch's CPU thread count this agent set, or None if it left torch's own
        self.threads = choose_threads(self.preset, self.parts)

    @classmethod
    def from_parts(cls, preset: Preset, parts: dict[str, Part]) -> Agent:
        """An agent over parts you already hold (e.g. ``SegmentationModel.parts`` after training)."""
        agent = cls.__new__(cls)
        agent.preset, agent.parts, agent.choice = preset, dict(parts), "given"
        agent.in_flight, agent.threads = InFlight(), None
        return agent

    def shared(self, kind: str, method: str) -> Coalescer:
        """The :class:`~pixelagent.batching.Coalescer` that runs ``parts[kind].method`` (a
        ``*_many`` method) for the concurrent turns of this agent's sessions."""
        key = (kind, method)
        coalescers = self.__dict__.setdefault("_coalescers", {})
        if key not in coalescers:
            with _COALESCER_LOCK:
                if key not in coalescers:
                    coalescers[key] = Coalescer(getattr(self.parts[kind], method), self.in_flight)
        return coalescers[key]

    def session(self, image: ImageInput, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Session:
        """Open a conversation about ``image`` (a path, bytes, PIL image or numpy array).

        The image is EXIF-oriented and converted to RGB (H, W, 3) uint8; masks come back at
        that oriented size. ``max_pixels`` guards against decompression bombs (``None``: off).
        """
        session = Session(self, load_image(image, max_pixels=max_pixels))
        if isinstance(image, (str, os.PathLike)):
            session.image_path = Path(image)  # what session.save() refers to instead of copying pixels
        return session

    def segment(self, image: ImageInput, question: str, *, earlier: Iterable[str] = ()) -> Reply:
        """One-shot helper: ask the ``earlier`` questions, then ``question``; return its reply."""
        session = self.session(image)
        for text in earlier:
            session.ask(text)
        return session.ask(question)

    def __repr__(self) -> str:
        names = ", ".join(f"{kind}={self.preset.choice(kind).name}" for kind in self.parts)
        return f"Agent(preset={self.preset.name!r}, {names})"


def _build(registry: Any, preset: Preset, in_flight: InFlight) -> dict[str, Part]:
    """The preset's parts for inference, with its trained weights loaded. When the weights file
    holds every weight (a complete save), the parts skip their random initialisation: the
    strict load that follows overwrites every weight anyway."""
    if not preset.weights:
        return registry.build(preset, inference=True, in_flight=in_flight)
    from pixelagent.nn.device import skip_random_init
    from pixelagent.nn.model import is_complete_save, load_weights_into

    with skip_random_init() if is_complete_save(preset.weights) else contextlib.nullcontext():
        parts = registry.build(preset, inference=True, in_flight=in_flight)
    load_weights_into(parts, preset)
    return parts


def choose_threads(preset: Preset, parts: dict[str, Part]) -> int | None:
    """Set torch's intra-op CPU threads for this model and return the number (None: untouched).

    In this order: the preset's ``threads`` (``Agent(..., threads=2)``), ``$PIXELAGENT_NUM_THREADS``,
    then, for a model on the CPU with under 100 M parameters (the tiny presets), 1. Measured on
    a 2-core machine with miras-tiny: one thread 54-62 ms per turn, two threads 282-568 ms (and
    5-10x the CPU time) while other work ran; small models are all overhead, and a second thread
    only adds contention. Larger models keep torch's default (a thread per core). The setting is
    process-wide, as torch's is.
    """
    wanted = preset.threads
    if wanted is None and os.environ.get(THREADS_ENV, "").strip():
        raw = os.environ[THREADS_ENV].strip()
        if not raw.isdigit() or int(raw) < 1:
            from pixelagent.errors import ConfigError

            raise ConfigError(f"${THREADS_ENV} must be a whole number of threads (1, 2, ...), got {raw!r}")
        wanted = int(raw)
    if wanted is None:
        modules = [p for p in parts.values() if hasattr(p, "parameters")]
        if not modules or not str(getattr(preset, "device", "cpu")).startswith(("cpu", "auto")):
            return None
        import torch

        on_cpu = all(next(iter(m.parameters()), torch.empty(0)).device.type == "cpu" for m in modules)
        size = sum(p.numel() for m in modules for p in m.parameters())
        if not on_cpu or size >= SMALL_MODEL_PARAMETERS:
            return None
        wanted = 1
    import torch

    if torch.get_num_threads() != wanted:
        torch.set_num_threads(wanted)
    return wanted


def default_preset() -> tuple[str, str]:
    """The preset ``Agent()`` uses when given none, and why, in this order:

    1. ``$PIXELAGENT_PRESET`` (any preset name, file or model directory);
    2. the full ``miras`` model, when ``$PIXELAGENT_MIRAS_WEIGHTS`` names a trained MIRAS
       directory and a CUDA GPU is present (7B on a CPU would take minutes per turn);
    3. otherwise ``miras-tiny``, the small MIRAS trained on PRIST-Synth that ships with pixelagent.
    """
    chosen = os.environ.get(PRESET_ENV)
    if chosen:
        return chosen, f"from ${PRESET_ENV}"
    weights = os.environ.get(MIRAS_WEIGHTS_ENV)
    if weights:
        if _cuda_available():
            return weights, f"MIRAS weights from ${MIRAS_WEIGHTS_ENV} and a CUDA GPU"
        return DEFAULT_PRESET, (f"the shipped {DEFAULT_PRESET}: ${MIRAS_WEIGHTS_ENV} is set but there "
                                "is no CUDA GPU to run MIRAS on")
    return DEFAULT_PRESET, (f"the shipped {DEFAULT_PRESET}; set ${MIRAS_WEIGHTS_ENV} (with a GPU) "
                            f"or ${PRESET_ENV} for another model")


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def resolve_preset(preset: str | os.PathLike | Preset | None, registry: Any = None) -> Preset:
    """Turn what a user passed as ``preset`` into a :class:`Preset`."""
    if isinstance(preset, Preset):
        return preset
    if preset is None:
        preset = default_preset()[0]
    if looks_like_preset_file(preset):
        return load_preset_file(preset)
    if Path(preset).expanduser().is_dir():
        return _model_dir_preset(Path(preset).expanduser())
    registry = registry or get_registry()
    name = str(preset)
    from pixelagent.hub import looks_like_hub_id, snapshot

    known = {spec.name for spec in registry.presets()}
    if looks_like_hub_id(name) and name not in known:
        return _model_dir_preset(snapshot(name), shown=name)
    separators = tuple(s for s in (os.sep, os.altsep) if s)
    if name not in known and (name.startswith((".", "~")) or any(s in name for s in separators)):
        from pixelagent.errors import ConfigError

        path = Path(name).expanduser()
        if path.exists():
            raise ConfigError(f"{name} is a file, not a model folder; pass the folder that holds config.json, "
                              "or a .yaml / .json preset file")
        raise ConfigError(f"model folder {name} does not exist; check the path, or name a preset "
                          "(pixelagent plugins lists them)")
    return registry.preset(name).preset


def _model_dir_preset(folder: Path, shown: str | None = None) -> Preset:
    """The preset of a model folder: pixelagent's ``save_pretrained`` layout, or one a plugin knows."""
    import json

    from pixelagent.errors import WeightsNotFoundError
    from pixelagent.plugins import load_plugins, pm

    config = folder / "config.json"
    if config.is_file():
        try:
            ours = json.loads(config.read_text(encoding="utf-8")).get("format") == "pixelagent-segmentation-model"
        except (OSError, ValueError, AttributeError):
            ours = True  # let read_preset report what is wrong with it
        if ours:
            from pixelagent.nn.model import read_preset

            return read_preset(folder)
    load_plugins()
    found = pm.hook.resolve_model_dir(path=str(folder))
    if found is not None:
        return found
    what = shown or str(folder)
    raise WeightsNotFoundError(f"{what} is not a model pixelagent can load: no pixelagent config.json (written by "
                               "save_pretrained, e.g. a training run's final/) and no installed plugin recognises "
                               "its layout; point at such a directory, or name a preset")
