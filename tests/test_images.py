"""Tests for pixelagent.images: every input kind, every Pillow mode, EXIF, and the pixel budget.

Files are written to tmp_path by Pillow (or byte by byte for forged headers), then read back
through load_image; expected pixel values are worked out by hand, not by calling Pillow again.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from pixelagent.errors import ImageError
from pixelagent.images import DEFAULT_MAX_PIXELS, image_size, load_image

WHITE, BLACK, RED, GREEN, BLUE = (255, 255, 255), (0, 0, 0), (255, 0, 0), (0, 255, 0), (0, 0, 255)
# 16-bit samples and what they become: divided by 257 and rounded (386 / 257 = 1.502).
UINT16 = [65535, 2570, 0, 65280, 386]
UINT16_RGB = {0: WHITE, 1: (10, 10, 10), 2: BLACK, 3: (254, 254, 254), 4: (2, 2, 2)}
ORIENTATION = 0x0112


# --------------------------------------------------------------------------------------- helpers


def _row(mode: str, pixels: list) -> Image.Image:
    """A 1-pixel-high image whose x-th pixel is pixels[x]."""
    image = Image.new(mode, (len(pixels), 1))
    for x, value in enumerate(pixels):
        image.putpixel((x, 0), value)
    return image


def _palette(transparent: bool) -> Image.Image:
    image = _row("P", [0, 1])
    image.putpalette([*RED, *GREEN] + [0] * 762)
    if transparent:
        image.info["transparency"] = 0  # index 0 (red) fully transparent
    return image


def _pa() -> Image.Image:
    image = Image.new("PA", (2, 1))
    image.putpalette([*RED, *BLUE] + [0] * 762)
    image.putpixel((0, 0), (0, 0))  # red, transparent
    image.putpixel((1, 0), (1, 255))  # blue, opaque
    return image


def _uint16(mode: str, values: list[int]) -> Image.Image:
    byteorder = {"I;16B": ">u2", "I;16N": "=u2"}.get(mode, "<u2")
    return Image.frombytes(mode, (len(values), 1), np.array(values, dtype=byteorder).tobytes())


def _float(values: list[float]) -> Image.Image:
    return Image.frombytes("F", (len(values), 1), np.array(values, dtype="=f4").tobytes())


def _png(width: int, height: int, *, idat: bytes = b"") -> bytes:
    """A PNG whose IHDR claims width x height RGB pixels, with whatever IDAT payload is given."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _marked(width: int = 4, height: int = 2) -> Image.Image:
    """Black RGB image with a red top-left and a green top-right pixel."""
    image = Image.new("RGB", (width, height), BLACK)
    image.putpixel((0, 0), RED)
    image.putpixel((width - 1, 0), GREEN)
    return image


def _with_orientation(image: Image.Image, orientation: int) -> Image.Image:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    image.info["exif"] = exif.tobytes()
    image.getexif()[ORIENTATION] = orientation
    return image


def _save(image: Image.Image, path: Path, orientation: int | None = None) -> Path:
    if orientation is None:
        image.save(path)
    else:
        exif = Image.Exif()
        exif[ORIENTATION] = orientation
        image.save(path, exif=exif)
    return path


def _assert_rgb(out: np.ndarray, shape: tuple[int, int]) -> None:
    assert out.dtype == np.uint8
    assert out.shape == (*shape, 3)
    assert out.flags.c_contiguous and out.flags.writeable


# ----------------------------------------------------------------------------- modes via files

# (id, image factory, file suffix, mode Pillow reads back, {x: expected RGB}, tolerance)
FILE_MODE_CASES = [
    ("RGB", lambda: _row("RGB", [(10, 20, 30), (200, 100, 50)]), ".png", "RGB",
     {0: (10, 20, 30), 1: (200, 100, 50)}, 0),
    ("L", lambda: _row("L", [0, 77, 255]), ".png", "L", {0: BLACK, 1: (77, 77, 77), 2: WHITE}, 0),
    ("1", lambda: _row("1", [0, 1]), ".png", "1", {0: BLACK, 1: WHITE}, 0),
    ("P", lambda: _palette(transparent=False), ".png", "P", {0: RED, 1: GREEN}, 0),
    ("P-transparent", lambda: _palette(transparent=True), ".png", "P", {0: WHITE, 1: GREEN}, 0),
    ("LA", lambda: _row("LA", [(50, 0), (50, 255), (0, 128)]), ".png", "LA",
     {0: WHITE, 1: (50, 50, 50), 2: (127, 127, 127)}, 0),
    ("RGBA", lambda: _row("RGBA", [(255, 0, 0, 0), (0, 0, 255, 255), (0, 0, 0, 128)]), ".png",
     "RGBA", {0: WHITE, 1: BLUE, 2: (127, 127, 127)}, 0),
    ("PA", _pa, ".tif", "PA", {0: WHITE, 1: BLUE}, 0),
    ("CMYK-tiff", lambda: _row("CMYK", [(255, 0, 0, 0), (0, 0, 0, 255), (0, 0, 0, 0)]), ".tif",
     "CMYK", {0: (0, 255, 255), 1: BLACK, 2: WHITE}, 0),
    ("CMYK-jpeg", lambda: Image.new("CMYK", (8, 8), (255, 0, 0, 0)), ".jpg", "CMYK",
     {0: (0, 255, 255)}, 4),
    ("YCbCr", lambda: _row("YCbCr", [(255, 128, 128), (0, 128, 128)]), ".tif", "YCbCr",
     {0: WHITE, 1: BLACK}, 0),
    ("LAB", lambda: _row("LAB", [(255, 128, 128), (0, 128, 128)]), ".tif", "LAB",
     {0: WHITE, 1: BLACK}, 2),
    ("I;16", lambda: _uint16("I;16", UINT16), ".png", "I;16", UINT16_RGB, 0),
    ("I;16B", lambda: _uint16("I;16B", UINT16), ".tif", "I;16B", UINT16_RGB, 0),
    ("I", lambda: _row("I", [*UINT16, 70000, -5]), ".tif", "I",
     {**UINT16_RGB, 5: WHITE, 6: BLACK}, 0),  # 16-bit reading, clipped
    ("F-unit", lambda: _float([0.0, 0.5, 1.0]), ".tif", "F",
     {0: BLACK, 1: (128, 128, 128), 2: WHITE}, 0),
    ("F-255", lambda: _float([-3.0, 100.4, 300.0]), ".tif", "F",
     {0: BLACK, 1: (100, 100, 100), 2: WHITE}, 0),
]


@pytest.mark.parametrize(
    ("make", "suffix", "read_mode", "expected", "tolerance"),
    [pytest.param(*case[1:], id=case[0]) for case in FILE_MODE_CASES],
)
def test_file_modes_become_rgb(tmp_path, make, suffix, read_mode, expected, tolerance):
    image = make()
    path = _save(image, tmp_path / f"image{suffix}")
    with Image.open(path) as reread:
        assert reread.mode == read_mode  # the file really exercises this mode

    out = load_image(path)

    _assert_rgb(out, (image.height, image.width))
    for x, rgb in expected.items():
        got = out[0, x].astype(int)
        assert np.abs(got - np.array(rgb)).max() <= tolerance, f"pixel {x}: {tuple(got)} != {rgb}"


# Modes no Pillow writer produces (or reads back unchanged) go in as PIL images.
PIL_MODE_CASES = [
    ("HSV", lambda: _row("HSV", [(0, 255, 255), (0, 0, 255), (0, 0, 0)]),
     {0: RED, 1: WHITE, 2: BLACK}),
    ("I;16L", lambda: _uint16("I;16L", UINT16), UINT16_RGB),
    ("I;16N", lambda: _uint16("I;16N", UINT16), UINT16_RGB),
    ("PA", _pa, {0: WHITE, 1: BLUE}),
    ("RGBX", lambda: _row("RGBX", [(1, 2, 3, 0)]), {0: (1, 2, 3)}),
]


@pytest.mark.parametrize(
    ("make", "expected"), [pytest.param(*case[1:], id=case[0]) for case in PIL_MODE_CASES]
)
def test_pil_modes_become_rgb(make, expected):
    image = make()
    out = load_image(image)
    _assert_rgb(out, (image.height, image.width))
    for x, rgb in expected.items():
        assert tuple(out[0, x]) == rgb


def test_unconvertible_mode_names_the_mode():
    image = Image.new("La", (2, 2))  # premultiplied LA: Pillow cannot convert it to RGB
    with pytest.raises(ImageError, match="'La'"):
        load_image(image)


# ------------------------------------------------------------------------------------------ EXIF

# orientation: (shape (H, W) after transposing, where red lands, where green lands).
# The stored image is 4 wide and 2 high with red at top-left (0, 0) and green at top-right (0, 3).
ORIENTATION_CASES = {
    1: ((2, 4), (0, 0), (0, 3)),
    2: ((2, 4), (0, 3), (0, 0)),  # mirrored left-right
    3: ((2, 4), (1, 3), (1, 0)),  # rotated 180
    4: ((2, 4), (1, 0), (1, 3)),  # mirrored top-bottom
    5: ((4, 2), (0, 0), (3, 0)),  # transposed (mirrored about the main diagonal)
    6: ((4, 2), (0, 1), (3, 1)),  # must be turned 90 degrees clockwise to display
    7: ((4, 2), (3, 1), (0, 1)),  # transversed (mirrored about the anti-diagonal)
    8: ((4, 2), (3, 0), (0, 0)),  # must be turned 90 degrees counter-clockwise to display
}


def _assert_oriented(out: np.ndarray, orientation: int) -> None:
    shape, red_at, green_at = ORIENTATION_CASES[orientation]
    _assert_rgb(out, shape)
    assert tuple(out[red_at]) == RED
    assert tuple(out[green_at]) == GREEN
    assert int(out.sum()) == 2 * 255  # nothing else is coloured: the marks moved, not copied


@pytest.mark.parametrize("orientation", sorted(ORIENTATION_CASES))
def test_exif_orientation_from_png_file(tmp_path, orientation):
    path = _save(_marked(), tmp_path / "marked.png", orientation)
    with Image.open(path) as reread:
        assert reread.getexif()[ORIENTATION] == orientation
    _assert_oriented(load_image(path), orientation)


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_from_bytes_and_pil(tmp_path, orientation):
    path = _save(_marked(), tmp_path / "marked.png", orientation)
    _assert_oriented(load_image(path.read_bytes()), orientation)
    with Image.open(path) as lazy:  # a lazily loaded image, exactly as a caller would pass it
        _assert_oriented(load_image(lazy), orientation)


def test_exif_orientation_from_jpeg(tmp_path):
    # Big flat blocks so JPEG compression keeps the colours recognisable.
    image = Image.new("RGB", (64, 32), BLACK)
    image.paste(RED, (0, 0, 16, 16))
    path = _save(image, tmp_path / "photo.jpg", orientation=6)
    out = load_image(path)
    _assert_rgb(out, (64, 32))
    assert out[4, 28, 0] > 200 and out[4, 28, 1:].max() < 60  # red block now at top-right
    assert out[4, 4].max() < 60  # top-left is black


# ----------------------------------------------------------------------- decompression bombs


@pytest.mark.parametrize("as_bytes", [False, True], ids=["path", "bytes"])
def test_forged_header_is_rejected_before_decoding(tmp_path, as_bytes):
    data = _png(100_000, 100_000, idat=zlib.compress(b"\x00" * 64))
    path = tmp_path / "bomb.png"
    path.write_bytes(data)
    with pytest.raises(ImageError) as info:
        load_image(data if as_bytes else path)
    message = str(info.value)
    assert "100000x100000" in message
    assert "10,000,000,000 pixels" in message
    assert f"{DEFAULT_MAX_PIXELS:,}" in message
    assert "max_pixels=" in message and "Agent.session" in message
    assert ("<bytes>" if as_bytes else str(path)) in message


def test_forged_header_in_lazy_pil_image_is_rejected(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png(100_000, 100_000, idat=zlib.compress(b"\x00" * 64)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # let Image.open hand us the bomb
    with Image.open(path) as lazy, pytest.raises(ImageError, match="100000x100000"):
        load_image(lazy)


def test_max_pixels_bounds_a_real_image(tmp_path):
    path = _save(Image.new("RGB", (20, 20), RED), tmp_path / "small.png")
    with pytest.raises(ImageError, match=r"20x20 \(400 pixels\).*limit of 100 pixels"):
        load_image(path, max_pixels=100)
    assert load_image(path, max_pixels=400).shape == (20, 20, 3)  # the limit is inclusive
    assert load_image(path, max_pixels=None).shape == (20, 20, 3)


def test_pillow_limit_raised_to_ours_and_restored(tmp_path, monkeypatch):
    path = _save(Image.new("RGB", (20, 20), RED), tmp_path / "small.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)  # Pillow alone would refuse 400 pixels
    assert load_image(path, max_pixels=1000).shape == (20, 20, 3)
    assert Image.MAX_IMAGE_PIXELS == 10
    with pytest.raises(ImageError):
        load_image(path, max_pixels=100)
    assert Image.MAX_IMAGE_PIXELS == 10


@pytest.mark.parametrize(
    ("size", "cause"),
    [
        ((12, 12), Image.DecompressionBombWarning),  # 144 pixels: over 100, Pillow warns
        ((20, 20), Image.DecompressionBombError),  # 400 pixels: over 2 * 100, Pillow raises
    ],
)
def test_pillow_bomb_check_during_decoding_becomes_image_error(tmp_path, monkeypatch, size, cause):
    # Some formats (GIF frames, TIFF tiles) check sizes again while decoding; simulate that.
    path = _save(Image.new("RGB", (5, 5), RED), tmp_path / "small.png")
    original_load = ImageFile.ImageFile.load

    def load_with_check(self):
        Image._decompression_bomb_check(size)
        return original_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load_with_check)
    with pytest.raises(ImageError, match=r"too large.*max_pixels=100\b") as info:
        load_image(path, max_pixels=100)
    assert type(info.value.__cause__) is cause
    assert load_image(path, max_pixels=400).shape == (5, 5, 3)  # within our limit: no complaint


@pytest.mark.parametrize("max_pixels", [0, -1, 1.5, True, "100"])
def test_invalid_max_pixels(tmp_path, max_pixels):
    with pytest.raises(ImageError, match="max_pixels must be a positive int or None"):
        load_image(np.zeros((2, 2), np.uint8), max_pixels=max_pixels)


# ----------------------------------------------------------------------------- unreadable input


def _noise_png(path: Path) -> bytes:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
    return path.read_bytes()


@pytest.mark.parametrize(
    "corrupt",
    [
        pytest.param(lambda png: b"this is not an image\n", id="text"),
        pytest.param(lambda png: png[: len(png) // 2], id="truncated-half"),
        pytest.param(lambda png: png[:40], id="truncated-header"),
        pytest.param(lambda png: png[:8], id="signature-only"),
        pytest.param(lambda png: b"", id="empty"),
    ],
)
def test_unreadable_file(tmp_path, corrupt):
    path = tmp_path / "broken.png"
    path.write_bytes(corrupt(_noise_png(tmp_path / "good.png")))
    with pytest.raises(ImageError, match="not a readable image") as info:
        load_image(path)
    assert str(path) in str(info.value)
    assert info.value.__cause__ is not None


def test_unreadable_bytes():
    with pytest.raises(ImageError, match="<bytes> is not a readable image") as info:
        load_image(b"GIF89a nonsense")
    assert "BytesIO" not in str(info.value) and "0x" not in str(info.value)  # no repr of our buffer


@pytest.mark.filterwarnings("error")  # numpy's "All-NaN slice" warning must not leak out
@pytest.mark.parametrize("array, words", [(np.full((2, 2, 3), np.nan), "got no numbers and 12 NaN"),
                                          (np.array([[2.0, np.nan, 0.5]]), "got values from 0.5 to 2.0 and 1 NaN")])
def test_nan_arrays_are_refused_without_warnings(array, words):
    with pytest.raises(ImageError, match=words):
        load_image(array)


@pytest.mark.parametrize("as_path", [str, Path], ids=["str", "Path"])
def test_missing_file(tmp_path, as_path):
    missing = tmp_path / "nope.png"
    with pytest.raises(ImageError, match="does not exist") as info:
        load_image(as_path(missing))
    assert str(missing) in str(info.value)


def test_directory(tmp_path):
    with pytest.raises(ImageError, match="is a directory"):
        load_image(tmp_path)


@pytest.mark.parametrize("source", [42, 1.5, None, [[0, 0]], {"path": "x.png"}])
def test_unsupported_types(source):
    with pytest.raises(ImageError, match=rf"from a {type(source).__name__};.*numpy.ndarray"):
        load_image(source)


# --------------------------------------------------------------------------------- numpy arrays

_GRAY = np.array([[0, 77], [128, 255]], np.uint8)
_GRAY_RGB = np.repeat(_GRAY[:, :, None], 3, axis=2)
_RGB = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 10
_RGBA = np.array([[[255, 0, 0, 0], [0, 0, 255, 255], [0, 0, 0, 128]]], np.uint8)

ARRAY_CASES = [
    ("uint8-HW", _GRAY, _GRAY_RGB),
    ("uint8-HW1", _GRAY[:, :, None], _GRAY_RGB),
    ("uint8-HW3", _RGB, _RGB),
    ("uint8-HW4", _RGBA, np.array([[WHITE, BLUE, (127, 127, 127)]], np.uint8)),
    ("bool", np.array([[False, True]]), np.array([[BLACK, WHITE]], np.uint8)),
    ("uint16-HW", np.array([UINT16], np.uint16), np.array([list(UINT16_RGB.values())], np.uint8)),
    ("uint16-HW3", np.array([[[65535, 0, 2570]]], np.uint16), np.array([[(255, 0, 10)]], np.uint8)),
    ("float32", np.array([[0.0, 0.5, 1.0]], np.float32),
     np.array([[BLACK, (128,) * 3, WHITE]], np.uint8)),
    ("float64-HW3", _RGB / 255.0, _RGB),
    ("float64-HW4", _RGBA / 255.0, np.array([[WHITE, BLUE, (127, 127, 127)]], np.uint8)),
    ("non-contiguous", _RGB[:, ::-1], _RGB[:, ::-1]),
    ("fortran-order", np.asfortranarray(_RGB), _RGB),
]


@pytest.mark.parametrize(
    ("array", "expected"), [pytest.param(*case[1:], id=case[0]) for case in ARRAY_CASES]
)
def test_accepted_arrays(array, expected):
    before = array.copy()
    out = load_image(array)
    _assert_rgb(out, expected.shape[:2])
    np.testing.assert_array_equal(out, expected)
    assert not np.shares_memory(out, array)
    out[...] = 7  # the caller's array must not change
    np.testing.assert_array_equal(array, before)


@pytest.mark.parametrize(
    ("array", "match"),
    [
        pytest.param(np.zeros((2, 2, 5), np.uint8), r"shape \(2, 2, 5\)", id="5-channels"),
        pytest.param(np.zeros((2, 2, 2), np.uint8), r"shape \(2, 2, 2\)", id="2-channels"),
        pytest.param(np.zeros(6, np.uint8), r"shape \(6,\)", id="1-D"),
        pytest.param(np.zeros((1, 2, 2, 3), np.uint8), r"shape \(1, 2, 2, 3\)", id="4-D"),
        pytest.param(np.zeros((0, 4, 3), np.uint8), r"shape \(0, 4, 3\)", id="empty"),
        pytest.param(np.zeros((2, 2), np.int64), "dtype int64", id="int64"),
        pytest.param(np.zeros((2, 2), np.uint32), "dtype uint32", id="uint32"),
        pytest.param(np.zeros((2, 2), np.complex64), "dtype complex64", id="complex"),
        pytest.param(np.zeros((2, 2), object), "dtype object", id="object"),
        pytest.param(np.array([[0.0, 255.0]]), r"\[0, 1\].*divide by 255", id="float-0-255"),
        pytest.param(np.array([[-0.1, 0.5]], np.float32), r"\[0, 1\]", id="float-negative"),
        pytest.param(np.array([[np.nan, 0.5]]), r"\[0, 1\]", id="float-nan"),
    ],
)
def test_rejected_arrays(array, match):
    with pytest.raises(ImageError, match=match) as info:
        load_image(array)
    if "shape" in match or "dtype" in match:
        assert "(H, W, 3)" in str(info.value)  # the message lists the accepted forms


# ------------------------------------------------------------------------------- bytes and PIL


def test_bytes_input(tmp_path):
    path = _save(_row("RGBA", [(255, 0, 0, 0), (0, 0, 255, 255)]), tmp_path / "a.png")
    out = load_image(path.read_bytes())
    np.testing.assert_array_equal(out, np.array([[WHITE, BLUE]], np.uint8))
    np.testing.assert_array_equal(load_image(bytearray(path.read_bytes())), out)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "I;16"])
def test_pil_input_not_mutated(mode):
    image = _with_orientation(_marked().convert(mode), 6)
    def state(image):
        return image.mode, image.size, image.tobytes(), dict(image.info), dict(image.getexif())

    before = state(image)
    out = load_image(image)
    assert out.shape == (4, 2, 3)  # orientation applied to the output...
    assert state(image) == before  # ...but not to the caller's image
    out[...] = 0
    assert image.tobytes() == before[2]


def test_pil_rgb_output_is_a_copy():
    image = Image.new("RGB", (3, 2), RED)
    out = load_image(image)
    out[...] = 0
    assert image.getpixel((0, 0)) == RED


# ------------------------------------------------------------------------------------ image_size


def test_image_size():
    assert image_size(load_image(np.zeros((5, 7), np.uint8))) == (5, 7)
    assert image_size(np.zeros((5, 7), np.uint8)) == (5, 7)
    with pytest.raises(ImageError, match="shape"):
        image_size(np.zeros(3))


def test_default_max_pixels_is_twice_pillows_default():
    assert DEFAULT_MAX_PIXELS == 178_956_970 == 2 * 89_478_485
