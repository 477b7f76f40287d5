"""A rendered scene: 2-5 objects with parts and text, and the exact visible mask of each.

Objects are painted back to front (the lower an object's box ends, the nearer it is), so a
later object hides what it covers of earlier ones. Every object, part and word is an
:class:`Element` with its *visible* mask and polygons: an object's mask is its whole visible
silhouette (parts included), a part's the visible pixels of its shapes, a word's the 4-point
box an annotator would draw round the rendered letters (a little padding, not the strokes).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from pixelagent.data.synth import geometry as geo
from pixelagent.data.synth.catalog import KINDS, PALETTE, Blueprint, KindSpec
from pixelagent.data.synth.geometry import Poly
from pixelagent.data.synth.glyphs import fit_word
from pixelagent.mask import Granularity, Mask

ElementKind = Literal["object", "part", "text"]

_MARGIN = 0.02  # of the image side kept free round the border
_MAX_OVERLAP = 0.25  # largest share of the smaller box that another object's box may cover
_DISTRACTOR_P = 0.35  # chance that an object repeats a kind already in the scene (in another colour)


@dataclass(frozen=True, eq=False)
class Element:
    """One object, part or word of a scene.

    ``id`` is "o1", "o1.label" or "o1.label.text"; ``parent`` the id one level up. ``mask``
    holds the visible pixels; ``full_area`` is the pixel count before occlusion, so
    ``mask.area / full_area`` is the visible share. ``shapes`` are the element's convex
    polygons before occlusion and ``holes`` the convex polygons drawn over it.
    """

    id: str
    kind: ElementKind
    name: str
    object_id: str
    parent: str | None
    colour: str | None
    text: str
    mask: Mask
    full_area: int
    shapes: tuple[Poly, ...] = field(repr=False)
    holes: tuple[Poly, ...] = field(repr=False)

    @functools.cached_property
    def polygons(self) -> tuple[Poly, ...]:
        """Convex pieces (pixel (x, y)) that tile the visible region: shapes minus holes.

        Computed on first use (only targets need them; clipping is the costly step).
        """
        return tuple(geo.subtract_all(self.shapes, self.holes))

    @property
    def visible(self) -> float:
        """Share of the element left visible after occlusion, in [0, 1]."""
        return self.mask.area / self.full_area if self.full_area else 0.0

    @property
    def granularity(self) -> Granularity | None:
        return self.mask.granularity

    @functools.cached_property
    def centroid(self) -> tuple[float, float] | None:
        """Mean (x, y) px of the visible pixels; None when nothing is visible."""
        box = self.mask.bbox
        if box is None:
            return None
        ys, xs = np.nonzero(self.mask.array[box[1]:box[3], box[0]:box[2]])
        return (box[0] + float(xs.mean()), box[1] + float(ys.mean()))


@dataclass(frozen=True)
class SceneObject:
    """One object: kind, colour and word, where it sits ("on the left"), and its element ids.

    ``parts`` are the part ids in painting order; ``text_part`` is the id of the part that
    carries the word, ``text`` the id of the word itself.
    """

    id: str
    kind: str
    colour: str
    word: str
    position: str
    centroid: tuple[float, float]
    parts: tuple[str, ...]
    text_part: str
    text: str

    @property
    def spec(self) -> KindSpec:
        return KINDS[self.kind]


@dataclass(frozen=True)
class Scene:
    """An RGB uint8 image ``(size, size, 3)`` with its objects and their elements (by id).

    ``ink`` maps each word's element id to the coverage (uint8 ``(size, size)``, 0..255, zero
    where hidden) with which its letters were painted: a check that the word's box really
    frames the letters.
    """

    size: int
    image: np.ndarray
    objects: tuple[SceneObject, ...]
    elements: dict[str, Element]
    ink: dict[str, np.ndarray] = field(repr=False)

    def element(self, element_id: str) -> Element:
        return self.elements[element_id]

    def object(self, object_id: str) -> SceneObject:
        return next(o for o in self.objects if o.id == object_id)

    def same_kind(self, obj: SceneObject) -> list[SceneObject]:
        """All objects of ``obj``'s kind (itself included), in painting order."""
        return [o for o in self.objects if o.kind == obj.kind]


# --------------------------------------------------------------------- choosing and placing


@dataclass(frozen=True)
class _Placed:
    kind: str
    colour: str
    word: str
    blueprint: Blueprint
    box: tuple[float, float, float, float]


def _choose(rng: np.random.Generator, n: int) -> list[tuple[str, str, str]]:
    """(kind, colour, word) for ``n`` objects; repeated kinds differ in colour and word."""
    names = sorted(KINDS)
    chosen: list[tuple[str, str, str]] = []
    for _ in range(n):
        repeat = chosen and rng.random() < _DISTRACTOR_P
        kind = chosen[int(rng.integers(len(chosen)))][0] if repeat else names[int(rng.integers(len(names)))]
        taken = {(c, w) for k, c, w in chosen if k == kind}
        colours = [c for c in PALETTE if c not in {c for c, _ in taken}]
        words = [w for w in KINDS[kind].words if w not in {w for _, w in taken}]
        if colours and words:
            chosen.append((kind, colours[int(rng.integers(len(colours)))], words[int(rng.integers(len(words)))]))
    return chosen


def _overlap_ok(box: tuple[float, ...], others: list[tuple[float, ...]]) -> bool:
    for other in others:
        w = min(box[2], other[2]) - max(box[0], other[0])
        h = min(box[3], other[3]) - max(box[1], other[1])
        smaller = min((box[2] - box[0]) * (box[3] - box[1]), (other[2] - other[0]) * (other[3] - other[1]))
        if w > 0 and h > 0 and w * h > _MAX_OVERLAP * smaller:
            return False
    return True


def _place(rng: np.random.Generator, spec: KindSpec, size: int,
           boxes: list[tuple[float, ...]]) -> tuple[float, float, float] | None:
    """(x0, y0, s) for a new object that overlaps the placed ``boxes`` little; None if none found."""
    margin = _MARGIN * size
    s = rng.uniform(*spec.size) * size
    for attempt in range(60):
        if attempt and attempt % 20 == 0:
            s *= 0.85  # crowded: try a smaller one
        w, h = spec.extent[0] * s, spec.extent[1] * s
        x0 = rng.uniform(margin, size - margin - w)
        y0 = rng.uniform(margin, size - margin - h)
        if _overlap_ok((x0, y0, x0 + w, y0 + h), boxes):
            return x0, y0, s
    return None


def _layout(rng: np.random.Generator, size: int, min_objects: int, max_objects: int) -> list[_Placed]:
    """Choose and place the objects; returned in painting order (back to front)."""
    placed: list[_Placed] = []
    for kind, colour, word in _choose(rng, int(rng.integers(min_objects, max_objects + 1))):
        spec = KINDS[kind]
        spot = _place(rng, spec, size, [p.box for p in placed])
        if spot is not None:
            x0, y0, s = spot
            box = (x0, y0, x0 + spec.extent[0] * s, y0 + spec.extent[1] * s)
            placed.append(_Placed(kind, colour, word, spec.build(rng, x0, y0, s, colour, word), box))
    return sorted(placed, key=lambda p: p.box[3])


# --------------------------------------------------------------------- the scene


def generate_scene(rng: np.random.Generator, size: int = 256, min_objects: int = 2,
                   max_objects: int = 5) -> Scene:
    """Draw one scene of ``size`` x ``size`` pixels; the same ``rng`` state gives the same scene.

    Retries the layout (from the same generator) until at least ``min_objects`` objects fit.
    """
    background = _background(rng, size)
    placed = _layout(rng, size, min_objects, max_objects)
    while len(placed) < min_objects:
        placed = _layout(rng, size, min_objects, max_objects)
    return _compose(background, placed, size)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A muted two-colour gradient with a little grain: uint8 RGB ``(size, size, 3)``."""
    a = (rng.uniform(100, 190) + rng.uniform(-25, 25, 3)).astype(np.float32)
    b = (rng.uniform(90, 200) + rng.uniform(-25, 25, 3)).astype(np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    steps = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
    t = np.clip(0.5 + steps[None, :] * math.cos(angle) + steps[:, None] * math.sin(angle), 0, 1)
    grain = rng.standard_normal((size, size), dtype=np.float32) * 5.0
    # Channels first keeps every operation contiguous (3-wide broadcasting is several times slower).
    channels = a[:, None, None] + (b - a)[:, None, None] * t + grain
    return np.ascontiguousarray(np.clip(np.rint(channels), 0, 255).astype(np.uint8).transpose(1, 2, 0))


@dataclass(frozen=True)
class _Word:
    """A word laid out in the image: coverage ``patch`` (uint8 (h, w)) with its top-left at (x, y)
    and ``pad`` px of margin in the annotator's box."""

    patch: np.ndarray
    x: int
    y: int
    pad: int

    @property
    def box(self) -> Poly:
        h, w = self.patch.shape
        return geo.rect(self.x - self.pad, self.y - self.pad, self.x + w + self.pad, self.y + h + self.pad)


@dataclass(frozen=True)
class _Rasters:
    """One object's shapes rasterised once: body, each part, the word's box (bool (H, W)).

    ``window`` is the (rows, columns) slice pair that holds the whole object, so that painting
    touches only those pixels.
    """

    silhouette: np.ndarray
    body: np.ndarray
    parts: tuple[np.ndarray, ...]
    word: _Word | None
    box: np.ndarray | None
    window: tuple[slice, slice]


_SMALLEST_LEGIBLE = 7  # px font size a word may grow to when it spills out of a tiny slot


def _layout_word(item: _Placed) -> _Word | None:
    """The largest rendering of the word that fits its slot, centred; None if none fits.

    A slot too small for any font (small images) lets the word spill into the rest of its
    part, at a small font. Boxes are shrunk by 1 px so that whole-pixel placement can always
    keep the word's box inside them.
    """
    plan = item.blueprint.text
    x0, y0, x1, y1 = plan.box
    fit = fit_word(item.word, x1 - x0 - 1, y1 - y0 - 1)
    if fit is None:
        x0, y0, x1, y1 = plan.limit
        fit = fit_word(item.word, x1 - x0 - 1, y1 - y0 - 1, max_size=_SMALLEST_LEGIBLE)
    if fit is None:
        return None
    patch, pad = fit
    h, w = patch.shape
    return _Word(patch, _centred(x0 + pad, x1 - pad - w), _centred(y0 + pad, y1 - pad - h), pad)


def _centred(lo: float, hi: float) -> int:
    """The whole number in [lo, hi] nearest their middle."""
    return int(min(max(round((lo + hi) / 2), math.ceil(lo)), math.floor(hi)))


def _rasterise(item: _Placed, shape: tuple[int, int]) -> _Rasters:
    bp = item.blueprint
    word = _layout_word(item)
    body = geo.rasterize(bp.body, shape)
    parts = tuple(geo.rasterize(part.polys, shape) for part in bp.parts)
    silhouette = body | np.logical_or.reduce(parts) if parts else body
    box = None if word is None else geo.rasterize([word.box], shape)
    x0, y0, x1, y1 = geo.bbox(bp.outline)
    window = (slice(max(0, int(y0) - 1), int(y1) + 2), slice(max(0, int(x0) - 1), int(x1) + 2))
    return _Rasters(silhouette, body, parts, word, box, window)


def _compose(background: np.ndarray, placed: list[_Placed], size: int) -> Scene:
    """Paint the objects back to front and derive every element's visible mask and polygons."""
    shape = (size, size)
    image = background
    rasters = [_rasterise(p, shape) for p in placed]
    hidden = np.zeros(shape, dtype=bool)
    objects, elements, ink = [], {}, {}
    for index in reversed(range(len(placed))):  # front to back: what hides each object is known
        holes = tuple(poly for later in placed[index + 1:] for poly in later.blueprint.outline)
        visible = rasters[index].silhouette & ~hidden
        obj, own, own_ink = _elements(f"o{index + 1}", placed[index], rasters[index], visible, holes)
        objects.insert(0, obj)
        elements.update(own)
        ink.update(own_ink)
        hidden |= rasters[index].silhouette
    for item, raster in zip(placed, rasters):  # back to front: the painter's order
        _paint(image, item, raster)
    ordered = {key: elements[key] for obj in objects for key in (obj.id, *obj.parts, obj.text) if key}
    return Scene(size, image, tuple(objects), ordered, ink)


def _elements(obj_id: str, item: _Placed, raster: _Rasters, visible: np.ndarray,
              holes: tuple[Poly, ...]) -> tuple[SceneObject, dict[str, Element], dict[str, np.ndarray]]:
    """The object's, its parts' and its word's elements, and the word's ink (by element id)."""
    word = item.word if raster.word is not None else ""  # a word too big for a tiny image is not drawn
    whole = Element(obj_id, "object", item.kind, obj_id, None, item.colour, word, Mask(visible),
                    int(raster.silhouette.sum()), item.blueprint.outline, holes)
    parts = _part_elements(whole, item, raster, holes)
    text_part = f"{obj_id}.{_slug(item.blueprint.text.part)}"
    out, ink, text_id = {obj_id: whole, **parts}, {}, ""
    if word:
        text_id = f"{text_part}.text"
        out[text_id], ink[text_id] = _word_element(text_id, item, raster, parts[text_part].mask.array,
                                                   visible, holes)
    centroid = whole.centroid or (math.nan, math.nan)
    obj = SceneObject(obj_id, item.kind, item.colour, word, position_phrase(centroid, visible.shape[0]),
                      centroid, tuple(parts), text_part, text_id)
    return obj, out, ink


def _slug(name: str) -> str:
    return name.replace(" ", "_")


def _part_elements(whole: Element, item: _Placed, raster: _Rasters,
                   holes: tuple[Poly, ...]) -> dict[str, Element]:
    """One element per part: its pixels visible on the object and not under a later part."""
    bp, out = item.blueprint, {}
    for index, (part, full) in enumerate(zip(bp.parts, raster.parts)):
        part_id = f"{whole.id}.{_slug(part.name)}"
        text = whole.text if part.name == bp.text.part else ""
        # Parts painted later (bolts on a board) hide what they cover of this one.
        above = tuple(poly for later in bp.parts[index + 1:] for poly in later.polys)
        covered = np.logical_or.reduce(raster.parts[index + 1:]) if above else False
        out[part_id] = Element(part_id, "part", part.name, whole.id, whole.id, part.colour, text,
                               Mask(full & whole.mask.array & ~covered), int(full.sum()), part.polys,
                               above + holes)
    return out


def _word_element(text_id: str, item: _Placed, raster: _Rasters, part_mask: np.ndarray,
                  visible: np.ndarray, holes: tuple[Poly, ...]) -> tuple[Element, np.ndarray]:
    """The word's box element (within its part's visible pixels) and its ink coverage where
    the object is visible (not cut to the box: that the box holds the ink is for tests to check)."""
    word = raster.word
    spec = KINDS[item.kind]
    mask = raster.box & part_mask
    ink = np.zeros(mask.shape, dtype=np.uint8)
    h, w = word.patch.shape
    ink[word.y:word.y + h, word.x:word.x + w] = word.patch
    element = Element(text_id, "text", spec.text_noun, text_id.split(".")[0], text_id.rsplit(".", 1)[0],
                      None, item.word, Mask(mask), int(raster.box.sum()), (word.box,), holes)
    return element, np.where(visible, ink, 0).astype(np.uint8)


def _paint(image: np.ndarray, item: _Placed, raster: _Rasters) -> None:
    """Paint one object over ``image`` (in place): body, parts, word, then a dark outline."""
    bp, win = item.blueprint, raster.window
    view = image[win]
    view[raster.body[win]] = bp.rgb
    for part, full in zip(bp.parts, raster.parts):
        view[full[win]] = part.rgb
    if raster.word is not None:
        word = raster.word
        h, w = word.patch.shape
        region = image[word.y:word.y + h, word.x:word.x + w].astype(np.float32)
        alpha = word.patch[..., None].astype(np.float32) / 255.0
        blended = region * (1 - alpha) + np.asarray(bp.text.rgb, np.float32) * alpha
        image[word.y:word.y + h, word.x:word.x + w] = np.rint(blended).astype(np.uint8)
    # The outline keeps same-coloured overlapping objects apart to the eye.
    view[_edge(raster.silhouette[win])] = tuple(int(c * 0.45) for c in bp.rgb)


def _edge(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` with a 4-neighbour outside it."""
    padded = np.pad(mask, 1)
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


def position_phrase(centroid: tuple[float, float], size: int) -> str:
    """Where a point (x, y) px sits in a ``size``-px image: "on the left", "at the top right"..."""
    x, y = centroid[0] / size, centroid[1] / size
    across = "left" if x < 0.38 else ("right" if x > 0.62 else "")
    down = "top" if y < 0.38 else ("bottom" if y > 0.62 else "")
    if across and down:
        return f"at the {down} {across}"
    if across or down:
        return f"on the {across}" if across else f"at the {down}"
    return "in the centre"
