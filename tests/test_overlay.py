"""Overlays people can read: a colour and a contour per target, a legend, small images scaled up."""

import numpy as np

from pixelagent.mask import Mask
from pixelagent.overlay import MIN_SIDE, PALETTE, Layer, render


def _colour_count(picture, colour):
    return int((np.asarray(picture) == np.array(colour, np.uint8)).all(axis=-1).sum())


def test_each_target_has_its_colour_a_legend_and_small_images_grow():
    image = np.full((128, 160, 3), 100, np.uint8)
    big, word = np.zeros((128, 160), bool), np.zeros((128, 160), bool)
    big[10:60, 10:80] = True
    word[100:102, 120:124] = True  # 8 px: 0.04 % of the image
    picture = render(image, [Layer(Mask(big), "the bottle", "coarse"), Layer(Mask(word), "the word 'MILK'", "fine")])
    scale = -(-MIN_SIDE // 160)
    assert picture.width == 160 * scale and picture.height > 128 * scale  # the legend strip below
    strip = np.asarray(picture)[128 * scale:]
    for colour in PALETTE[:2]:
        assert _colour_count(picture, colour) > 0  # contours (and legend swatches)
        assert (strip == np.array(colour, np.uint8)).all(axis=-1).any()  # swatch in the legend
    # the 8-pixel word gets a contour many times its size and a circle around it
    assert _colour_count(np.asarray(picture)[: 128 * scale], PALETTE[1]) > 20 * word.sum()


def test_large_images_keep_their_size_and_no_legend_on_request():
    image = np.zeros((700, 900, 3), np.uint8)
    mask = np.zeros((700, 900), bool)
    mask[:10, :10] = True
    assert render(image, [Layer(mask, "x")], legend=False).size == (900, 700)
