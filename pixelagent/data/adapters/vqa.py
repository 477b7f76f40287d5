"""Visual instruction data in the LLaVA-Instruct format (LLaVA-Instruct-80k/150k, mix665k).

The file is a JSON list of::

    {"id": str | int, "image": "000000033471.jpg",            # "image" absent: text-only
     "conversations": [{"from": "human", "value": "<image>\\nWhat is ...?"},
                       {"from": "gpt", "value": "..."}, ...]}

Turns alternate human, gpt, starting with the human and ending with gpt. The ``<image>``
placeholder (``"<image>\\n"`` before or ``"\\n<image>"`` after the first question) is removed:
our prompt builder places the visual tokens itself. Example ``i`` is record ``i``, turns as
given, no masks. Every record is validated when the dataset is built; a bad one raises a
ConfigError naming the file, the record index and the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pixelagent.data.examples import (TrainingExample, check_image_name, check_images_exist, check_index,
                                      existing_path, image_in, no_masks, read_json)
from pixelagent.errors import ConfigError
from pixelagent.markup import OBJ_TOKEN, SEG_TOKEN

IMAGE_PLACEHOLDER = "<image>"
SPEAKERS = ("human", "gpt")


class VQADataset:
    """LLaVA-Instruct conversations as text-answer examples (see the module docstring)."""

    def __init__(self, json_path: str | Path, images_dir: str | Path | None = None, *, name: str = "vqa",
                 check_images: bool = False) -> None:
        self.name = name
        self.path = existing_path(json_path, "VQA file")
        self.images_dir = None if images_dir is None else existing_path(images_dir, "images directory", "dir")
        data = read_json(self.path, "VQA file")
        if not isinstance(data, list) or not data:
            raise ConfigError(f"{self.path}: expected a non-empty JSON list of conversations")
        self.records = [parse_conversation(entry, f"{self.path}[{k}]") for k, entry in enumerate(data)]
        with_images = [r[1] for r in self.records if r[1] is not None]
        if with_images and self.images_dir is None:
            raise ConfigError(f"{self.path}: {len(with_images)} records have an 'image'; pass images_dir")
        if check_images and with_images:
            check_images_exist(self.images_dir, sorted(set(with_images)), str(self.path))

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> TrainingExample:
        i = check_index(index, len(self), self.name)
        record_id, image, turns = self.records[i]
        return TrainingExample(source=self.name, id=record_id, turns=list(turns), masks=no_masks(),
                               image=None if image is None else image_in(self.images_dir, image,
                                                                          f"{self.path}[{i}].image"))


def parse_conversation(entry: Any, where: str) -> tuple[str, str | None, tuple[tuple[str, str], ...]]:
    """``(id, image file or None, turns)`` of one record; ConfigError naming ``where`` and the field."""
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected an object, got {type(entry).__name__}")
    image = entry.get("image")
    if image is not None and (not isinstance(image, str) or not image):
        raise ConfigError(f"{where}.image: expected a file name, got {image!r}")
    if image is not None:
        check_image_name(image, f"{where}.image")
    values = _values(entry.get("conversations"), where)
    values[0] = strip_placeholder(values[0])
    turns = tuple(zip(values[0::2], values[1::2]))
    record_id = entry.get("id", where.rsplit("[", 1)[-1].rstrip("]"))
    return str(record_id), image, turns


def _values(conversations: Any, where: str) -> list[str]:
    """The texts of a conversation after checking speakers alternate human, gpt, ... and end on gpt."""
    if not isinstance(conversations, list) or not conversations or len(conversations) % 2:
        raise ConfigError(f"{where}.conversations: expected a non-empty list of human/gpt pairs")
    values = []
    for k, turn in enumerate(conversations):
        field = f"{where}.conversations[{k}]"
        expected = SPEAKERS[k % 2]
        if not isinstance(turn, dict) or turn.get("from") != expected:
            got = turn.get("from") if isinstance(turn, dict) else turn
            raise ConfigError(f"{field}.from: expected {expected!r}, got {got!r}")
        value = turn.get("value")
        if not isinstance(value, str):
            raise ConfigError(f"{field}.value: expected a string, got {type(value).__name__}")
        if SEG_TOKEN in value or OBJ_TOKEN in value:
            # A [SEG] without a mask would teach the model to segment with nothing to learn from.
            raise ConfigError(f"{field}.value: VQA text must not contain {SEG_TOKEN} or {OBJ_TOKEN}")
        values.append(value)
    return values


def strip_placeholder(question: str) -> str:
    """The first question without LLaVA's ``<image>`` placeholder and the newline beside it."""
    for form in (IMAGE_PLACEHOLDER + "\n", "\n" + IMAGE_PLACEHOLDER, IMAGE_PLACEHOLDER):
        if form in question:
            return question.replace(form, "", 1).strip()
    return question
