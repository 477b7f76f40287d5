"""The published PRIST format: ``test.json``-style dialogues plus one LabelMe JSON per image.

Published record: ``{"img_id": "e1de30143f9c16b6.jpg", "dialogue": [{"from": "human"|"gpt",
"value": str}, ...], "focus": str}``. The segmentation answer carries a bare ``[SEG]``. Masks
come from ``{stem}.json`` LabelMe files (``shapes[].label``, ``shapes[].points``,
``shapes[].shape_type``, ``imageHeight``, ``imageWidth``): the official loaders fill every shape
whose label contains the focus phrase, case-insensitively (``label_match="contains"``). That
rule also picks up longer labels that merely contain the phrase, so files we write are read
back with ``label_match="exact"``.

Everything is validated before anything is allocated or written:

- whole-file problems (not UTF-8, not JSON, not a list, a FIFO or device, over the size limit)
  raise :class:`~pixelagent.errors.ConfigError` at once;
- per record: ``img_id`` must be a path inside the images folder
  (:func:`~pixelagent.data.records.check_relative_path`), the focus must not be blank (it would
  match every label), and with LabelMe files: ``imageHeight`` and ``imageWidth`` positive
  integers whose product is within :data:`~pixelagent.images.DEFAULT_MAX_PIXELS`; the shapes
  matching the focus are ``polygon`` (at least 3 points, non-zero area), ``rectangle`` (two
  corners) or ``circle`` (centre, then a point on the rim), with finite numeric ``[x, y]``
  points; ``line``, ``linestrip``, ``point`` and other shapes cannot be filled and are refused
  when they match; a focus that matches no shape (or only shapes outside the image) is refused,
  naming the labels present, instead of giving an empty mask.

:func:`iter_published` yields each record or a :class:`Skipped` naming why (the CLI writes the
good records and reports the others); :func:`load_published` raises at the first bad record.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union

import numpy as np
from PIL import Image, ImageDraw
from pydantic import ValidationError

from pixelagent.data.records import (Message, PristRecord, TargetAnnotation, check_relative_path,
                                     describe_validation_error)
from pixelagent.errors import ConfigError
from pixelagent.files import read_text
from pixelagent.images import DEFAULT_MAX_PIXELS
from pixelagent.markup import OBJ_TOKEN, SEG_TOKEN, format_focus
from pixelagent.mask import Mask

ROLES = {"human": "user", "gpt": "assistant"}
LabelMatch = Literal["contains", "exact"]

#: Largest LabelMe file read: 256 MiB (one image's shapes, with the image itself embedded as
#: base64 at most: tens of MB for a large photo).
MAX_LABELME_BYTES = 256 << 20
#: Coordinates further than this from the origin are refused: no image is that large, and
#: Pillow's drawing wraps around past 2**31 (a huge polygon would fill one pixel, not the image).
MAX_COORDINATE = 1e9
#: Shape types that can be filled into a mask; LabelMe's others are lines and points.
FILLED_SHAPES = ("polygon", "rectangle", "circle")
_CIRCLE_VERTICES = 64  # the polygon kept (for export) for a circle; the mask is the exact disc


class NoMatchingShape(ConfigError):
    """A record's focus matches no fillable shape of its LabelMe file (the mask would be empty)."""


@dataclass(frozen=True)
class Skipped:
    """A published record that could not be imported: ``error`` says why, naming the file and
    record (``test.json[12]``) and, when it is the culprit, the LabelMe file. ``id`` is the id
    the record would have had."""

    index: int
    id: str
    where: str
    error: ConfigError


def load_published(json_path: str | os.PathLike, *, annotations_dir: str | os.PathLike | None = None,
                   images_prefix: str = "images", split: str = "test", focus_markup: bool = True,
                   label_match: LabelMatch = "contains") -> list[PristRecord]:
    """Canonical records from a published ``test.json``-style file (read unchanged).

    ``focus_markup`` rewrites each bare ``[SEG]`` of an answer as ``[OBJ]{focus}[SEG]`` (the
    MIRAS answer template). Without ``annotations_dir`` the targets carry no mask (the
    published split ships without its LabelMe files). The first bad record raises its
    ConfigError; :func:`iter_published` skips such records instead.
    """
    records = []
    for item in iter_published(json_path, annotations_dir=annotations_dir, images_prefix=images_prefix,
                               split=split, focus_markup=focus_markup, label_match=label_match):
        if isinstance(item, Skipped):
            raise item.error
        records.append(item)
    return records


def iter_published(json_path: str | os.PathLike, *, annotations_dir: str | os.PathLike | None = None,
                   images_prefix: str = "images", split: str = "test", focus_markup: bool = True,
                   label_match: LabelMatch = "contains") -> Iterator[Union[PristRecord, Skipped]]:
    """Each entry of a published file as a record, or as :class:`Skipped` when it is bad.

    The file itself and ``images_prefix`` are checked here, before the first record: a
    problem with them raises ConfigError at once.
    """
    path = Path(json_path)
    if images_prefix:
        check_relative_path(images_prefix, "--images-prefix")
    entries = _read_json_list(path)
    masks = _MaskSource(annotations_dir, label_match)
    return _records(entries, path, masks, images_prefix, split, focus_markup)


def _records(entries: list[Any], path: Path, masks: _MaskSource, prefix: str, split: str,
             focus_markup: bool) -> Iterator[Union[PristRecord, Skipped]]:
    for index, entry in enumerate(entries):
        where = f"{path}[{index}]"
        try:
            yield _record(entry, _record_id(split, index), where, masks, prefix, split, focus_markup)
        except ConfigError as exc:
            yield Skipped(index, _record_id(split, index), where, exc)


def _record_id(split: str, index: int) -> str:
    return f"prist-{split}-{index:05d}"


def _read_json_list(path: Path) -> list[Any]:
    text = read_text(path, "published PRIST file")
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path} is nested too deeply to be a published PRIST file") from None
    if not isinstance(data, list):
        raise ConfigError(f"{path}: expected a JSON list of dialogues, got {type(data).__name__}")
    return data


def _field(entry: Any, key: str, kind: type, where: str) -> Any:
    if not isinstance(entry, dict) or key not in entry:
        raise ConfigError(f"{where}: missing field {key!r}")
    if not isinstance(entry[key], kind):
        raise ConfigError(f"{where}: field {key!r} should be a {kind.__name__}, got {type(entry[key]).__name__}")
    return entry[key]


def _record(entry: Any, record_id: str, where: str, masks: _MaskSource, prefix: str, split: str,
            focus_markup: bool) -> PristRecord:
    img_id = _field(entry, "img_id", str, where)
    image = f"{prefix.rstrip('/')}/{img_id}" if prefix else img_id
    try:
        check_relative_path(img_id, "img_id")
        check_relative_path(image, "image path")
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    focus = _field(entry, "focus", str, where)
    if not focus.strip():
        raise ConfigError(f"{where}: field 'focus' is empty; it would match every label (give the "
                          "target's phrase)")
    messages = [_message(turn, f"{where}.dialogue[{i}]", focus if focus_markup else None)
                for i, turn in enumerate(_field(entry, "dialogue", list, where))]
    size, target = masks.target(img_id, focus, where)
    try:
        return PristRecord(id=record_id, image=image, image_size=size, messages=messages,
                           focus=focus, targets=[target], split=split)
    except ValidationError as exc:
        raise ConfigError(f"{where}: {describe_validation_error(exc)}") from None
    except ValueError as exc:
        raise ConfigError(f"{where}: {' '.join(str(exc).split())}") from None


def _message(turn: Any, where: str, focus: str | None) -> Message:
    speaker = _field(turn, "from", str, where)
    if speaker not in ROLES:
        raise ConfigError(f"{where}: field 'from' is {_short(speaker)}; expected 'human' or 'gpt'")
    text = _field(turn, "value", str, where)
    if focus is not None and ROLES[speaker] == "assistant" and OBJ_TOKEN not in text:
        text = text.replace(SEG_TOKEN, format_focus(focus))
    return Message(role=ROLES[speaker], text=text)


def _short(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters, for error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


# -- LabelMe -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Shape:
    """One fillable shape: its outline (kept as the target's polygon) and how to draw it."""

    polygon: list[tuple[float, float]]
    circle: tuple[float, float, float] | None = None  # (cx, cy, r): drawn as a disc, like LabelMe


class _MaskSource:
    """LabelMe files of a directory, read and checked once each, turned into focus masks."""

    def __init__(self, directory: str | os.PathLike | None, label_match: LabelMatch) -> None:
        self.directory = None if directory is None else Path(directory)
        self.label_match = label_match
        self._cache: dict[str, tuple[dict, tuple[int, int]] | ConfigError] = {}

    def target(self, img_id: str, focus: str, where: str) -> tuple[tuple[int, int] | None, TargetAnnotation]:
        if self.directory is None:
            return None, TargetAnnotation(phrase=focus)
        path, labelme, size = self._labelme(img_id, where)
        shapes = self._shapes(labelme, focus, path, size, where)
        mask = _draw(shapes, size)
        if mask.is_empty:
            raise NoMatchingShape(f"{where}: LabelMe file {path}: the shapes matching focus {_short(focus)} "
                                  f"lie outside the image ({size[0]}x{size[1]}, HxW); the mask would be empty")
        return size, TargetAnnotation(phrase=focus, mask=mask, polygons=[s.polygon for s in shapes])

    def _matches(self, label: str, focus: str) -> bool:
        label, focus = label.strip().lower(), focus.strip().lower()
        return focus in label if self.label_match == "contains" else focus == label

    def _labelme(self, img_id: str, where: str) -> tuple[Path, dict, tuple[int, int]]:
        stem = Path(img_id).stem
        path = self.directory / f"{stem}.json"
        if stem not in self._cache:
            try:
                self._cache[stem] = _read_labelme(path)
            except ConfigError as exc:
                self._cache[stem] = exc
        cached = self._cache[stem]
        if isinstance(cached, ConfigError):
            raise ConfigError(f"{where}: {cached}")
        return path, *cached

    def _shapes(self, labelme: dict, focus: str, path: Path, size: tuple[int, int], where: str) -> list[_Shape]:
        shapes, labels = [], []
        for i, shape in enumerate(labelme.get("shapes") or []):
            label = shape.get("label", "")
            labels.append(label)
            if not self._matches(label, focus):
                continue
            context = f"{where}: LabelMe file {path}: shapes[{i}] (label {_short(label)})"
            shapes.append(_shape(shape, context))
        if not shapes:
            present = sorted({label.strip() for label in labels if label.strip()})
            shown = ", ".join(_short(label, 40) for label in present[:12]) + \
                (f" and {len(present) - 12} more" if len(present) > 12 else "")
            raise NoMatchingShape(
                f"{where}: LabelMe file {path}: no shape's label {'contains' if self.label_match == 'contains' else 'is'} "
                f"the focus {_short(focus)} (labels there: {shown or 'none'}); fix the focus or the labels")
        return shapes


def _read_labelme(path: Path) -> tuple[dict, tuple[int, int]]:
    """The parsed LabelMe file and its (H, W), checked before anything is allocated."""
    text = read_text(path, "LabelMe file", max_bytes=MAX_LABELME_BYTES)
    try:
        labelme = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"LabelMe file {path} is not valid JSON: {exc}") from None
    except RecursionError:
        raise ConfigError(f"LabelMe file {path} is nested too deeply to be a LabelMe file") from None
    if not isinstance(labelme, dict):
        raise ConfigError(f"LabelMe file {path}: expected a JSON object, got {type(labelme).__name__}")
    size = tuple(_side(labelme, key, path) for key in ("imageHeight", "imageWidth"))
    if size[0] * size[1] > DEFAULT_MAX_PIXELS:
        raise ConfigError(f"LabelMe file {path}: imageHeight x imageWidth is {size[0]}x{size[1]} = "
                          f"{size[0] * size[1]:,} pixels, over the limit of {DEFAULT_MAX_PIXELS:,} "
                          "(pixelagent.images.DEFAULT_MAX_PIXELS); check the file")
    shapes = labelme.get("shapes")
    if shapes is not None and not isinstance(shapes, list):
        raise ConfigError(f"LabelMe file {path}: 'shapes' should be a list, got {type(shapes).__name__}")
    for i, shape in enumerate(shapes or []):
        if not isinstance(shape, dict):
            raise ConfigError(f"LabelMe file {path}: shapes[{i}] should be an object, got {type(shape).__name__}")
        if not isinstance(shape.get("label", ""), str):
            raise ConfigError(f"LabelMe file {path}: shapes[{i}].label should be a string, got "
                              f"{type(shape['label']).__name__}")
    return labelme, size


def _side(labelme: dict, key: str, path: Path) -> int:
    if key not in labelme:
        raise ConfigError(f"LabelMe file {path}: missing field {key!r}")
    value = labelme[key]
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"LabelMe file {path}: {key} must be a positive integer, got {_short(value)}")
    return value


def _shape(shape: dict, where: str) -> _Shape:
    """A LabelMe shape matching the focus, checked and turned into a fillable :class:`_Shape`."""
    kind = shape.get("shape_type") or "polygon"  # absent or null: LabelMe's default
    if kind not in FILLED_SHAPES:
        raise ConfigError(f"{where}: shape_type {_short(kind)} cannot be filled into a mask (only "
                          f"{', '.join(FILLED_SHAPES)} can); relabel it or draw a polygon")
    points = _points(shape.get("points"), where)
    if kind == "polygon":
        if len(points) < 3:
            raise ConfigError(f"{where}: a polygon needs at least 3 points, this one has {len(points)}")
        if abs(_area(points)) < 1e-9:
            raise ConfigError(f"{where}: the polygon has zero area (its points lie on one line)")
        return _Shape(points)
    if len(points) != 2:
        what = "two corners" if kind == "rectangle" else "the centre and a point on the rim"
        raise ConfigError(f"{where}: a {kind} needs exactly 2 points ({what}), this one has {len(points)}")
    (x0, y0), (x1, y1) = points
    if kind == "rectangle":
        if x0 == x1 or y0 == y1:
            raise ConfigError(f"{where}: the rectangle has zero area (its corners share an x or a y)")
        left, right, top, bottom = min(x0, x1), max(x0, x1), min(y0, y1), max(y0, y1)
        return _Shape([(left, top), (right, top), (right, bottom), (left, bottom)])
    radius = math.hypot(x1 - x0, y1 - y0)
    if radius == 0:
        raise ConfigError(f"{where}: the circle has zero radius (its two points coincide)")
    if max(abs(x0), abs(y0)) + radius > MAX_COORDINATE:
        raise ConfigError(f"{where}: the circle reaches beyond ±{MAX_COORDINATE:g}, far outside any image")
    outline = [(x0 + radius * math.cos(2 * math.pi * k / _CIRCLE_VERTICES),
                y0 + radius * math.sin(2 * math.pi * k / _CIRCLE_VERTICES)) for k in range(_CIRCLE_VERTICES)]
    return _Shape(outline, circle=(x0, y0, radius))


def _points(points: Any, where: str) -> list[tuple[float, float]]:
    """``points`` as (x, y) floats: a list of [x, y] pairs of finite numbers within range."""
    if not isinstance(points, list):
        raise ConfigError(f"{where}: 'points' should be a list of [x, y] pairs, got {type(points).__name__}")
    result = []
    for k, point in enumerate(points):
        if not isinstance(point, (list, tuple)) or len(point) != 2:
            raise ConfigError(f"{where}: points[{k}] should be an [x, y] pair, got {_short(point)}")
        pair = []
        for value in point:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{where}: points[{k}] holds {_short(value)}, not a number")
            try:
                number = float(value)
            except OverflowError:
                number = math.inf
            if not math.isfinite(number):
                raise ConfigError(f"{where}: points[{k}] holds {_short(value)}, not a finite number")
            if abs(number) > MAX_COORDINATE:
                raise ConfigError(f"{where}: points[{k}] holds {number:g}, far outside any image "
                                  f"(beyond ±{MAX_COORDINATE:g})")
            pair.append(number)
        result.append((pair[0], pair[1]))
    return result


def _area(points: list[tuple[float, float]]) -> float:
    """Signed area (shoelace formula)."""
    return 0.5 * sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(points, points[1:] + points[:1]))


def _draw(shapes: list[_Shape], size: tuple[int, int]) -> Mask:
    """Fill shapes into a (H, W) mask as LabelMe's own shape-to-mask does (outline included)."""
    canvas = _canvas(size)
    draw = ImageDraw.Draw(canvas)
    large = []
    for shape in shapes:
        if shape.circle is None:
            draw.polygon(shape.polygon, outline=1, fill=1)
        elif shape.circle[2] <= 4 * max(size):
            cx, cy, r = shape.circle
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=1, fill=1)
        else:  # Pillow's ellipse takes time in proportion to the radius: fill rows ourselves
            large.append(shape.circle)
    array = np.array(canvas, dtype=bool)
    for circle in large:
        _fill_disc(array, *circle)
    return Mask(array)


def _fill_disc(array: np.ndarray, cx: float, cy: float, r: float, chunk: int = 4096) -> None:
    """Set the pixels whose centre lies in the disc, a block of rows at a time (bounded memory)."""
    height, width = array.shape
    top, bottom = max(0, math.ceil(cy - r)), min(height - 1, math.floor(cy + r))
    columns = np.arange(width)
    for start in range(top, bottom + 1, chunk):
        rows = np.arange(start, min(bottom + 1, start + chunk))
        half = np.sqrt(np.maximum(r * r - (rows - cy) ** 2, 0.0))
        low, high = np.ceil(cx - half), np.floor(cx + half)
        array[rows] |= (columns >= low[:, None]) & (columns <= high[:, None])


def _canvas(size: tuple[int, int]) -> Image.Image:
    height, width = size
    if height * width > DEFAULT_MAX_PIXELS:
        raise ConfigError(f"a {height}x{width} mask is over the limit of {DEFAULT_MAX_PIXELS:,} pixels")
    return Image.new("1", (width, height), 0)


def rasterize(polygons: list[list[tuple[float, float]]], size: tuple[int, int]) -> Mask:
    """Fill polygons (pixel x, y) into a (H, W) mask, as LabelMe's own shape-to-mask does."""
    canvas = _canvas(size)
    draw = ImageDraw.Draw(canvas)
    for polygon in polygons:
        if len(polygon) >= 3:
            draw.polygon([tuple(p) for p in polygon], outline=1, fill=1)
    return Mask(np.array(canvas, dtype=bool))


# -- export ------------------------------------------------------------------------------------
#: How the published file is laid out: ``json.dumps(entries, indent=4, ensure_ascii=False)``,
#: keys in the order ``img_id``, ``dialogue``, ``focus``, no newline at the end. A split imported
#: with :func:`load_published` and exported again is byte-identical to the published file.
PUBLISHED_INDENT = 4


def export_published(records: Iterable[PristRecord], json_path: str | os.PathLike,
                     annotations_dir: str | os.PathLike) -> int:
    """Write records as a published-style JSON list plus one LabelMe file per image.

    Answers get bare ``[SEG]`` (the phrase moves to ``focus``); each target's polygons become
    shapes labelled with its phrase. A target with a mask but no polygons cannot be exported
    (the published format stores polygons); a target with neither (the published split as
    shipped, without its LabelMe files) gives no shape, and an image without shapes no LabelMe
    file. ``img_id`` is the image's path below ``images/`` (its name for our datasets).
    """
    entries, shapes, sizes = [], defaultdict(list), {}
    for record in records:
        img_id = _img_id(record.image)
        entries.append({"img_id": img_id, "dialogue": _published_dialogue(record), "focus": record.focus})
        shapes[img_id] += _shapes(record)
        sizes[img_id] = record.image_size
    for img_id, image_shapes in shapes.items():
        if image_shapes:
            _write_labelme(Path(annotations_dir), img_id, image_shapes, sizes[img_id])
    text = json.dumps(entries, indent=PUBLISHED_INDENT, ensure_ascii=False)
    _write_atomic(Path(json_path), text)  # last: complete or absent
    return len(entries)


def _img_id(image: str) -> str:
    return image.split("/", 1)[1] if image.startswith("images/") else image


def _published_dialogue(record: PristRecord) -> list[dict]:
    bare = re.compile(rf"{re.escape(OBJ_TOKEN)}.*?{re.escape(SEG_TOKEN)}", re.DOTALL)
    return [{"from": "human" if m.role == "user" else "gpt",
             "value": m.text if m.role == "user" else bare.sub(SEG_TOKEN, m.text)} for m in record.messages]


def _shapes(record: PristRecord) -> list[dict]:
    shapes = []
    for target in record.targets:
        if not target.polygons and target.mask is None:
            continue  # nothing annotated yet: nothing to lose
        if not target.polygons:
            raise ConfigError(f"record {record.id}: target {target.phrase!r} has no polygons; the "
                              "published format stores LabelMe polygons, so it cannot be exported")
        shapes += [{"label": target.phrase, "points": [list(p) for p in polygon], "shape_type": "polygon"}
                   for polygon in target.polygons]
    return shapes


def _write_labelme(directory: Path, img_id: str, shapes: list[dict], size: tuple[int, int] | None) -> None:
    if size is None:
        raise ConfigError(f"image {img_id}: no image_size, which LabelMe files need")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the annotations folder {directory}: {exc.strerror or exc}") from None
    unique = list({json.dumps(s, sort_keys=True): s for s in shapes}.values())
    labelme = {"version": "5.4.1", "shapes": unique, "imagePath": img_id, "imageData": None,
               "imageHeight": size[0], "imageWidth": size[1]}
    _write_atomic(directory / f"{Path(img_id).stem}.json", json.dumps(labelme, indent=1))


def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        try:
            temporary.write_bytes(text.encode("utf-8"))  # no newline translation: byte-exact everywhere
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None
