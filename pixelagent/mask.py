"""The binary segmentation mask every pixelagent part exchanges.

A :class:`Mask` wraps a read-only ``bool`` numpy array of shape ``(H, W)`` (rows, columns, in
pixels). It converts to and from COCO run-length encoding (the wire and storage format) and PNG,
draws itself over an RGB image, and plugs into pydantic v2 models as a field type that validates
from an array, a ``Mask`` or an RLE dict and serialises to the RLE dict.

Sizes are always ``(H, W)``; boxes are ``(x0, y0, x1, y1)`` in pixels with ``x1``/``y1`` exclusive.
"""

from __future__ import annotations

import enum
import io
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
from pycocotools import mask as coco_mask
from pydantic_core import core_schema

from pixelagent.errors import MaskError

__all__ = [
    "COCO_REFERENCE_SIDE",
    "Granularity",
    "Mask",
    "classify_granularity",
    "granularity_scale",
]

COCO_REFERENCE_SIDE = 640
"""Longest image side (pixels) of the COCO images that the 32/96-pixel area thresholds were set for."""

# Threshold sides in pixels at COCO's 640-px reference scale (COCO small/medium/large).
_FINE_SIDE = 32
_COARSE_SIDE = 96

# pycocotools stores run lengths as C ``uint``; anything larger would silently wrap.
_MAX_RUN = 2**32 - 1
# A compressed count is 5 bits per character; 7 characters (35 bits) cover any signed uint32 delta.
_MAX_CHARS_PER_COUNT = 7

_SHAPE_HELP = "a 2-D (H, W) numpy array with H, W >= 1, of bool or of integers/floats that are all 0 or 1"


class Granularity(str, enum.Enum):
    """How large a mask is relative to its image (PRIST's coarse / medium / fine split)."""

    COARSE = "coarse"
    MEDIUM = "medium"
    FINE = "fine"


def granularity_scale(image_size: tuple[int, int]) -> float:
    """Return ``s = max(H, W) / 640``, the factor that rescales COCO's thresholds to an image.

    ``image_size`` is ``(H, W)`` in pixels; PRIST's 1024-px images give ``s = 1.6``.
    """
    return max(_check_shape(image_size, "image_size")) / COCO_REFERENCE_SIDE


def classify_granularity(area: int, image_size: tuple[int, int]) -> Granularity:
    """Classify a mask of ``area`` pixels in an ``(H, W)`` image as fine, medium or coarse.

    PRIST paper, Table 2 (COCO's small/medium/large rule rescaled from 640-px to the image's
    longest side). With ``s = max(H, W) / 640``:

    * fine:   ``area < (32 s)^2``
    * medium: ``(32 s)^2 <= area <= (96 s)^2``
    * coarse: ``area > (96 s)^2``

    E.g. on a 1024x1024 image (``s = 1.6``) the bounds are 2621.44 and 23592.96 px^2.
    """
    if isinstance(area, bool) or not isinstance(area, (int, np.integer)) or area < 0:
        raise MaskError(f"area must be a non-negative integer pixel count; got {area!r}")
    side = max(_check_shape(image_size, "image_size"))
    # Compare in integers so the exact boundaries (e.g. 51.2^2 = 2621.44) cannot suffer rounding:
    # area < (32 * side / 640)^2  <=>  area * 640^2 < (32 * side)^2, likewise for 96.
    scaled_area = int(area) * COCO_REFERENCE_SIDE**2
    if scaled_area < (_FINE_SIDE * side) ** 2:
        return Granularity.FINE
    if scaled_area <= (_COARSE_SIDE * side) ** 2:
        return Granularity.MEDIUM
    return Granularity.COARSE


class Mask:
    """A binary segmentation mask: a bool numpy array of shape (H, W).

    Immutable: the constructor keeps its own C-contiguous, read-only copy, so later changes to
    the input array do not leak in and ``mask.array`` cannot be written to.
    """

    __slots__ = ("_array",)
    __hash__ = None  # type: ignore[assignment]  # unhashable like ndarray (equality is by content)
    #: numpy's view of a mask (``np.asarray(mask)``, ``torch.as_tensor(mask)``): bool, (H, W).
    dtype = np.dtype(np.bool_)
    ndim = 2

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        """numpy functions work on a mask as on its bool array (``np.logical_and(mask, other)``,
        ``np.sum(mask)``); the result is a plain array, never a Mask."""
        if "out" in kwargs and any(isinstance(o, Mask) for o in kwargs["out"]):
            raise MaskError("a Mask is immutable; give numpy an array as out=")
        arrays = [x._array if isinstance(x, Mask) else x for x in inputs]
        return getattr(ufunc, method)(*arrays, **kwargs)

    def __init__(self, array: np.ndarray) -> None:
        """Wrap ``array`` (``(H, W)``, bool or 0/1 integers/floats); raise MaskError otherwise."""
        if not isinstance(array, np.ndarray):
            raise MaskError(f"Mask needs {_SHAPE_HELP}; got {type(array).__name__} (use np.asarray first)")
        if array.ndim != 2 or 0 in array.shape:
            raise MaskError(f"Mask needs {_SHAPE_HELP}; got shape {array.shape} dtype {array.dtype}")
        if array.dtype != np.bool_:
            if not np.issubdtype(array.dtype, np.integer) and not np.issubdtype(array.dtype, np.floating):
                raise MaskError(f"Mask needs {_SHAPE_HELP}; got dtype {array.dtype}")
            bad = (array != 0) & (array != 1)  # NaN lands here too
            if bad.any():
                raise MaskError(
                    f"Mask needs {_SHAPE_HELP}; got dtype {array.dtype} with values other than 0/1 "
                    f"(e.g. {array[bad].flat[0]!r}); threshold it first, e.g. Mask(probs > 0.5)"
                )
        self._array = _freeze(np.array(array, dtype=np.bool_, order="C", copy=True))

    @classmethod
    def _wrap(cls, array: np.ndarray) -> Mask:
        """Adopt a freshly made C-contiguous bool (H, W) array without validating or copying it."""
        mask = object.__new__(cls)
        mask._array = _freeze(array)
        return mask

    # ----------------------------------------------------------------- array protocol

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        """``np.asarray(mask)``: the (H, W) bool pixels. A new, writable array unless ``copy=False``
        (then the read-only view): the mask itself stays immutable, and ``torch.as_tensor(mask)``
        gets memory it may write to."""
        if copy is False:
            if dtype is not None and np.dtype(dtype) != np.bool_:
                raise ValueError("a Mask is bool: converting it to another dtype needs a copy")
            return self.array
        return np.array(self._array, dtype=dtype if dtype is not None else np.bool_, copy=True)

    def __dlpack__(self, **kwargs: Any) -> Any:
        """``torch.as_tensor(mask)`` / ``torch.from_dlpack(mask)``: a bool (H, W) tensor of a copy
        (DLPack cannot mark memory read-only, and the mask must stay unchanged)."""
        return np.array(self._array, copy=True).__dlpack__(**kwargs)

    def __dlpack_device__(self) -> tuple[int, int]:
        return self._array.__dlpack_device__()

    def __len__(self) -> int:
        return int(self._array.shape[0])

    # ----------------------------------------------------------------- properties

    @property
    def array(self) -> np.ndarray:
        """The mask as a read-only bool array of shape (H, W)."""
        # A view of a read-only base cannot be flipped back to writeable, unlike the base itself.
        return self._array.view()

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)`` in pixels."""
        return (int(self._array.shape[0]), int(self._array.shape[1]))

    @property
    def area(self) -> int:
        """Number of True pixels."""
        return int(np.count_nonzero(self._array))

    @property
    def is_empty(self) -> bool:
        """True when no pixel is set."""
        return not self._array.any()

    @property
    def bbox(self) -> tuple[int, int, int, int] | None:
        """Tight box ``(x0, y0, x1, y1)`` in pixels, ``x1``/``y1`` exclusive; None when empty."""
        cols = np.flatnonzero(self._array.any(axis=0))
        if cols.size == 0:
            return None
        rows = np.flatnonzero(self._array.any(axis=1))
        return (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)

    @property
    def granularity(self) -> Granularity | None:
        """:func:`classify_granularity` of this mask's area in its own (H, W); None when empty."""
        area = self.area
        return None if area == 0 else classify_granularity(area, self.shape)

    # ----------------------------------------------------------------- constructors

    @classmethod
    def empty(cls, shape: tuple[int, int]) -> Mask:
        """An all-False mask of ``shape`` ``(H, W)``."""
        return cls._wrap(np.zeros(_check_shape(shape, "shape"), dtype=np.bool_))

    @classmethod
    def from_rle(cls, rle: dict) -> Mask:
        """Decode a COCO RLE dict ``{"size": [H, W], "counts": str | bytes | list[int]}``.

        ``counts`` is either the compressed string (as ``str`` or ``bytes``) or the uncompressed
        list of run lengths (column-major, starting with a run of zeros). The runs are parsed and
        checked to cover exactly ``H * W`` pixels here rather than by ``pycocotools.mask.decode``,
        which returns uninitialised memory for short counts and overflows on negative ones.
        """
        if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
            raise MaskError(f'RLE must be a dict with "size" and "counts"; got {_describe(rle)}')
        h, w = _check_shape(rle["size"], 'RLE "size"')
        counts = rle["counts"]
        if isinstance(counts, str):
            try:
                counts = counts.encode("ascii")
            except UnicodeEncodeError:
                raise MaskError('RLE "counts" string must be ASCII (COCO compressed RLE)') from None
        if isinstance(counts, bytes):
            runs = _parse_compressed_counts(counts)
        elif isinstance(counts, (list, tuple)):
            runs = _runs_from_list(counts)
        else:
            raise MaskError(f'RLE "counts" must be a str, bytes or list of ints; got {type(counts).__name__}')
        _check_runs(runs, h, w)
        # Runs alternate 0, 1, 0, ... and walk the image column by column (Fortran order).
        flat = np.repeat(np.arange(runs.size) % 2 == 1, runs)
        return cls._wrap(np.ascontiguousarray(flat.reshape(w, h).T))

    @classmethod
    def from_png(cls, source: str | os.PathLike | bytes) -> Mask:
        """Read a PNG (path or bytes); any pixel non-zero after conversion to grey ``L`` is True."""
        stream = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
        try:
            with PIL.Image.open(stream) as image:
                grey = np.asarray(image.convert("L"))
        except FileNotFoundError:
            raise
        except (OSError, SyntaxError, ValueError) as error:  # Pillow reports corrupt files all three ways
            raise MaskError(f"cannot read a mask image from {_describe(source)}: {error}") from None
        return cls._wrap(np.ascontiguousarray(grey != 0))

    # ----------------------------------------------------------------- encoders

    def to_rle(self) -> dict:
        """Encode as compressed COCO RLE ``{"size": [H, W], "counts": str}`` (JSON-safe)."""
        # pycocotools runs down columns, so it needs a Fortran-ordered uint8 array.
        rle = coco_mask.encode(np.asfortranarray(self._array, dtype=np.uint8))
        return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}

    def to_png(self, path: str | os.PathLike | None = None) -> bytes:
        """Encode as a 1-bit PNG (True reads back as 255 in ``L``); also write it to ``path`` if given."""
        grey = PIL.Image.fromarray(self._array.astype(np.uint8) * 255)
        # No dithering: values are already exactly 0 or 255, so thresholding is lossless.
        image = grey.convert("1", dither=PIL.Image.Dither.NONE)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", optimize=True)
        data = buffer.getvalue()
        if path is not None:
            from pixelagent.files import writing

            with writing(path, "mask PNG"):
                Path(path).write_bytes(data)
        return data

    def overlay(
        self,
        image: Any,
        color: tuple[int, int, int] = (255, 64, 64),
        alpha: float = 0.5,
        outline: bool = True,
    ) -> PIL.Image.Image:
        """Draw the mask over ``image``; return a new RGB PIL image at the image's size.

        ``image`` is anything :meth:`pixelagent.Agent.session` takes (a path, bytes, a PIL image
        or an array; EXIF orientation applied, so it lines up with the mask). Mask pixels become
        ``(1 - alpha) * image + alpha * color`` (rounded); with ``outline`` the boundary (mask
        pixels with a 4-neighbour outside the mask, the image edge counting as outside) is
        painted in the full ``color``. Other pixels are untouched; ``image`` is not modified.
        For several targets, a legend and small images, see :func:`pixelagent.overlay.render`.
        """
        image = _rgb(image)
        if image.shape[:2] != self.shape:
            raise MaskError(f"overlay image is {image.shape[0]}x{image.shape[1]} but the mask is {_hw(self.shape)}")
        rgb = _check_color(color)
        if not 0.0 <= float(alpha) <= 1.0:
            raise MaskError(f"overlay alpha must be in [0, 1]; got {alpha!r}")
        out = image.copy()
        blended = (1.0 - alpha) * image[self._array].astype(np.float64) + alpha * rgb
        out[self._array] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
        if outline:
            out[_boundary(self._array)] = rgb
        return PIL.Image.fromarray(out)

    # ----------------------------------------------------------------- set operations

    def intersection(self, other: Mask) -> int:
        """Number of pixels set in both masks (same shape required)."""
        self._check_same_shape(other)
        return int(np.count_nonzero(self._array & other._array))

    def iou(self, other: Mask) -> float:
        """Intersection over union in [0, 1]; 1.0 when both masks are empty (they agree exactly)."""
        self._check_same_shape(other)
        union = int(np.count_nonzero(self._array | other._array))
        return 1.0 if union == 0 else self.intersection(other) / union

    def union(self, other: Mask) -> Mask:
        """Pixel-wise logical or (same shape required)."""
        self._check_same_shape(other)
        return Mask._wrap(self._array | other._array)

    @staticmethod
    def union_all(masks: Iterable[Mask]) -> Mask | None:
        """Logical or of all ``masks`` (same shape required); None for an empty iterable."""
        result: Mask | None = None
        for mask in masks:
            result = mask if result is None else result.union(mask)
        return result

    def resize(self, shape: tuple[int, int]) -> Mask:
        """Nearest-neighbour resize to ``shape`` ``(H, W)`` (e.g. a low-resolution decoder output)."""
        h, w = _check_shape(shape, "shape")
        grey = PIL.Image.fromarray(self._array.astype(np.uint8) * 255)
        resized = grey.resize((w, h), PIL.Image.Resampling.NEAREST)  # PIL sizes are (W, H)
        return Mask._wrap(np.ascontiguousarray(np.asarray(resized) != 0))

    def _check_same_shape(self, other: object) -> None:
        if not isinstance(other, Mask):
            raise TypeError(f"expected a Mask; got {type(other).__name__}")
        if other.shape != self.shape:
            raise MaskError(f"mask shapes differ: {_hw(self.shape)} vs {_hw(other.shape)}")

    # ----------------------------------------------------------------- dunders

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mask):
            return NotImplemented
        return self.shape == other.shape and bool(np.array_equal(self._array, other._array))

    def __repr__(self) -> str:
        granularity = self.granularity
        label = "empty" if granularity is None else granularity.value
        return f"Mask({_hw(self.shape)}, area={self.area}, {label})"

    # ----------------------------------------------------------------- pydantic v2

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> core_schema.CoreSchema:
        """Validate from a Mask, a numpy array or a COCO RLE dict; serialise to the RLE dict."""
        return core_schema.no_info_plain_validator_function(
            cls._pydantic_validate,
            # Python mode too gives the RLE dict, so model_dump() output is JSON-ready as is.
            serialization=core_schema.plain_serializer_function_ser_schema(lambda mask: mask.to_rle()),
        )

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: Any, handler: Any) -> dict[str, Any]:
        """JSON schema of the serialised form: a compressed COCO RLE object."""
        return {
            "title": "COCO RLE mask",
            "type": "object",
            "properties": {
                "size": {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 2, "maxItems": 2},
                "counts": {"type": "string"},
            },
            "required": ["size", "counts"],
        }

    @classmethod
    def _pydantic_validate(cls, value: Any) -> Mask:
        if isinstance(value, Mask):
            return value
        if isinstance(value, np.ndarray):
            return cls(value)
        if isinstance(value, dict):
            return cls.from_rle(value)
        raise MaskError(f"expected a Mask, a numpy (H, W) array or a COCO RLE dict; got {type(value).__name__}")


# --------------------------------------------------------------------- helpers


def _rgb(image: Any) -> np.ndarray:
    """An RGB uint8 (H, W, 3) array from what ``load_image`` reads; MaskError otherwise."""
    if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3:
        return image
    from pixelagent.errors import ImageError
    from pixelagent.images import load_image

    try:
        return load_image(image)
    except ImageError as exc:
        raise MaskError(f"overlay needs an image: {exc}") from None


def _freeze(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


def _hw(shape: tuple[int, int]) -> str:
    return f"{shape[0]}x{shape[1]}"


def _describe(value: Any) -> str:
    """Short description of a bad input for error messages (never the whole value)."""
    if isinstance(value, np.ndarray):
        return f"array of shape {value.shape} dtype {value.dtype}"
    if isinstance(value, (bytes, bytearray)):
        return f"{len(value)} bytes"
    if isinstance(value, dict):
        return f"dict with keys {sorted(map(str, value))}"
    if isinstance(value, (str, os.PathLike)):
        return repr(os.fspath(value))
    return type(value).__name__


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_shape(shape: Any, what: str) -> tuple[int, int]:
    """Return ``shape`` as a ``(H, W)`` tuple of ints >= 1, or raise MaskError naming ``what``."""
    if (
        not isinstance(shape, (tuple, list))
        or len(shape) != 2
        or not all(_is_int(side) and side >= 1 for side in shape)
    ):
        raise MaskError(f"{what} must be two integers (H, W), both >= 1; got {shape!r}")
    return (int(shape[0]), int(shape[1]))


def _check_color(color: Any) -> np.ndarray:
    if not isinstance(color, (tuple, list)) or len(color) != 3 or not all(_is_int(c) and 0 <= c <= 255 for c in color):
        raise MaskError(f"overlay color must be three integers in 0..255 (R, G, B); got {color!r}")
    return np.array(color, dtype=np.uint8)


def _runs_from_list(counts: list | tuple) -> np.ndarray:
    """Uncompressed counts as int64 run lengths; range-checked first so int64 cannot overflow."""
    if not all(_is_int(c) and 0 <= c <= _MAX_RUN for c in counts):
        raise MaskError(f'RLE "counts" list must hold only integer run lengths in 0..{_MAX_RUN}')
    return np.array([int(c) for c in counts], dtype=np.int64)


def _parse_compressed_counts(counts: bytes) -> np.ndarray:
    """Decode COCO's compressed counts string into run lengths (int64), mirroring ``rleFrString``.

    Each count is a little-endian base-32 number, one character (offset by 48) per 5 bits; bit
    0x20 marks "more characters follow", bit 0x10 of the last character is the sign. From the
    fourth count on, the value is a delta against the count two places earlier.
    """
    chars = np.frombuffer(counts, dtype=np.uint8).astype(np.int64) - 48
    if chars.size == 0:
        return np.zeros(0, dtype=np.int64)
    if ((chars < 0) | (chars > 63)).any():
        raise MaskError('RLE "counts" string has characters outside "0".."o"; it is not COCO compressed RLE')
    ends = (chars & 0x20) == 0
    if not ends[-1]:
        raise MaskError('RLE "counts" string is truncated (its last count is unfinished)')
    starts = np.flatnonzero(np.concatenate(([True], ends[:-1])))
    lengths = np.diff(np.append(starts, chars.size))
    if lengths.max() > _MAX_CHARS_PER_COUNT:
        raise MaskError('RLE "counts" string holds a run length too large for COCO RLE')
    position = np.arange(chars.size) - np.repeat(starts, lengths)
    values = np.add.reduceat((chars & 0x1F) << (5 * position), starts)
    negative = (chars[ends] & 0x10) != 0
    values = np.where(negative, values - (np.int64(1) << (5 * lengths)), values)
    runs = values.copy()
    runs[1::2] = np.cumsum(values[1::2])  # odd runs: deltas from index 3 on
    runs[2::2] = np.cumsum(values[2::2])  # even runs: deltas from index 4 on (run 0 stays raw)
    return runs


def _check_runs(runs: np.ndarray, h: int, w: int) -> None:
    if runs.size and (runs.min() < 0 or runs.max() > _MAX_RUN):
        raise MaskError(f'RLE "counts" has a run length outside 0..{_MAX_RUN}; the RLE is corrupt')
    total = int(runs.sum())
    if total != h * w:
        raise MaskError(f'RLE "counts" cover {total} pixels but "size" {h}x{w} needs {h * w}; the RLE is corrupt')


def _boundary(array: np.ndarray) -> np.ndarray:
    """Mask pixels with at least one 4-neighbour outside the mask (the image edge counts as outside)."""
    padded = np.pad(array, 1, constant_values=False)
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return array & ~interior
