"""Semantic segmentation (ADE20K, COCO-Stuff, Mapillary Vistas) as segmentation dialogues.

On disk::

    images_dir/<stem>.jpg|.jpeg|.png       the photos
    labels_dir/<stem>.png                  one label image per photo, same stem
    class_map                              the class names by index

Label PNGs are single-channel class-index images (ADE20K ``annotations``, COCO-Stuff
``stuffthingmaps``), or palette PNGs whose palette index is the class (Mapillary ``labels``),
or RGB PNGs whose colours the class map lists (Mapillary ``config.json``). The class map is a
JSON / YAML list of names by index, a dict ``{index: name}``, a Mapillary-style
``{"labels": [{"readable"|"name", "color": [r, g, b]}, ...]}``, or a ``.txt`` with one name per
line (``"idx: name"`` lines keep their index, as in COCO-Stuff's ``labels.txt``).

``ignore_index`` pixels (255) and classes named in ``ignore_classes`` are never asked about.
``reduce_zero_label`` reads ADE20K's raw labels (0 = "other", classes 1..150) against a
150-name class map: 0 becomes ``ignore_index`` and every other value drops by one.

Example ``i`` is image ``i`` (sorted by stem): up to ``max_classes`` of its classes, chosen
with ``seeded_rng(seed, i)``, each one turn "Can you segment the wall ...?" → "It is
[OBJ]wall[SEG]." with ``masks[k] = label == class_k``. An image with no usable class falls
through to the next image (deterministically), since it has nothing to ask.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from pixelagent.data.examples import (TrainingExample, check_index, existing_path, read_json, read_yaml,
                                      seeded_rng)
from pixelagent.errors import ConfigError
from pixelagent.files import check_regular_file, read_text
from pixelagent.images import DEFAULT_MAX_PIXELS
from pixelagent.markup import format_focus

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
DEFAULT_IGNORED = ("unlabeled", "unlabelled", "other", "background")

QUESTIONS = (
    "Can you segment the {name} in this image?",
    "Please segment the {name} in this image.",
    "What is {name} in this picture? Please respond with a segmentation mask.",
    "Where is the {name} in this image? Please answer with a segmentation mask.",
    "Could you mark the {name} in this picture?",
)
ANSWERS = ("It is {focus}.", "Sure, it is {focus}.", "Sure, {focus}.", "{focus}.")


class SemanticSegDataset:
    """Class-index label maps → one dialogue per image (see the module docstring for the format)."""

    def __init__(self, images_dir: str | Path, labels_dir: str | Path, class_map: str | Path, *,
                 name: str = "semantic", ignore_index: int = 255, ignore_classes: Sequence[str] = DEFAULT_IGNORED,
                 reduce_zero_label: bool = False, max_classes: int = 3, seed: int = 0) -> None:
        if max_classes < 1:
            raise ConfigError(f"max_classes must be at least 1, got {max_classes}")
        self.name, self.seed, self.max_classes = name, seed, max_classes
        self.ignore_index, self.reduce_zero_label = ignore_index, reduce_zero_label
        images_dir = existing_path(images_dir, "images directory", "dir")
        labels_dir = existing_path(labels_dir, "labels directory", "dir")
        self.class_map = existing_path(class_map, "class map")
        self.classes, self.colors = load_class_map(self.class_map)
        ignored = {c.strip().lower() for c in ignore_classes}
        self.skip = {i for i, n in self.classes.items() if n.strip().lower() in ignored} | {ignore_index}
        self.pairs = pair_files(images_dir, labels_dir)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> TrainingExample:
        start = check_index(index, len(self), self.name)
        for step in range(len(self)):
            example = self._example((start + step) % len(self))
            if example is not None:
                return example
        raise ConfigError(f"no label image in {self.pairs[0][1].parent} has a class to ask about "
                          f"(all pixels are ignore_index {self.ignore_index} or ignored classes)")

    def _example(self, i: int) -> TrainingExample | None:
        image_path, label_path = self.pairs[i]
        label = self.read_label(label_path)
        _check_size(image_path, label_path, label.shape)
        present = [int(c) for c in np.unique(label) if int(c) not in self.skip]
        unknown = [c for c in present if c not in self.classes]
        if unknown:
            raise ConfigError(f"{label_path}: class indices {unknown[:5]} are not in the class map "
                              f"{self.class_map} (ADE20K raw labels need reduce_zero_label=True)")
        if not present:
            return None
        rng = seeded_rng(self.seed, i)
        chosen = rng.sample(present, min(self.max_classes, len(present)))
        turns = [_turn(rng, self.classes[c]) for c in chosen]
        masks = np.stack([label == c for c in chosen])
        return TrainingExample(source=self.name, id=label_path.stem, turns=turns, masks=masks,
                               image=image_path, exif_orientation=False)

    def read_label(self, path: Path) -> np.ndarray:
        """The class-index map ``(H, W)`` int32 of one label PNG, zero reduced when asked."""
        label = read_label(path, self.colors)
        if self.reduce_zero_label:
            # ADE20K: 0 is "other objects"; the 150 real classes are 1..150 on disk, 0..149 in the map.
            label = np.where(label == 0, self.ignore_index, label - 1).astype(np.int32)
        return label


def _turn(rng: Any, name: str) -> tuple[str, str]:
    question = rng.choice(QUESTIONS).format(name=name)
    return question, rng.choice(ANSWERS).format(focus=format_focus(name))


def _check_size(image_path: Path, label_path: Path, shape: tuple[int, ...]) -> None:
    # Only the header is read; the stored size, since the labels ignore EXIF orientation too.
    check_regular_file(image_path, "image")  # a FIFO would block Image.open
    try:
        with Image.open(image_path) as image:
            size = (image.height, image.width)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ConfigError(f"cannot read the image {image_path}: {exc}") from None
    if size != tuple(shape):
        raise ConfigError(f"{label_path} is {shape[0]}x{shape[1]} (HxW) but its image {image_path} is "
                          f"{size[0]}x{size[1]}")


# -- files -------------------------------------------------------------------------------------
def pair_files(images_dir: Path, labels_dir: Path) -> list[tuple[Path, Path]]:
    """``(image, label)`` pairs matched by stem, sorted by stem; every label needs its image."""
    labels = sorted(labels_dir.glob("*.png"))
    if not labels:
        raise ConfigError(f"no .png label images in {labels_dir}")
    images: dict[str, Path] = {}
    for path in sorted(images_dir.iterdir()):
        if path.suffix.lower() in IMAGE_SUFFIXES:
            images.setdefault(path.stem, path)
    missing = [p.name for p in labels if p.stem not in images]
    if missing:
        raise ConfigError(f"{len(missing)} label image(s) in {labels_dir} have no image of the same stem "
                          f"in {images_dir}: {', '.join(missing[:5])}")
    return [(images[p.stem], p) for p in labels]


def read_label(path: Path, colors: dict[int, int]) -> np.ndarray:
    """``(H, W)`` int32 class indices of a label PNG: grey/16-bit and palette as is, RGB via ``colors``."""
    check_regular_file(path, "label image")  # a FIFO would block Image.open
    try:
        with Image.open(path) as image:
            if image.width * image.height > DEFAULT_MAX_PIXELS:
                raise ConfigError(f"label image {path} is {image.width}x{image.height}, over the limit of "
                                  f"{DEFAULT_MAX_PIXELS:,} pixels (pixelagent.images.DEFAULT_MAX_PIXELS)")
            mode = image.mode
            # A palette image's array holds the palette indices, which are Mapillary's class ids.
            pixels = np.asarray(image.convert("RGB") if mode == "RGBA" else image)
    except ConfigError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ConfigError(f"cannot read the label image {path}: {exc}") from None
    if mode in ("L", "P", "I", "I;16", "I;16B", "I;16L"):
        return pixels.astype(np.int32)
    if mode in ("RGB", "RGBA"):
        return _colors_to_classes(pixels, colors, path)
    raise ConfigError(f"{path}: label images must be single-channel, palette or RGB PNGs, not mode {mode}")


def _colors_to_classes(pixels: np.ndarray, colors: dict[int, int], path: Path) -> np.ndarray:
    if not colors:
        raise ConfigError(f"{path} is an RGB label image; the class map must give each class a 'color'")
    packed = (pixels[..., 0].astype(np.int32) << 16) | (pixels[..., 1].astype(np.int32) << 8) | pixels[..., 2]
    values, inverse = np.unique(packed, return_inverse=True)
    unknown = [v for v in values.tolist() if v not in colors]
    if unknown:
        shown = ", ".join(str(((v >> 16) & 255, (v >> 8) & 255, v & 255)) for v in unknown[:5])
        raise ConfigError(f"{path}: colours not in the class map: {shown}")
    lookup = np.array([colors[v] for v in values.tolist()], dtype=np.int32)
    return lookup[inverse.reshape(packed.shape)]


# -- class maps --------------------------------------------------------------------------------
def load_class_map(path: Path) -> tuple[dict[int, str], dict[int, int]]:
    """``({index: name}, {packed 0xRRGGBB colour: index})`` from a class-map file."""
    suffix = path.suffix.lower()
    if suffix == ".txt":
        data: Any = _txt_class_map(path)
    else:
        data = read_json(path, "class map") if suffix == ".json" else read_yaml(path, "class map")
    if isinstance(data, dict) and isinstance(data.get("labels"), list):
        data = data["labels"]  # Mapillary config.json
    if isinstance(data, list):
        data = dict(enumerate(data))
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"class map {path}: expected a non-empty list of names or a dict index -> name")
    classes, colors, problems = {}, {}, []
    for key, entry in data.items():
        _class_entry(key, entry, classes, colors, problems)
    if problems:
        raise ConfigError(f"class map {path}: " + "; ".join(problems[:10]))
    return classes, colors


def _class_entry(key: Any, entry: Any, classes: dict, colors: dict, problems: list) -> None:
    if not (isinstance(key, int) or (isinstance(key, str) and key.strip().isdigit())):
        problems.append(f"key {key!r} is not a class index")
        return
    index = int(key)
    if isinstance(entry, dict):
        color = entry.get("color")
        # Mapillary's "readable" is Title Case ("Car Mount"); questions read better in lower case.
        name = entry["readable"].lower() if isinstance(entry.get("readable"), str) else entry.get("name")
        if color is not None:
            _add_color(index, color, colors, problems)
        entry = name
    if not isinstance(entry, str) or not entry.strip():
        problems.append(f"class {index}: name must be a non-empty string, got {entry!r}")
        return
    classes[index] = entry.strip()


def _add_color(index: int, color: Any, colors: dict, problems: list) -> None:
    if not (isinstance(color, list) and len(color) == 3 and all(isinstance(c, int) and 0 <= c < 256 for c in color)):
        problems.append(f"class {index}: color must be [r, g, b] in 0..255, got {color!r}")
    else:
        colors[(color[0] << 16) | (color[1] << 8) | color[2]] = index  # packed like the label pixels


def _txt_class_map(path: Path) -> dict[int, str]:
    lines = [line.strip() for line in read_text(path, "class map").splitlines()]
    classes = {}
    for number, line in enumerate(line for line in lines if line):
        match = re.fullmatch(r"(\d+)\s*:\s*(.+)", line)
        classes[int(match[1]) if match else number] = match[2] if match else line
    return classes
