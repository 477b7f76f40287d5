"""Referring segmentation (refCOCO, refCOCO+, refCOCOg) as segmentation dialogues.

Inputs, as the refer toolkit ships them::

    refs(unc).p | refs(umd).p | refs(google).p   pickle: list of {"ref_id", "ann_id", "image_id",
                                                 "split", "category_id", "file_name",
                                                 "sentences": [{"sent", "raw", "tokens", "sent_id"}]}
    instances.json                               COCO: images [{id, file_name, height, width}],
                                                 annotations [{id, image_id, segmentation}], categories
    images_dir                                   COCO train2014 photos

The pickle is read with :class:`SafeUnpickler`, which builds only builtin containers and
scalars: any global lookup (the way a pickle runs code) is refused with a ConfigError.

Example ``i`` is the ``i``-th ref of ``split`` (file order): one to ``max_sentences`` of its
sentences, chosen with ``seeded_rng(seed, i)``, each one turn "Can you segment {sent} ...?" →
"Sure, it is [OBJ]{sent}[SEG].", and the annotation's mask once per turn. The image path comes
from ``instances.json`` (a ref's own ``file_name`` carries an ``_<ann_id>`` suffix that names no
file).
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as coco_mask

from pixelagent.data.examples import (TrainingExample, check_image_name, check_images_exist, check_index,
                                      existing_path, image_in, read_json, seeded_rng)
from pixelagent.errors import ConfigError, MaskError
from pixelagent.files import read_bytes
from pixelagent.images import DEFAULT_MAX_PIXELS
from pixelagent.markup import format_focus
from pixelagent.mask import Mask

SPLITS = ("train", "val", "test", "testA", "testB")
QUESTIONS = (
    "Can you segment {sent} in this image?",
    "Please segment {sent} in this image.",
    "Where is {sent} in this picture? Please respond with a segmentation mask.",
    "Which region is {sent}? Please output its segmentation mask.",
)
ANSWERS = ("Sure, it is {focus}.", "It is {focus}.", "Sure, {focus}.")


class SafeUnpickler(pickle.Unpickler):
    """Builds lists, dicts, tuples, str, bytes, numbers, bools and None; refuses every global."""

    def find_class(self, module: str, name: str) -> Any:
        # Every way a pickle executes code (REDUCE, BUILD, INST, OBJ, NEWOBJ) starts with a global.
        raise pickle.UnpicklingError(f"refusing to load the global {module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refusing a persistent id")


def load_refs(path: str | Path) -> list[dict]:
    """The refs list of a ``refs(*).p`` pickle, read without running any of its code."""
    path = existing_path(path, "refs pickle")
    try:
        # Python 2 pickles (as published) hold byte strings: decode them as UTF-8 text.
        refs = SafeUnpickler(io.BytesIO(read_bytes(path, "refs pickle")), encoding="utf-8").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, UnicodeDecodeError, OverflowError) as exc:
        raise ConfigError(f"{path} is not a plain refs pickle: {exc}") from None
    if not isinstance(refs, list):
        raise ConfigError(f"{path}: expected a list of refs, got {type(refs).__name__}")
    return refs


class ReferDataset:
    """One dialogue per referring expression object of a split (see the module docstring)."""

    def __init__(self, refs: str | Path, instances: str | Path, images_dir: str | Path, *,
                 split: str = "train", name: str = "refer", max_sentences: int = 3, seed: int = 0,
                 check_images: bool = False) -> None:
        if split not in SPLITS:
            raise ConfigError(f"unknown refer split {split!r}; use one of {', '.join(SPLITS)}")
        if max_sentences < 1:
            raise ConfigError(f"max_sentences must be at least 1, got {max_sentences}")
        self.name, self.split, self.seed, self.max_sentences = name, split, seed, max_sentences
        self.images_dir = existing_path(images_dir, "images directory", "dir")
        self.instances_path = existing_path(instances, "COCO instances file")
        self.images, self.annotations = _index_instances(read_json(self.instances_path, "COCO instances file"),
                                                         self.instances_path)
        self.refs = self._select(refs, split)
        if check_images:
            names = sorted({self.images[r["image_id"]]["file_name"] for r in self.refs})
            check_images_exist(self.images_dir, names, str(self.instances_path))

    def _select(self, path: str | Path, split: str) -> list[dict]:
        """The refs of ``split``, each checked against the instances file."""
        all_refs = load_refs(path)
        refs = [ref for ref in all_refs if isinstance(ref, dict) and ref.get("split") == split]
        for number, ref in enumerate(refs):
            self._check_ref(ref, f"{path}: ref {ref.get('ref_id', number)}")
        if not refs:
            raise ConfigError(f"{path}: no refs in split {split!r} ({len(all_refs)} refs in the file)")
        return refs

    def _check_ref(self, ref: dict, where: str) -> None:
        for key in ("ann_id", "image_id", "sentences"):
            if key not in ref:
                raise ConfigError(f"{where}: missing field {key!r}")
        if ref["image_id"] not in self.images:
            raise ConfigError(f"{where}: image_id {ref['image_id']} is not in {self.instances_path}")
        if ref["ann_id"] not in self.annotations:
            raise ConfigError(f"{where}: ann_id {ref['ann_id']} is not in {self.instances_path}")
        sentences = ref["sentences"]
        if not isinstance(sentences, list) or not sentences or not all(_sentence(s) for s in sentences):
            raise ConfigError(f"{where}: 'sentences' must be a non-empty list of {{'sent': str, ...}}")

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, index: int) -> TrainingExample:
        i = check_index(index, len(self), self.name)
        ref = self.refs[i]
        rng = seeded_rng(self.seed, i)
        sentences = [_sentence(s) for s in ref["sentences"]]
        chosen = rng.sample(sentences, min(self.max_sentences, len(sentences)))
        turns = [(rng.choice(QUESTIONS).format(sent=s), rng.choice(ANSWERS).format(focus=format_focus(s)))
                 for s in chosen]
        mask = self.mask(ref["ann_id"])
        image = self.images[ref["image_id"]]
        return TrainingExample(source=self.name, id=str(ref.get("ref_id", i)), turns=turns,
                               masks=np.repeat(mask[None], len(turns), axis=0),
                               image=image_in(self.images_dir, image["file_name"], str(self.instances_path)),
                               exif_orientation=False)

    def mask(self, ann_id: Any) -> np.ndarray:
        """The annotation's mask, bool ``(H, W)`` in its image's size."""
        annotation = self.annotations[ann_id]
        image = self.images[annotation["image_id"]]
        height, width = image["height"], image["width"]
        if not (isinstance(height, int) and isinstance(width, int) and height > 0 and width > 0
                and height * width <= DEFAULT_MAX_PIXELS):
            raise ConfigError(f"{self.instances_path}: image {image['id']}: height x width {height!r}x{width!r} "
                              f"must be positive integers with at most {DEFAULT_MAX_PIXELS:,} pixels")
        try:
            return decode_segmentation(annotation["segmentation"], image["height"], image["width"])
        except (MaskError, ValueError, TypeError, KeyError) as exc:
            raise ConfigError(f"{self.instances_path}: annotation {ann_id}: bad segmentation: {exc}") from None


def _sentence(entry: Any) -> str | None:
    """The normalised ``sent`` of a sentence dict (what LISA and the refer toolkit use)."""
    if isinstance(entry, dict) and isinstance(entry.get("sent"), str) and entry["sent"].strip():
        return entry["sent"].strip()
    return None


def decode_segmentation(segmentation: Any, height: int, width: int) -> np.ndarray:
    """A COCO ``segmentation`` (polygons, uncompressed or compressed RLE) as bool ``(H, W)``."""
    if isinstance(segmentation, list):
        polygons = [p for p in segmentation if isinstance(p, list) and len(p) >= 6]
        if not polygons:
            raise ValueError("no polygon with at least 3 points")
        rle = coco_mask.merge(coco_mask.frPyObjects(polygons, height, width))
        return coco_mask.decode(rle).astype(bool)
    # RLE goes through Mask.from_rle, which checks the run lengths that pycocotools trusts blindly.
    array = Mask.from_rle(segmentation).array
    if array.shape != (height, width):
        raise ValueError(f"RLE size {array.shape} differs from the image's {(height, width)}")
    return array


def _index_instances(data: Any, path: Path) -> tuple[dict, dict]:
    """``({image_id: image}, {ann_id: annotation})`` of a COCO instances file."""
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("annotations"), list):
        raise ConfigError(f"{path}: expected a COCO instances file with 'images' and 'annotations' lists")
    images, annotations = {}, {}
    for k, image in enumerate(data["images"]):
        if not isinstance(image, dict) or not all(key in image for key in ("id", "file_name", "height", "width")):
            raise ConfigError(f"{path}: images[{k}] needs id, file_name, height and width")
        check_image_name(image["file_name"], f"{path}: images[{k}].file_name")
        images[image["id"]] = image
    for k, annotation in enumerate(data["annotations"]):
        if not isinstance(annotation, dict) or not all(key in annotation for key in ("id", "image_id",
                                                                                       "segmentation")):
            raise ConfigError(f"{path}: annotations[{k}] needs id, image_id and segmentation")
        annotations[annotation["id"]] = annotation
    return images, annotations
