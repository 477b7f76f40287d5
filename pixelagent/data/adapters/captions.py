"""Image captions in the COCO captions format (``captions_train2017.json``).

The file is a JSON object::

    {"images": [{"id": 179765, "file_name": "000000179765.jpg", ...}, ...],
     "annotations": [{"id": 38, "image_id": 179765, "caption": "A black Honda ..."}, ...]}

Example ``i`` is caption annotation ``i`` (file order): one turn, a question drawn from our
templates with ``seeded_rng(seed, i)`` and the caption as the answer; no masks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pixelagent.data.examples import (TrainingExample, check_image_name, check_images_exist, check_index,
                                      existing_path, image_in, no_masks, read_json, seeded_rng)
from pixelagent.errors import ConfigError
from pixelagent.markup import OBJ_TOKEN, SEG_TOKEN

QUESTIONS = (
    "Describe this image briefly.",
    "Give a short caption for this picture.",
    "What does this image show? Answer in one sentence.",
    "Summarize the content of this photo in one sentence.",
    "Write a brief description of this image.",
)


class CaptionsDataset:
    """One single-turn "describe the image" example per COCO caption (see the module docstring)."""

    def __init__(self, json_path: str | Path, images_dir: str | Path, *, name: str = "captions",
                 seed: int = 0, check_images: bool = False) -> None:
        self.name, self.seed = name, seed
        self.path = existing_path(json_path, "captions file")
        self.images_dir = existing_path(images_dir, "images directory", "dir")
        data = read_json(self.path, "captions file")
        files = _image_files(data, self.path)
        self.captions = [_caption(entry, files, f"{self.path}: annotations[{k}]")
                         for k, entry in enumerate(data["annotations"])]
        if not self.captions:
            raise ConfigError(f"{self.path}: no caption annotations")
        if check_images:
            check_images_exist(self.images_dir, sorted({c[1] for c in self.captions}), str(self.path))

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, index: int) -> TrainingExample:
        i = check_index(index, len(self), self.name)
        caption_id, file_name, caption = self.captions[i]
        question = seeded_rng(self.seed, i).choice(QUESTIONS)
        return TrainingExample(source=self.name, id=caption_id, turns=[(question, caption)], masks=no_masks(),
                               image=image_in(self.images_dir, file_name, f"{self.path}: caption {caption_id}"))


def _image_files(data: Any, path: Path) -> dict[Any, str]:
    """``{image id: file_name}``; also checks the top-level shape of the file."""
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("annotations"), list):
        raise ConfigError(f"{path}: expected a COCO captions file with 'images' and 'annotations' lists")
    files = {}
    for k, image in enumerate(data["images"]):
        if not isinstance(image, dict) or "id" not in image or not isinstance(image.get("file_name"), str):
            raise ConfigError(f"{path}: images[{k}] needs 'id' and 'file_name'")
        files[image["id"]] = check_image_name(image["file_name"], f"{path}: images[{k}].file_name")
    return files


def _caption(entry: Any, files: dict[Any, str], where: str) -> tuple[str, str, str]:
    """``(annotation id, image file, caption)`` of one annotation."""
    if not isinstance(entry, dict) or not isinstance(entry.get("caption"), str) or not entry["caption"].strip():
        raise ConfigError(f"{where}: needs a non-empty 'caption' string")
    if entry.get("image_id") not in files:
        raise ConfigError(f"{where}: image_id {entry.get('image_id')!r} is not among the file's images")
    caption = entry["caption"].strip()
    if SEG_TOKEN in caption or OBJ_TOKEN in caption:
        raise ConfigError(f"{where}: a caption must not contain {SEG_TOKEN} or {OBJ_TOKEN}")
    return str(entry.get("id", where.rsplit("[", 1)[-1].rstrip("]"))), files[entry["image_id"]], caption
