"""The plugin manager: built-ins, entry points, and the environment switches.

- Built-in core parts are registered by module path (:data:`BUILTIN_PLUGINS`).
- Installed plugins are found through the ``pixelagent`` entry-point group; the plugins shipped
  in this distribution (``plugins/``) are found the same way as third-party ones.
- ``PIXELAGENT_DISABLE_PLUGIN_AUTOLOAD=1`` loads no entry points at all.
- ``PIXELAGENT_PLUGINS=miras,lisa`` loads only the named entry points (empty: none).

A plugin whose import fails is skipped with a warning (a broken third-party package must not
break the CLI); :func:`plugin_failures` keeps the reasons for ``pixelagent plugins``.
"""

from __future__ import annotations

import importlib
import os
import threading
import warnings
from importlib.metadata import entry_points

import pluggy

from pixelagent import hookspecs

ENTRY_POINT_GROUP = "pixelagent"
DISABLE_AUTOLOAD_ENV = "PIXELAGENT_DISABLE_PLUGIN_AUTOLOAD"
ALLOW_LIST_ENV = "PIXELAGENT_PLUGINS"
BUILTIN_PLUGINS: tuple[str, ...] = ("pixelagent.builtins",)

pm = pluggy.PluginManager("pixelagent")
pm.add_hookspecs(hookspecs)

_load_lock = threading.Lock()
_loaded = False
_failures: dict[str, str] = {}


class PluginLoadWarning(UserWarning):
    """An installed plugin could not be imported and was skipped."""


def load_plugins() -> None:
    """Register built-ins and installed plugins once per process (later calls do nothing)."""
    global _loaded
    with _load_lock:
        if _loaded:
            return
        _loaded = True
        for module_path in BUILTIN_PLUGINS:
            if pm.get_plugin(module_path) is None:
                pm.register(importlib.import_module(module_path), name=module_path)
        if not _env_flag(DISABLE_AUTOLOAD_ENV):
            _load_entry_points(_allow_list())


def _load_entry_points(allowed: set[str] | None) -> None:
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if (allowed is not None and ep.name not in allowed) or pm.get_plugin(ep.name) is not None:
            continue
        try:
            pm.register(ep.load(), name=ep.name)
        except Exception as exc:  # any import-time failure of someone else's code
            _failures[ep.name] = f"{type(exc).__name__}: {exc}"
            warnings.warn(
                f"pixelagent plugin {ep.name!r} ({ep.value}) failed to load and was skipped: "
                f"{_failures[ep.name]}",
                PluginLoadWarning,
                stacklevel=3,
            )


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in {"", "0", "false", "no"}


def _allow_list() -> set[str] | None:
    raw = os.environ.get(ALLOW_LIST_ENV)
    if raw is None:
        return None
    return {name.strip() for name in raw.split(",") if name.strip()}


def plugin_failures() -> dict[str, str]:
    """Entry-point name → why it failed to load, for plugins skipped by :func:`load_plugins`."""
    return dict(_failures)


def plugin_names() -> list[str]:
    """Names of the registered plugins (built-ins by module path, others by entry-point name)."""
    load_plugins()
    return sorted(name for name, _ in pm.list_name_plugin())
