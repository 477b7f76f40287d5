"""Readable validation errors: every problem on one line, with the nearest valid key for a typo.

Pydantic says ``optim.lrr: Extra inputs are not permitted``; a user wants to read
``optim.lrr: unknown key; did you mean optim.lr?``. :func:`problems` turns a ``ValidationError``
into such lines, and a ``hint`` callback can say where a misplaced key belongs (a training
config's ``mask_decoder`` belongs under ``preset_overrides``).
"""

from __future__ import annotations

import difflib
import typing
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ValidationError


def problems(exc: ValidationError, model: type[BaseModel] | None = None,
             hint: Callable[[tuple, str], str | None] | None = None) -> list[str]:
    """One line per error of ``exc``; unknown keys get a hint (``hint(loc, key)``) or the closest
    valid key at that level of ``model``."""
    lines = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        where = ".".join(str(p) for p in loc) or "<root>"
        if error["type"] == "extra_forbidden" and loc:
            lines.append(f"{where}: unknown key; {_advice(model, loc, hint)}")
        else:
            lines.append(f"{where}: {error['msg'].removeprefix('Value error, ')}")
    return lines


def _advice(model: type[BaseModel] | None, loc: tuple, hint: Callable[[tuple, str], str | None] | None) -> str:
    key = str(loc[-1])
    if hint is not None:
        placed = hint(loc, key)
        if placed:
            return placed
    parent = _model_at(model, loc[:-1]) if model is not None else None
    if parent is None:
        return "remove it"
    names = [field.alias or name for name, field in parent.model_fields.items()]
    prefix = ".".join(str(p) for p in loc[:-1])
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    if close:
        return f"did you mean {prefix + '.' if prefix else ''}{close[0]}?"
    return f"valid keys here: {', '.join(sorted(names))}"


def _model_at(model: type[BaseModel], path: tuple) -> type[BaseModel] | None:
    """The pydantic model class that validates the mapping at ``path`` inside ``model``."""
    current: Any = model
    for part in path:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = next((f for name, f in current.model_fields.items() if part in (name, f.alias)), None)
        if field is None:
            return None
        current = _model_in(field.annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _model_in(annotation: Any) -> Any:
    """A BaseModel class inside ``Optional[...]`` / ``X | None``, else the annotation itself."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in typing.get_args(annotation):
        if isinstance(argument, type) and issubclass(argument, BaseModel):
            return argument
    return annotation
