"""The published PRIST format: ``test.json``-style dialogues plus one LabelMe JSON per image.

Published record: ``{"img_id": "e1de30143f9c16b6.jpg", "dialogue": [{"from": "human"|"gpt",
"value": str}, ...], "focus": str}``. The segmentation answer carries a bare ``[SEG]``. Masks
come from ``{stem}.json`` LabelMe files (``shapes[].label``, ``shapes[].points``,
``imageHeight``, ``imageWidth``): the official loaders fill every polygon whose label contains
the focus phrase, case-insensitively (``label_match="contains"``). That rule also picks up
longer labels that merely contain the phrase, so files we write are read back with
``label_match="exact"``.
"""

from __future__ import annotations

import json
import os
import re
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageDraw

from pixelagent.data.records import Message, PristRecord, TargetAnnotation
from pixelagent.errors import ConfigError
from pixelagent.markup import OBJ_TOKEN, SEG_TOKEN, format_focus
from pixelagent.mask import Mask

ROLES = {"human": "user", "gpt": "assistant"}
LabelMatch = Literal["contains", "exact"]


def load_published(json_path: str | os.PathLike, *, annotations_dir: str | os.PathLike | None = None,
                   images_prefix: str = "images", split: str = "test", focus_markup: bool = True,
                   label_match: LabelMatch = "contains") -> list[PristRecord]:
    """Canonical records from a published ``test.json``-style file (read unchanged).

    ``focus_markup`` rewrites each bare ``[SEG]`` of an answer as ``[OBJ]{focus}[SEG]`` (the
    MIRAS answer template). Without ``annotations_dir`` the targets carry no mask (the
    published split ships without its LabelMe files).
    """
    path = Path(json_path)
    entries = _read_json_list(path)
    masks = _MaskSource(annotations_dir, label_match)
    return [_record(entry, index, path, masks, images_prefix, split, focus_markup)
            for index, entry in enumerate(entries)]


def _read_json_list(path: Path) -> list[Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, list):
        raise ConfigError(f"{path}: expected a JSON list of dialogues, got {type(data).__name__}")
    return data


def _field(entry: Any, key: str, kind: type, where: str) -> Any:
    if not isinstance(entry, dict) or key not in entry:
        raise ConfigError(f"{where}: missing field {key!r}")
    if not isinstance(entry[key], kind):
        raise ConfigError(f"{where}: field {key!r} should be a {kind.__name__}, got {type(entry[key]).__name__}")
    return entry[key]


def _record(entry: Any, index: int, path: Path, masks: _MaskSource, prefix: str, split: str,
            focus_markup: bool) -> PristRecord:
    where = f"{path}[{index}]"
    img_id = _field(entry, "img_id", str, where)
    focus = _field(entry, "focus", str, where)
    messages = [_message(turn, f"{where}.dialogue[{i}]", focus if focus_markup else None)
                for i, turn in enumerate(_field(entry, "dialogue", list, where))]
    size, target = masks.target(img_id, focus, where)
    try:
        return PristRecord(id=f"prist-{split}-{index:05d}", image=f"{prefix}/{img_id}" if prefix else img_id,
                           image_size=size, messages=messages, focus=focus, targets=[target], split=split)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _message(turn: Any, where: str, focus: str | None) -> Message:
    speaker = _field(turn, "from", str, where)
    if speaker not in ROLES:
        raise ConfigError(f"{where}: field 'from' is {speaker!r}; expected 'human' or 'gpt'")
    text = _field(turn, "value", str, where)
    if focus is not None and ROLES[speaker] == "assistant" and OBJ_TOKEN not in text:
        text = text.replace(SEG_TOKEN, format_focus(focus))
    return Message(role=ROLES[speaker], text=text)


class _MaskSource:
    """LabelMe files of a directory, read once each, turned into focus masks."""

    def __init__(self, directory: str | os.PathLike | None, label_match: LabelMatch) -> None:
        self.directory = None if directory is None else Path(directory)
        self.label_match = label_match
        self._cache: dict[str, dict] = {}

    def target(self, img_id: str, focus: str, where: str) -> tuple[tuple[int, int] | None, TargetAnnotation]:
        if self.directory is None:
            return None, TargetAnnotation(phrase=focus)
        labelme = self._labelme(img_id, where)
        size = (int(labelme["imageHeight"]), int(labelme["imageWidth"]))
        polygons = [[(float(x), float(y)) for x, y in shape["points"]]
                    for shape in labelme.get("shapes", []) if self._matches(shape.get("label", ""), focus)]
        return size, TargetAnnotation(phrase=focus, mask=rasterize(polygons, size), polygons=polygons)

    def _matches(self, label: str, focus: str) -> bool:
        label, focus = label.strip().lower(), focus.strip().lower()
        return focus in label if self.label_match == "contains" else focus == label

    def _labelme(self, img_id: str, where: str) -> dict:
        stem = Path(img_id).stem
        if stem not in self._cache:
            path = self.directory / f"{stem}.json"
            try:
                self._cache[stem] = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise ConfigError(f"{where}: cannot read the LabelMe file {path}: {exc}") from None
            for key in ("imageHeight", "imageWidth"):
                if key not in self._cache[stem]:
                    raise ConfigError(f"{path}: missing field {key!r}")
        return self._cache[stem]


def rasterize(polygons: list[list[tuple[float, float]]], size: tuple[int, int]) -> Mask:
    """Fill polygons (pixel x, y) into a (H, W) mask, as LabelMe's own shape-to-mask does."""
    canvas = Image.new("1", (size[1], size[0]), 0)
    draw = ImageDraw.Draw(canvas)
    for polygon in polygons:
        if len(polygon) >= 3:
            draw.polygon([tuple(p) for p in polygon], outline=1, fill=1)
    return Mask(np.array(canvas, dtype=bool))


# -- export ------------------------------------------------------------------------------------
def export_published(records: Iterable[PristRecord], json_path: str | os.PathLike,
                     annotations_dir: str | os.PathLike) -> int:
    """Write records as a published-style JSON list plus one LabelMe file per image.

    Answers get bare ``[SEG]`` (the phrase moves to ``focus``); each target's polygons become
    shapes labelled with its phrase. Targets without polygons cannot be exported.
    """
    entries, shapes, sizes = [], defaultdict(list), {}
    for record in records:
        img_id = Path(record.image).name
        entries.append({"img_id": img_id, "focus": record.focus, "dialogue": _published_dialogue(record)})
        shapes[img_id] += _shapes(record)
        sizes[img_id] = record.image_size
    Path(json_path).write_text(json.dumps(entries, indent=1, ensure_ascii=False), encoding="utf-8")
    for img_id, image_shapes in shapes.items():
        _write_labelme(Path(annotations_dir), img_id, image_shapes, sizes[img_id])
    return len(entries)


def _published_dialogue(record: PristRecord) -> list[dict]:
    bare = re.compile(rf"{re.escape(OBJ_TOKEN)}.*?{re.escape(SEG_TOKEN)}", re.DOTALL)
    return [{"from": "human" if m.role == "user" else "gpt",
             "value": m.text if m.role == "user" else bare.sub(SEG_TOKEN, m.text)} for m in record.messages]


def _shapes(record: PristRecord) -> list[dict]:
    shapes = []
    for target in record.targets:
        if not target.polygons:
            raise ConfigError(f"record {record.id}: target {target.phrase!r} has no polygons; the "
                              "published format stores LabelMe polygons, so it cannot be exported")
        shapes += [{"label": target.phrase, "points": [list(p) for p in polygon], "shape_type": "polygon"}
                   for polygon in target.polygons]
    return shapes


def _write_labelme(directory: Path, img_id: str, shapes: list[dict], size: tuple[int, int] | None) -> None:
    if size is None:
        raise ConfigError(f"image {img_id}: no image_size, which LabelMe files need")
    directory.mkdir(parents=True, exist_ok=True)
    unique = list({json.dumps(s, sort_keys=True): s for s in shapes}.values())
    labelme = {"version": "5.4.1", "shapes": unique, "imagePath": img_id, "imageData": None,
               "imageHeight": size[0], "imageWidth": size[1]}
    (directory / f"{Path(img_id).stem}.json").write_text(json.dumps(labelme, indent=1))
