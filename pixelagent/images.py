"""Image input: turn a path, encoded bytes, a PIL image or a numpy array into one RGB array.

Every image pixelagent works on is a ``numpy.ndarray`` of shape ``(H, W, 3)``, dtype ``uint8``,
C-contiguous, with the EXIF orientation already applied, so that mask coordinates match what a
person sees in an image viewer. :func:`load_image` is the only way in; :func:`image_size` reads
``(H, W)`` back from such an array.

Files and bytes are checked against a pixel budget (``max_pixels``) using the size in the file
header, before any pixel is decoded, so a small file claiming a huge size (a "decompression
bomb") fails fast instead of exhausting memory.
"""

from __future__ import annotations

import io
import os
import re
import struct
import warnings
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Union

import numpy as np
from PIL import ExifTags, Image, ImageOps

from pixelagent.errors import ImageError
from pixelagent.files import check_regular_file

__all__ = ["DEFAULT_MAX_PIXELS", "ImageInput", "image_size", "load_image"]

ImageInput = Union[str, os.PathLike, bytes, Image.Image, np.ndarray]

#: Largest ``width * height`` that :func:`load_image` decodes unless told otherwise:
#: 178_956_970 pixels, twice Pillow's default ``Image.MAX_IMAGE_PIXELS`` (about 13_400 x 13_400,
#: ~540 MB as RGB). Large enough for any camera or scanned page, small enough that a forged header
#: cannot make us allocate tens of gigabytes. Pass ``max_pixels=None`` to disable the check.
DEFAULT_MAX_PIXELS: int = 2 * 89_478_485

_ACCEPTED_TYPES = "a path (str or os.PathLike), encoded bytes, a PIL.Image.Image or a numpy.ndarray"
_ACCEPTED_ARRAYS = (
    "(H, W), (H, W, 1), (H, W, 3) or (H, W, 4) arrays of dtype uint8, bool, uint16, "
    "or float32/float64 with values in [0, 1]"
)

# What Pillow raises for data it cannot parse: UnidentifiedImageError and truncation are OSError,
# broken chunks are SyntaxError, and some decoders leak struct/zlib/EOF errors.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error)
_BOMB_ERRORS = (Image.DecompressionBombError, Image.DecompressionBombWarning)

_ALPHA_MODES = frozenset({"P", "PA", "LA", "RGBA", "RGBa"})
_CONVERTIBLE_MODES = frozenset({"CMYK", "YCbCr", "LAB", "HSV", "RGBX"})
_UINT16_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N"})


def load_image(source: ImageInput, *, max_pixels: int | None = DEFAULT_MAX_PIXELS,
               name: str | None = None) -> np.ndarray:
    """Return ``source`` as an RGB ``uint8`` array of shape ``(H, W, 3)``, C-contiguous.

    ``source`` may be a path, the encoded bytes of an image file, a ``PIL.Image.Image`` (not
    modified) or a ``numpy.ndarray`` (see :func:`_array_to_rgb` for accepted shapes and dtypes).
    EXIF orientation is applied to files, bytes and PIL images; arrays carry no EXIF. Transparent
    images are composited onto white. The result is always a new array, never a view of the input.

    ``max_pixels`` bounds ``width * height`` for everything Pillow decodes (files, bytes, PIL
    images, which may still be lazily loaded); ``None`` disables the bound. Arrays are already in
    memory and are not checked. ``name`` is what errors call encoded bytes (``<bytes>``
    by default), for bytes read from a file the caller names.

    Raises :class:`~pixelagent.errors.ImageError` when the source is missing, unreadable, too large,
    of an unsupported mode, shape or dtype, or of an unsupported type.
    """
    _check_max_pixels(max_pixels)
    if isinstance(source, np.ndarray):
        return _array_to_rgb(source)
    if isinstance(source, Image.Image):
        name = getattr(source, "filename", "") or "<PIL.Image>"
        return _decode(source, name, max_pixels, owned=False)
    if isinstance(source, (bytes, bytearray)):
        return _open_and_decode(lambda: Image.open(io.BytesIO(source)), name or "<bytes>", max_pixels)
    if isinstance(source, (str, os.PathLike)):
        return _open_path(source, max_pixels)
    raise ImageError(f"cannot load an image from a {type(source).__name__}; pass {_ACCEPTED_TYPES}")


def image_size(image: np.ndarray) -> tuple[int, int]:
    """Return ``(H, W)`` of an image array of shape ``(H, W)`` or ``(H, W, C)``."""
    shape = getattr(image, "shape", None)
    if shape is None or len(shape) not in (2, 3):
        raise ImageError(f"expected an image array of shape (H, W) or (H, W, C), got {shape!r}")
    return int(shape[0]), int(shape[1])


def _check_max_pixels(max_pixels: int | None) -> None:
    # bool is an int subclass; max_pixels=True would silently mean "1 pixel".
    valid = max_pixels is None or (
        isinstance(max_pixels, int) and not isinstance(max_pixels, bool) and max_pixels > 0
    )
    if not valid:
        raise ImageError(f"max_pixels must be a positive int or None, got {max_pixels!r}")


def _open_path(path: str | os.PathLike, max_pixels: int | None) -> np.ndarray:
    """Decode the image file at ``path``; the file is closed before returning."""
    name = os.fsdecode(path)
    if not os.path.exists(path):
        raise ImageError(f"{name}: the file does not exist; check the path")
    if os.path.isdir(path):
        raise ImageError(f"{name} is a directory, not an image file; pass the path of one image")
    # a FIFO or a device would block or never end inside Image.open: refuse it before opening
    check_regular_file(path, "image", ImageError)
    return _open_and_decode(lambda: Image.open(path), name, max_pixels)


def _open_and_decode(
    opener: Callable[[], Image.Image], name: str, max_pixels: int | None
) -> np.ndarray:
    """Open (header only) with ``opener``, then decode via :func:`_decode`, then close."""
    try:
        # Pillow's own header check is off while opening: ours runs right after in _decode and,
        # unlike Pillow's, names the width and height and how to raise the limit.
        with _pillow_pixel_limit(None):
            image = opener()
    except _DECODE_ERRORS as exc:
        raise ImageError(f"{name} is not a readable image ({_reason(exc)})") from exc
    with image:
        return _decode(image, name, max_pixels, owned=True)


def _decode(image: Image.Image, name: str, max_pixels: int | None, *, owned: bool) -> np.ndarray:
    """Check the size, decode pixels, apply EXIF orientation, return ``(H, W, 3)`` uint8.

    ``owned`` says whether ``image`` may be modified (we opened it) or belongs to the caller.
    """
    _check_pixels(image.size, name, max_pixels)
    try:
        with _pillow_pixel_limit(max_pixels):
            image.load()
            if owned:
                ImageOps.exif_transpose(image, in_place=True)
            elif _orientation(image) != 1:
                image = ImageOps.exif_transpose(image)
    except _BOMB_ERRORS as exc:
        # Some formats (GIF frames, TIFF tiles, ICO) check sizes again while decoding.
        raise ImageError(
            f"{name} is too large to decode safely ({exc}); "
            f"the limit is max_pixels={max_pixels:,}. "
            "Pass max_pixels=None (or a larger number) to load_image / Agent.session, or "
            "--max-pixels 0 on the command line, if you trust this file"
        ) from exc
    except _DECODE_ERRORS as exc:
        raise ImageError(f"{name} is not a readable image ({_reason(exc)})") from exc
    return _to_rgb(image, name)


def _reason(exc: BaseException) -> str:
    """Pillow's message without the repr of our in-memory buffer ("<_io.BytesIO object at 0x…>"),
    which tells the user nothing; the name we print already says which input it was."""
    text = re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "", str(exc)).strip()
    return text or type(exc).__name__


def _orientation(image: Image.Image) -> int:
    # Skipping exif_transpose when there is nothing to do avoids copying the caller's pixels.
    return image.getexif().get(ExifTags.Base.Orientation, 1)


def _check_pixels(size: tuple[int, int], name: str, max_pixels: int | None) -> None:
    """Raise ImageError if ``width * height`` from the header exceeds ``max_pixels``."""
    width, height = size
    if max_pixels is None or width * height <= max_pixels:
        return
    raise ImageError(
        f"{name} is {width}x{height} ({width * height:,} pixels), over the limit of "
        f"{max_pixels:,} pixels that guards against decompression bombs; "
        f"pass max_pixels={width * height} (or None) to load_image / Agent.session, or "
        f"--max-pixels {width * height} (0: no limit) on the command line, if you trust this file"
    )


@contextmanager
def _pillow_pixel_limit(max_pixels: int | None) -> Iterator[None]:
    """Set Pillow's bomb limit to ``max_pixels`` and make its bomb warning an error, then restore.

    Pillow's default limit is half of ours; without raising it, Pillow would refuse or warn about
    files we allow. Both ``Image.MAX_IMAGE_PIXELS`` and the warning filters are process-global, so
    threads loading concurrently may briefly see each other's setting; the authoritative check
    (:func:`_check_pixels`) does not depend on either.
    """
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def _to_rgb(image: Image.Image, name: str) -> np.ndarray:
    """Convert a loaded PIL image of any mode to a new ``(H, W, 3)`` uint8 array."""
    mode = image.mode
    if mode == "RGB":
        return np.array(image)
    if mode == "L":
        return _gray_to_rgb(np.asarray(image))
    if mode == "1":
        return _gray_to_rgb(np.asarray(image.convert("L")))
    if mode in _ALPHA_MODES:
        return _composite_on_white(np.asarray(image.convert("RGBA")))
    if mode in _CONVERTIBLE_MODES:
        return np.array(image.convert("RGB"))
    if mode in _UINT16_MODES or mode == "I":
        # "I" is 32-bit but in practice holds 16-bit data (PNG/TIFF 16-bit often open as "I").
        return _gray_to_rgb(_uint16_to_uint8(np.clip(np.asarray(image), 0, 65535)))
    if mode == "F":
        return _gray_to_rgb(_float_to_uint8(np.asarray(image)))
    try:
        return np.array(image.convert("RGB"))
    except (ValueError, OSError) as exc:
        raise ImageError(
            f"{name} has image mode {mode!r}, which cannot be converted to RGB"
        ) from exc


def _array_to_rgb(array: np.ndarray) -> np.ndarray:
    """Convert a caller's array to a new C-contiguous ``(H, W, 3)`` uint8 array.

    Shapes: ``(H, W)``, ``(H, W, 1)`` (greyscale, replicated), ``(H, W, 3)`` (RGB) and
    ``(H, W, 4)`` (RGBA, composited onto white). Dtypes: ``uint8`` as is, ``bool`` as 0/255,
    ``uint16`` divided by 257, floating point with values in [0, 1] scaled by 255 and rounded.
    """
    shape_ok = array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (1, 3, 4))
    if not shape_ok or array.size == 0:
        raise ImageError(
            f"cannot use an array of shape {array.shape} and dtype {array.dtype} as an image; "
            f"pass {_ACCEPTED_ARRAYS}"
        )
    pixels = _array_to_uint8(array)
    if pixels.ndim == 2 or pixels.shape[2] == 1:
        return _gray_to_rgb(pixels.reshape(pixels.shape[:2]))
    if pixels.shape[2] == 4:
        return _composite_on_white(pixels)
    # Copy even when already uint8: the caller must be free to change their array afterwards.
    return np.array(pixels, dtype=np.uint8, order="C", copy=True)


def _array_to_uint8(array: np.ndarray) -> np.ndarray:
    """Scale an array's values to uint8 (same shape); may return ``array`` itself."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * np.uint8(255)
    if array.dtype == np.uint16:
        return _uint16_to_uint8(array)
    if np.issubdtype(array.dtype, np.floating):
        # NaN fails both comparisons, so it is rejected too.
        if not (np.all(array >= 0.0) and np.all(array <= 1.0)):
            nan = np.isnan(array)
            finite = array[~nan]
            values = (f"values from {finite.min()} to {finite.max()}" if finite.size else "no numbers") + (
                f" and {int(nan.sum())} NaN" if nan.any() else "")
            raise ImageError(
                f"a float image array must hold values in [0, 1], got {values} (shape {array.shape}, dtype "
                f"{array.dtype}); divide by 255 if it holds 0..255, or convert it to uint8"
            )
        return np.rint(array * 255.0).astype(np.uint8)
    raise ImageError(
        f"cannot use an array of dtype {array.dtype} (shape {array.shape}) as an image; "
        f"pass {_ACCEPTED_ARRAYS}"
    )


def _uint16_to_uint8(values: np.ndarray) -> np.ndarray:
    """Map 0..65535 to 0..255 by rounded division by 257 (65535 / 257 == 255 exactly)."""
    return ((values.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _float_to_uint8(values: np.ndarray) -> np.ndarray:
    """Map a float ("F" mode) image to uint8: [0, 1] data is scaled, anything else clipped."""
    values = np.nan_to_num(values.astype(np.float64), nan=0.0)
    # Data in [0, 1] is a normalised image; larger values are taken to be on the 0..255 scale.
    if values.size and values.max() <= 1.0:
        values = values * 255.0
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    """Replicate an ``(H, W)`` uint8 array into a new ``(H, W, 3)`` array."""
    return np.repeat(gray[:, :, np.newaxis], 3, axis=2)


def _composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """Composite an ``(H, W, 4)`` uint8 RGBA array onto white, giving ``(H, W, 3)`` uint8.

    Fully transparent pixels often carry arbitrary colour (black, or leftovers from editing), so
    dropping alpha would show content the author hid; white is what viewers and documents show.
    """
    rgb = rgba[:, :, :3].astype(np.uint16)
    alpha = rgba[:, :, 3:4].astype(np.uint16)
    # Max is 255 * 255 + 127, which fits uint16; +127 rounds to nearest.
    return ((rgb * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)
