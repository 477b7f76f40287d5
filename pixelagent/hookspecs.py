"""Hook specifications: what a pixelagent plugin can provide.

Every hook receives a ``register`` callback and calls it once per thing it provides; builders
are registered, never built models, so loading a plugin stays cheap (no torch, no weights).

A part hook calls ``register(name, builder, *, aliases=(), settings=None, description="")``:

- ``builder(settings, context) -> Part`` is called when an :class:`~pixelagent.Agent` is made;
  ``settings`` is the preset's settings for the part (validated into the ``settings`` pydantic
  model when one is given, else a plain dict) and ``context`` a
  :class:`~pixelagent.registry.BuildContext`.

A plugin module implements any of these with ``@pixelagent.hookimpl``.
"""

from __future__ import annotations

from typing import Any, Callable

import pluggy

hookspec = pluggy.HookspecMarker("pixelagent")
hookimpl = pluggy.HookimplMarker("pixelagent")

Register = Callable[..., None]


@hookspec
def register_visual_encoders(register: Register) -> None:
    """Register :class:`~pixelagent.parts.VisualEncoder` builders (image → visual tokens)."""


@hookspec
def register_llm_backbones(register: Register) -> None:
    """Register :class:`~pixelagent.parts.LLMBackbone` builders (dialogue → reply + hidden states)."""


@hookspec
def register_alignment_strategies(register: Register) -> None:
    """Register :class:`~pixelagent.parts.AlignmentStrategy` builders (reply → decoder prompts)."""


@hookspec
def register_mask_decoders(register: Register) -> None:
    """Register :class:`~pixelagent.parts.MaskDecoder` builders (image + prompts → masks)."""


@hookspec
def register_presets(register: Register) -> None:
    """Register presets: ``register(preset, *, aliases=())`` with a Preset or a dict of one."""


@hookspec(firstresult=True)
def resolve_model_dir(path: str) -> Any:
    """A :class:`~pixelagent.presets.Preset` for a checkpoint folder that is not in pixelagent's
    own ``save_pretrained`` format (another project's release layout, say), or None.

    Called for local folders and downloaded Hub snapshots before pixelagent gives up on them;
    the first plugin that recognises the layout answers. Keep it cheap: read config files, do
    not build models.
    """


@hookspec
def register_commands(cli: Any) -> None:
    """Add commands to the ``pixelagent`` CLI; ``cli`` is the root :class:`typer.Typer` app.

    Import heavy modules inside the command functions: ``pixelagent --help`` loads every plugin.
    """


#: hook name → part kind, for the four part hooks.
PART_HOOKS: dict[str, str] = {
    "register_visual_encoders": "visual_encoder",
    "register_llm_backbones": "llm",
    "register_alignment_strategies": "alignment",
    "register_mask_decoders": "mask_decoder",
}
