"""Tests for pixelagent.mask: RLE/PNG codecs (cross-checked against pycocotools), granularity,
overlay, set operations, immutability and the pydantic v2 field integration."""

from __future__ import annotations

import io
import json

import numpy as np
import PIL.Image
import pytest
from pycocotools import mask as coco_mask
from pydantic import BaseModel, ValidationError

from pixelagent.errors import MaskError
from pixelagent.mask import (
    COCO_REFERENCE_SIDE,
    Granularity,
    Mask,
    classify_granularity,
    granularity_scale,
)

# pycocotools' own decode (used here only as the reference) trips a numpy 2 deprecation inside its
# Cython code; it is not ours to fix and would bury real warnings.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

SHAPES = [(1, 1), (1, 37), (29, 1), (7, 13), (64, 48), (123, 201)]
DENSITIES = [0.0, 0.03, 0.5, 0.97, 1.0]


def random_array(shape: tuple[int, int], density: float, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random(shape) < density


def blob_array(shape: tuple[int, int], seed: int) -> np.ndarray:
    """A few filled rectangles: long runs, unlike per-pixel noise."""
    rng = np.random.default_rng(seed)
    out = np.zeros(shape, dtype=bool)
    for _ in range(3):
        y0, x0 = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        out[y0 : y0 + rng.integers(1, shape[0] + 1), x0 : x0 + rng.integers(1, shape[1] + 1)] = True
    return out


def coco_encode(array: np.ndarray) -> dict:
    """Reference encoding straight from pycocotools (counts as bytes)."""
    return coco_mask.encode(np.asfortranarray(array.astype(np.uint8)))


def uncompressed_counts(array: np.ndarray) -> list[int]:
    """Column-major run lengths starting with a (possibly empty) run of zeros, as COCO expects."""
    flat = array.ravel(order="F").astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    edges = np.concatenate(([0], change, [flat.size]))
    runs = np.diff(edges).tolist()
    return [0, *runs] if flat[0] else runs


def arrays():
    """(id, array) cases: noise at several densities and blobs, over every shape."""
    seed = 0
    for shape in SHAPES:
        for density in DENSITIES:
            seed += 1
            yield pytest.param(random_array(shape, density, seed), id=f"{shape[0]}x{shape[1]}-p{density}")
        seed += 1
        yield pytest.param(blob_array(shape, seed), id=f"{shape[0]}x{shape[1]}-blobs")


ARRAYS = list(arrays())


# --------------------------------------------------------------------- construction


@pytest.mark.parametrize(
    "array",
    [
        np.array([[0, 1], [1, 0]], dtype=np.uint8),
        np.array([[0, 1], [1, 0]], dtype=np.int64),
        np.array([[0.0, 1.0], [1.0, 0.0]], dtype=np.float32),
        np.array([[False, True], [True, False]]),
    ],
    ids=["uint8", "int64", "float32", "bool"],
)
def test_accepts_bool_and_binary_numbers(array):
    mask = Mask(array)
    assert mask.array.dtype == np.bool_
    assert mask.array.flags.c_contiguous
    np.testing.assert_array_equal(mask.array, array.astype(bool))


def test_stores_a_contiguous_copy_of_a_strided_view():
    base = np.arange(24).reshape(4, 6) % 2
    view = base[:, ::2].T  # non-contiguous
    mask = Mask(view)
    assert mask.array.flags.c_contiguous
    np.testing.assert_array_equal(mask.array, view.astype(bool))


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [
        (np.zeros((2, 3, 4), dtype=bool), "(2, 3, 4)"),
        (np.zeros(5, dtype=bool), "(5,)"),
        (np.zeros((0, 4), dtype=bool), "(0, 4)"),
        (np.zeros((4, 0), dtype=bool), "(4, 0)"),
        (np.array([[0, 1], [2, 0]]), "0/1"),
        (np.array([[0.0, 0.5]]), "0/1"),
        (np.array([[0.0, np.nan]]), "0/1"),
        (np.array([[-1, 0]]), "0/1"),
        (np.array([["a", "b"]]), "dtype <U1"),
        (np.array([[1 + 0j]]), "complex"),
        ([[0, 1]], "list"),
    ],
)
def test_rejects_bad_arrays_with_a_helpful_message(bad, fragment):
    with pytest.raises(MaskError) as info:
        Mask(bad)
    assert fragment in str(info.value)
    assert "2-D (H, W)" in str(info.value)  # says what is accepted


def test_empty():
    mask = Mask.empty((3, 5))
    assert mask.shape == (3, 5)
    assert mask.is_empty and mask.area == 0
    assert mask.bbox is None and mask.granularity is None
    assert repr(mask) == "Mask(3x5, area=0, empty)"


@pytest.mark.parametrize("shape", [(0, 3), (3,), (3, -1), (2.0, 3), "ab", None, (True, 2)])
def test_empty_rejects_bad_shape(shape):
    with pytest.raises(MaskError):
        Mask.empty(shape)


# --------------------------------------------------------------------- immutability


def test_array_is_read_only():
    mask = Mask(np.eye(3, dtype=bool))
    with pytest.raises(ValueError):
        mask.array[0, 1] = True
    with pytest.raises(ValueError):
        mask.array.flags.writeable = True
    assert mask.area == 3


def test_later_changes_to_the_input_do_not_leak_in():
    source = np.eye(3, dtype=bool)
    mask = Mask(source)
    source[0, 1] = True
    assert source.flags.writeable  # the caller's array is not frozen
    assert mask.area == 3


def test_unhashable_like_ndarray():
    with pytest.raises(TypeError):
        hash(Mask.empty((2, 2)))


# --------------------------------------------------------------------- properties vs pycocotools


@pytest.mark.parametrize("array", ARRAYS)
def test_area_and_bbox_match_pycocotools(array):
    mask = Mask(array)
    rle = coco_encode(array)
    assert mask.area == int(coco_mask.area(rle)) == int(array.sum())
    assert mask.is_empty == (not array.any())
    if not array.any():
        assert mask.bbox is None
        return
    x, y, w, h = (int(v) for v in coco_mask.toBbox(rle))
    assert mask.bbox == (x, y, x + w, y + h)
    x0, y0, x1, y1 = mask.bbox
    assert array[y0:y1, x0:x1].sum() == array.sum()  # the box holds every pixel ...
    assert array[y0, x0:x1].any() and array[y1 - 1, x0:x1].any()  # ... and is tight
    assert array[y0:y1, x0].any() and array[y0:y1, x1 - 1].any()


def test_bbox_is_exclusive_on_a_known_mask():
    array = np.zeros((10, 20), dtype=bool)
    array[2:5, 7:12] = True
    assert Mask(array).bbox == (7, 2, 12, 5)


# --------------------------------------------------------------------- RLE


@pytest.mark.parametrize("array", ARRAYS)
def test_rle_round_trip_and_agreement_with_pycocotools(array):
    mask = Mask(array)
    rle = mask.to_rle()
    reference = coco_encode(array)
    assert rle == {"size": list(array.shape), "counts": reference["counts"].decode("ascii")}
    assert json.loads(json.dumps(rle)) == rle
    assert Mask.from_rle(rle) == mask
    np.testing.assert_array_equal(coco_mask.decode({**rle, "counts": rle["counts"].encode()}), array)


@pytest.mark.parametrize("array", ARRAYS)
def test_from_rle_decodes_what_pycocotools_encoded(array):
    reference = coco_encode(array)  # counts as bytes
    np.testing.assert_array_equal(Mask.from_rle(reference).array, array)
    as_str = {"size": list(reference["size"]), "counts": reference["counts"].decode("ascii")}
    np.testing.assert_array_equal(Mask.from_rle(as_str).array, array)


@pytest.mark.parametrize("array", ARRAYS)
def test_from_rle_uncompressed_list_counts(array):
    h, w = array.shape
    uncompressed = {"size": [h, w], "counts": uncompressed_counts(array)}
    np.testing.assert_array_equal(coco_mask.decode(coco_mask.frPyObjects(uncompressed, h, w)), array)
    np.testing.assert_array_equal(Mask.from_rle(uncompressed).array, array)


@pytest.mark.parametrize(
    ("rle", "fragment"),
    [
        ([3, 3], "dict"),
        ({"size": [3, 3]}, '"counts"'),
        ({"counts": "9"}, '"size"'),
        ({"size": [3], "counts": "9"}, '"size"'),
        ({"size": [3, 3, 1], "counts": "9"}, '"size"'),
        ({"size": [0, 3], "counts": "0"}, '"size"'),
        ({"size": [3.0, 3], "counts": "9"}, '"size"'),
        ({"size": [3, 3], "counts": 9}, "str, bytes or list"),
        ({"size": [3, 3], "counts": None}, "str, bytes or list"),
        ({"size": [3, 3], "counts": ""}, "cover 0 pixels"),
        ({"size": [3, 3], "counts": "1"}, "cover 1 pixels"),  # pycocotools alone returns garbage here
        ({"size": [3, 3], "counts": "<0"}, "cover 12 pixels"),
        ({"size": [3, 3], "counts": "!!!"}, "outside"),
        ({"size": [3, 3], "counts": "p"}, "outside"),
        ({"size": [3, 3], "counts": "3b"}, "truncated"),
        ({"size": [3, 3], "counts": "\u00e99"}, "ASCII"),
        ({"size": [3, 3], "counts": "0ooooooo1"}, "too large"),
        ({"size": [3, 3], "counts": "146J"}, "outside 0.."),  # runs 1, 4, 6, 4 - 6: sums to 9, one negative
        ({"size": [3, 3], "counts": [4, 4]}, "cover 8 pixels"),
        ({"size": [3, 3], "counts": [4, -1, 6]}, "run lengths"),
        ({"size": [3, 3], "counts": [4, 5.0]}, "run lengths"),
        ({"size": [3, 3], "counts": [4, "5"]}, "run lengths"),
    ],
)
def test_from_rle_rejects_bad_input(rle, fragment):
    with pytest.raises(MaskError) as info:
        Mask.from_rle(rle)
    assert fragment in str(info.value)


def test_from_rle_accepts_a_leading_zero_run():
    # All-ones mask: COCO counts start with an empty run of zeros.
    mask = Mask.from_rle({"size": [2, 3], "counts": [0, 6]})
    assert mask.area == 6 and mask.to_rle()["counts"] == coco_encode(np.ones((2, 3), bool))["counts"].decode()


# --------------------------------------------------------------------- granularity


def test_granularity_scale():
    assert COCO_REFERENCE_SIDE == 640
    assert granularity_scale((480, 640)) == 1.0
    assert granularity_scale((1024, 1024)) == pytest.approx(1.6)
    assert granularity_scale((512, 1024)) == granularity_scale((1024, 512))


# (32 s)^2 and (96 s)^2 exactly: 1024 and 9216 on 640 px; 2621.44 and 23592.96 on 1024 px (s = 1.6).
@pytest.mark.parametrize(
    ("image_size", "area", "expected"),
    [
        ((480, 640), 0, Granularity.FINE),
        ((480, 640), 1023, Granularity.FINE),
        ((480, 640), 1024, Granularity.MEDIUM),
        ((480, 640), 9216, Granularity.MEDIUM),
        ((480, 640), 9217, Granularity.COARSE),
        ((1024, 1024), 304, Granularity.FINE),  # PRIST's minimum-area example
        ((1024, 1024), 2621, Granularity.FINE),
        ((1024, 1024), 2622, Granularity.MEDIUM),
        ((1024, 1024), 23592, Granularity.MEDIUM),
        ((1024, 1024), 23593, Granularity.COARSE),
        ((768, 1024), 2622, Granularity.MEDIUM),  # the longest side sets the scale ...
        ((1024, 768), 2621, Granularity.FINE),  # ... whichever axis it is on
        ((1280, 100), 4095, Granularity.FINE),  # s = 2: bounds 4096 and 36864
        ((1280, 100), 4096, Granularity.MEDIUM),
        ((1280, 100), 36864, Granularity.MEDIUM),
        ((1280, 100), 36865, Granularity.COARSE),
    ],
)
def test_classify_granularity_boundaries(image_size, area, expected):
    assert classify_granularity(area, image_size) is expected


def test_boundaries_match_the_float_formula():
    s = granularity_scale((1024, 1024))
    fine_bound, coarse_bound = (32 * s) ** 2, (96 * s) ** 2
    assert fine_bound == pytest.approx(2621.44) and coarse_bound == pytest.approx(23592.96)
    for area in range(2600, 2650):
        assert (classify_granularity(area, (1024, 1024)) is Granularity.FINE) == (area < fine_bound)


@pytest.mark.parametrize(("area", "image_size"), [(-1, (10, 10)), (1.5, (10, 10)), (True, (10, 10)), (5, (0, 10))])
def test_classify_granularity_rejects_bad_input(area, image_size):
    with pytest.raises(MaskError):
        classify_granularity(area, image_size)


def test_mask_granularity_uses_its_own_shape_and_repr():
    array = np.zeros((1024, 1024), dtype=bool)
    array[:16, :19] = True  # 304 px
    mask = Mask(array)
    assert mask.granularity is Granularity.FINE
    assert repr(mask) == "Mask(1024x1024, area=304, fine)"
    assert Mask(np.ones((480, 640), bool)).granularity is Granularity.COARSE


# --------------------------------------------------------------------- PNG


@pytest.mark.parametrize("array", ARRAYS[::3])
def test_png_round_trip(array, tmp_path):
    mask = Mask(array)
    data = mask.to_png()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    with PIL.Image.open(io.BytesIO(data)) as image:
        assert image.mode in ("1", "L")
        grey = np.asarray(image.convert("L"))
    np.testing.assert_array_equal(grey, np.where(array, 255, 0))
    path = tmp_path / "mask.png"
    assert mask.to_png(path) == data
    assert path.read_bytes() == data
    assert Mask.from_png(data) == mask
    assert Mask.from_png(path) == mask
    assert Mask.from_png(str(path)) == mask


def test_from_png_treats_any_nonzero_grey_as_true():
    grey = np.array([[0, 1, 7], [128, 255, 0]], dtype=np.uint8)
    buffer = io.BytesIO()
    PIL.Image.fromarray(grey).save(buffer, format="PNG")
    np.testing.assert_array_equal(Mask.from_png(buffer.getvalue()).array, grey != 0)


def test_from_png_converts_colour_to_grey_first():
    rgb = np.zeros((2, 2, 3), dtype=np.uint8)
    rgb[0, 0] = (255, 0, 0)
    buffer = io.BytesIO()
    PIL.Image.fromarray(rgb).save(buffer, format="PNG")
    np.testing.assert_array_equal(Mask.from_png(buffer.getvalue()).array, [[True, False], [False, False]])


def test_from_png_rejects_garbage():
    with pytest.raises(MaskError):
        Mask.from_png(b"not a png at all")


# --------------------------------------------------------------------- overlay


def test_overlay_changes_only_mask_pixels():
    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, size=(20, 30, 3), dtype=np.uint8)
    original = image.copy()
    array = np.zeros((20, 30), dtype=bool)
    array[5:15, 8:20] = True
    color, alpha = (10, 200, 30), 0.25
    result = Mask(array).overlay(image, color=color, alpha=alpha)

    assert isinstance(result, PIL.Image.Image) and result.mode == "RGB" and result.size == (30, 20)
    out = np.asarray(result)
    np.testing.assert_array_equal(image, original)  # input untouched
    np.testing.assert_array_equal(out[~array], image[~array])
    boundary = array.copy()
    boundary[6:14, 9:19] = False  # a rectangle's boundary is its one-pixel frame
    interior = array & ~boundary
    np.testing.assert_array_equal(out[boundary], np.broadcast_to(color, (boundary.sum(), 3)))
    expected = np.rint(0.75 * image[interior].astype(float) + 0.25 * np.array(color))
    np.testing.assert_array_equal(out[interior], expected.astype(np.uint8))


def test_overlay_without_outline_blends_every_mask_pixel():
    image = np.full((4, 4, 3), 100, dtype=np.uint8)
    array = np.zeros((4, 4), dtype=bool)
    array[1:3, 1:3] = True
    out = np.asarray(Mask(array).overlay(image, color=(200, 0, 100), alpha=0.5, outline=False))
    np.testing.assert_array_equal(out[array], np.broadcast_to([150, 50, 100], (4, 3)))
    np.testing.assert_array_equal(out[~array], image[~array])


@pytest.mark.parametrize(
    ("image", "kwargs", "fragment"),
    [
        (np.zeros((5, 4, 3), np.uint8), {}, "5x4"),
        ("no-such-image.png", {}, "does not exist"),
        (42, {}, "cannot load an image from a int"),
        (np.zeros((4, 5, 3), np.uint8), {"alpha": 1.5}, "alpha"),
        (np.zeros((4, 5, 3), np.uint8), {"color": (0, 0, 256)}, "color"),
    ],
)
def test_overlay_rejects_bad_input(image, kwargs, fragment):
    with pytest.raises(MaskError) as info:
        Mask.empty((4, 5)).overlay(image, **kwargs)
    assert fragment in str(info.value)


# --------------------------------------------------------------------- set operations


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("shape", [(1, 40), (17, 23), (64, 64)])
def test_set_operations_match_numpy(shape, seed):
    a, b, c = (random_array(shape, 0.4, seed * 3 + k) for k in range(3))
    ma, mb, mc = Mask(a), Mask(b), Mask(c)
    inter, union = int((a & b).sum()), int((a | b).sum())
    assert ma.intersection(mb) == inter
    assert ma.iou(mb) == pytest.approx(inter / union)
    assert ma.iou(ma) == 1.0
    np.testing.assert_array_equal(ma.union(mb).array, a | b)
    np.testing.assert_array_equal(Mask.union_all([ma, mb, mc]).array, a | b | c)
    np.testing.assert_array_equal(Mask.union_all(iter([ma])).array, a)


def test_iou_edge_cases():
    empty, full = Mask.empty((3, 3)), Mask(np.ones((3, 3), bool))
    assert empty.iou(Mask.empty((3, 3))) == 1.0
    assert empty.iou(full) == 0.0
    assert Mask.union_all([]) is None


@pytest.mark.parametrize("operation", ["iou", "intersection", "union"])
def test_set_operations_reject_shape_mismatch(operation):
    with pytest.raises(MaskError) as info:
        getattr(Mask.empty((3, 4)), operation)(Mask.empty((4, 3)))
    assert "3x4" in str(info.value) and "4x3" in str(info.value)


def test_union_all_rejects_shape_mismatch():
    with pytest.raises(MaskError):
        Mask.union_all([Mask.empty((2, 2)), Mask.empty((2, 3))])


def test_equality():
    array = random_array((5, 6), 0.5, 1)
    assert Mask(array) == Mask(array.astype(np.uint8))
    assert Mask(array) != Mask(~array)
    assert Mask.empty((2, 3)) != Mask.empty((3, 2))
    # with a raw array, comparisons are numpy's: element-wise
    np.testing.assert_array_equal(Mask(array) == array, np.ones_like(array))
    assert np.array_equal(Mask(array), array)


def test_numpy_and_torch_see_a_bool_array(tmp_path):
    import torch
    from PIL import Image

    array = random_array((5, 6), 0.5, 2)
    mask = Mask(array)
    as_numpy = np.asarray(mask)
    assert as_numpy.dtype == np.bool_ and as_numpy.shape == (5, 6) and (as_numpy == array).all()
    as_numpy[0, 0] = not as_numpy[0, 0]  # a copy: the mask is untouched
    assert mask == Mask(array) and mask.dtype == np.bool_ and mask.ndim == 2 and len(mask) == 5
    assert not np.asarray(mask, copy=False).flags.writeable
    tensor = torch.as_tensor(mask)
    assert tensor.dtype == torch.bool and tuple(tensor.shape) == (5, 6) and int(tensor.sum()) == mask.area
    assert int(np.sum(mask)) == mask.area and (np.logical_and(mask, ~array) == 0).all()
    # overlay takes what a session takes: a path, a PIL image, an array
    image = np.full((5, 6, 3), 90, np.uint8)
    Image.fromarray(image).save(tmp_path / "img.png")
    for source in (tmp_path / "img.png", Image.fromarray(image), image):
        assert mask.overlay(source).size == (6, 5)


# --------------------------------------------------------------------- resize


@pytest.mark.parametrize("array", ARRAYS[::4])
def test_resize_nearest_integer_factors(array):
    h, w = array.shape
    up = Mask(array).resize((2 * h, 3 * w))
    assert up.shape == (2 * h, 3 * w)
    np.testing.assert_array_equal(up.array, np.repeat(np.repeat(array, 2, axis=0), 3, axis=1))
    assert up.resize((h, w)) == Mask(array)  # sampling back at pixel centres recovers the original


def test_resize_to_same_shape_and_rejects_bad_shape():
    mask = Mask(random_array((9, 11), 0.5, 3))
    assert mask.resize((9, 11)) == mask
    with pytest.raises(MaskError):
        mask.resize((0, 5))


# --------------------------------------------------------------------- pydantic


class Holder(BaseModel):
    m: Mask


@pytest.fixture
def sample() -> Mask:
    return Mask(blob_array((12, 17), seed=5))


@pytest.mark.parametrize("form", ["mask", "array", "uint8-array", "rle", "list-rle"])
def test_pydantic_validates_every_input_form(form, sample):
    value = {
        "mask": sample,
        "array": sample.array,
        "uint8-array": sample.array.astype(np.uint8),
        "rle": sample.to_rle(),
        "list-rle": {"size": list(sample.shape), "counts": uncompressed_counts(sample.array)},
    }[form]
    assert Holder(m=value).m == sample


def test_pydantic_dump_gives_rle_in_both_modes(sample):
    holder = Holder(m=sample)
    assert holder.model_dump() == {"m": sample.to_rle()}
    assert json.loads(holder.model_dump_json()) == {"m": sample.to_rle()}
    assert Holder.model_validate_json(holder.model_dump_json()).m == sample
    assert Holder.model_validate(holder.model_dump()).m == sample


@pytest.mark.parametrize("value", [[[0, 1]], "mask", np.zeros((2, 2, 2)), {"size": [3, 3], "counts": "1"}])
def test_pydantic_rejects_bad_values(value):
    with pytest.raises(ValidationError):
        Holder(m=value)


def test_pydantic_json_schema():
    schema = Holder.model_json_schema()
    field = schema["properties"]["m"]
    assert field["type"] == "object"
    assert field["properties"]["counts"] == {"type": "string"}
    assert field["properties"]["size"]["items"]["type"] == "integer"
    assert field["properties"]["size"]["minItems"] == field["properties"]["size"]["maxItems"] == 2
    assert set(field["required"]) == {"size", "counts"}
    json.dumps(schema)
