"""Import ``segment_anything.modeling`` without running ``segment_anything/__init__.py``.

Why: the package ``__init__`` imports its predictor and automatic mask generator, which import
torchvision; torchvision is not a dependency of pixelagent and does not import beside every
torch build. The model classes we need (``segment_anything.modeling``) import only torch.
"""

from __future__ import annotations

import importlib
import sys
import threading
import types
from importlib.util import find_spec

from pixelagent.errors import PluginError

PACKAGE = "segment_anything"
MODELING = "segment_anything.modeling"

_lock = threading.Lock()


class SegmentAnythingMissingError(PluginError):
    """The ``segment-anything`` package, which holds SAM's model classes, is not installed."""


def import_sam_modeling() -> types.ModuleType:
    """The ``segment_anything.modeling`` module (``Sam``, ``ImageEncoderViT``, ...).

    Raises:
        SegmentAnythingMissingError: segment-anything is not installed.
    """
    with _lock:
        if sys.modules.get(MODELING) is not None:
            return sys.modules[MODELING]
        if PACKAGE in sys.modules:
            if sys.modules[PACKAGE] is None:  # import explicitly blocked
                raise _missing()
            # The real package is already imported (torchvision worked): nothing to avoid.
            return importlib.import_module(MODELING)
        return _import_under_stand_in()


def _import_under_stand_in() -> types.ModuleType:
    spec = find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise _missing()
    # A bare package module with the real __path__ lets the import system find and run
    # segment_anything/modeling/*.py (whose relative imports stay inside modeling/) while the
    # package's own __init__ never runs.
    stand_in = types.ModuleType(PACKAGE, "stand-in for segment_anything, see pixelagent_sam.importing")
    stand_in.__path__ = list(spec.submodule_search_locations)
    sys.modules[PACKAGE] = stand_in
    try:
        return importlib.import_module(MODELING)
    finally:
        # Take the stand-in away again: a later `import segment_anything` (where torchvision is
        # installed) must get the real package, whose __init__ then reuses the modeling modules
        # already in sys.modules, so the classes stay the same objects.
        if sys.modules.get(PACKAGE) is stand_in:
            del sys.modules[PACKAGE]


def _missing() -> SegmentAnythingMissingError:
    return SegmentAnythingMissingError(
        "the sam mask decoder needs the segment-anything package, which is not installed; "
        "install it with: pip install segment-anything"
    )
