"""What the plugins registered: part builders and presets, looked up by name or alias.

The registry is rebuilt from the plugin manager whenever the set of plugins changes, so a test
can register an in-memory plugin and unregister it again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from pydantic import BaseModel, ValidationError

from pixelagent.errors import ConfigError, PluginError, UnknownNameError
from pixelagent.hookspecs import PART_HOOKS
from pixelagent.parts import PART_BASES, PART_KINDS, Part
from pixelagent.plugins import load_plugins, pm
from pixelagent.presets import PartChoice, Preset, parse_preset

Builder = Callable[[Any, "BuildContext"], Part]

KIND_LABELS = {
    "visual_encoder": "visual encoder",
    "llm": "LLM backbone",
    "alignment": "alignment strategy",
    "mask_decoder": "mask decoder",
}


@dataclass(frozen=True)
class PartSpec:
    """A registered part builder. ``settings`` is the pydantic model its settings must fit, if any."""

    kind: str
    name: str
    builder: Builder
    plugin: str
    aliases: tuple[str, ...] = ()
    settings: type[BaseModel] | None = None
    description: str = ""

    def validate_settings(self, settings: dict[str, Any]) -> Any:
        """The settings the builder will get; raises ConfigError listing every problem."""
        if self.settings is None:
            return dict(settings)
        try:
            return self.settings.model_validate(settings)
        except ValidationError as exc:
            from pixelagent.validation import problems as readable

            problems = "; ".join(readable(exc, self.settings))
            raise ConfigError(
                f"invalid settings for {KIND_LABELS[self.kind]} {self.name!r}: {problems}"
            ) from None


@dataclass(frozen=True)
class PresetSpec:
    """A registered preset and the plugin that gave it."""

    preset: Preset
    plugin: str
    aliases: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.preset.name


@dataclass
class BuildContext:
    """What a builder may use besides its own settings.

    Attributes:
        preset: the whole preset being built.
        parts: parts already built for this preset, by kind, in :data:`PART_KINDS` order.
        shared: scratch space shared by the builders of one preset, e.g. one loaded checkpoint
            that several parts are views of.
        inference: the parts are built to answer (an :class:`~pixelagent.Agent`), not to train:
            a builder may then fold adapters into weights or skip what only training needs.
        in_flight: the agent's turns under way (:class:`pixelagent.batching.InFlight`), for
            parts that share work between concurrent turns (see :mod:`pixelagent.batching`).
    """

    preset: Preset
    parts: dict[str, Part] = field(default_factory=dict)
    shared: dict[str, Any] = field(default_factory=dict)
    inference: bool = False
    in_flight: Any = field(default_factory=lambda: _in_flight())

    @cached_property
    def device(self) -> str:
        """The preset's device with ``"auto"`` resolved (imports torch only when asked)."""
        if self.preset.device != "auto":
            return self.preset.device
        try:
            import torch
        except ImportError:
            return "cpu"
        return "cuda" if torch.cuda.is_available() else "cpu"

    @property
    def dtype(self) -> str:
        """The preset's dtype with ``"auto"`` resolved: bfloat16 on CUDA, else float32."""
        if self.preset.dtype != "auto":
            return self.preset.dtype
        return "bfloat16" if self.device.startswith("cuda") else "float32"


class _Table:
    """Names and aliases of one kind of thing → the spec; refuses duplicates loudly."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.specs: dict[str, Any] = {}
        self.aliases: dict[str, str] = {}

    def add(self, name: str, aliases: Iterable[str], spec: Any) -> None:
        for key in (name, *aliases):
            holder = self._holder(key)
            if holder is not None:
                raise PluginError(
                    f"{self.label} name {key!r} is registered twice: by plugin {holder.plugin!r} "
                    f"and by plugin {spec.plugin!r}; uninstall one of them or leave it out with "
                    "PIXELAGENT_PLUGINS=<comma-separated plugins to load>"
                )
        self.specs[name] = spec
        self.aliases.update({alias: name for alias in aliases})

    def _holder(self, key: str) -> Any:
        if key in self.specs:
            return self.specs[key]
        return self.specs.get(self.aliases.get(key, ""))

    def get(self, key: str) -> Any:
        spec = self._holder(key)
        if spec is None:
            available = ", ".join(sorted(self.specs)) or "none (is a plugin installed?)"
            raise UnknownNameError(f"unknown {self.label} {key!r}{self._suggestion(key)}; available: {available}")
        return spec

    def _suggestion(self, key: str) -> str:
        """ " (did you mean 'x'?)" for the closest registered name or alias, else nothing;
        ``_`` and case are not told apart from ``-`` and lower case (``miras_tiny``)."""
        import difflib

        names = sorted({*self.specs, *self.aliases})
        folded = {name.lower().replace("_", "-"): name for name in names}
        close = difflib.get_close_matches(str(key).lower().replace("_", "-"), list(folded), n=1, cutoff=0.75)
        return f" (did you mean {folded[close[0]]!r}?)" if close else ""


class Registry:
    """Every registered part builder and preset."""

    def __init__(self) -> None:
        self._parts = {kind: _Table(KIND_LABELS[kind]) for kind in PART_KINDS}
        self._presets = _Table("preset")

    # -- filling -----------------------------------------------------------------------------
    def add_part(self, kind: str, plugin: str, name: str, builder: Builder, *,
                 aliases: Iterable[str] = (), settings: type[BaseModel] | None = None,
                 description: str = "") -> None:
        if not callable(builder):
            raise PluginError(f"plugin {plugin!r} registered {KIND_LABELS[kind]} {name!r} "
                              f"with a builder that is not callable: {builder!r}")
        spec = PartSpec(kind, name, builder, plugin, tuple(aliases), settings, description)
        self._parts[kind].add(name, spec.aliases, spec)

    def add_preset(self, plugin: str, preset: Preset | dict, *, aliases: Iterable[str] = ()) -> None:
        if not isinstance(preset, Preset):
            preset = parse_preset(preset, source=f"preset from plugin {plugin!r}")
        spec = PresetSpec(preset, plugin, tuple(aliases))
        self._presets.add(preset.name, spec.aliases, spec)

    # -- lookups -----------------------------------------------------------------------------
    def part(self, kind: str, name: str) -> PartSpec:
        """The part of ``kind`` called ``name`` (or aliased so)."""
        return self._parts[kind].get(name)

    def parts(self, kind: str) -> list[PartSpec]:
        return [self._parts[kind].specs[n] for n in sorted(self._parts[kind].specs)]

    def preset(self, name: str) -> PresetSpec:
        """The preset called ``name`` (or aliased so)."""
        return self._presets.get(name)

    def presets(self) -> list[PresetSpec]:
        return [self._presets.specs[n] for n in sorted(self._presets.specs)]

    def check(self, preset: Preset) -> None:
        """Raise one ConfigError listing every unknown part and invalid setting of ``preset``."""
        problems = []
        for kind in PART_KINDS:
            choice: PartChoice = preset.choice(kind)
            try:
                self.part(kind, choice.name).validate_settings(choice.settings)
            except (UnknownNameError, ConfigError) as exc:
                problems.append(str(exc))
        if problems:
            raise ConfigError(f"preset {preset.name!r} cannot be built: " + "; ".join(problems))

    def build(self, preset: Preset, inference: bool = False, in_flight: Any = None) -> dict[str, Part]:
        """Build one part of each kind, in :data:`PART_KINDS` order, after checking the preset.

        ``inference``: built to answer, not to train (see :attr:`BuildContext.inference`);
        ``in_flight``: the agent's turn counter (:attr:`BuildContext.in_flight`)."""
        self.check(preset)
        context = BuildContext(preset, inference=inference, in_flight=in_flight or _in_flight())
        for kind in PART_KINDS:
            choice = preset.choice(kind)
            spec = self.part(kind, choice.name)
            part = spec.builder(spec.validate_settings(choice.settings), context)
            if not isinstance(part, PART_BASES[kind]):
                raise PluginError(
                    f"builder of {KIND_LABELS[kind]} {spec.name!r} (plugin {spec.plugin!r}) returned "
                    f"{type(part).__name__}, which is not a pixelagent.parts.{PART_BASES[kind].__name__}"
                )
            context.parts[kind] = part
        return dict(context.parts)


def _in_flight() -> Any:
    from pixelagent.batching import InFlight

    return InFlight()


_cache_lock = threading.Lock()
_cache: tuple[tuple[int, ...], Registry] | None = None


def get_registry() -> Registry:
    """The registry of the plugins registered now (rebuilt when that set changes)."""
    global _cache
    load_plugins()
    with _cache_lock:
        key = tuple(sorted(id(plugin) for plugin in pm.get_plugins()))
        if _cache is None or _cache[0] != key:
            _cache = (key, _collect())
        return _cache[1]


def _collect() -> Registry:
    registry = Registry()
    for hook_name, kind in PART_HOOKS.items():
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            impl.function(register=_part_register(registry, kind, impl.plugin_name))
    for impl in pm.hook.register_presets.get_hookimpls():
        impl.function(register=_preset_register(registry, impl.plugin_name))
    return registry


def _part_register(registry: Registry, kind: str, plugin: str) -> Callable[..., None]:
    def register(name: str, builder: Builder, **options: Any) -> None:
        registry.add_part(kind, plugin, name, builder, **options)

    return register


def _preset_register(registry: Registry, plugin: str) -> Callable[..., None]:
    def register(preset: Preset | dict, **options: Any) -> None:
        registry.add_preset(plugin, preset, **options)

    return register
