"""Whole-image inference: reflect padding to the pooling grid, and tiles without seams for
every architecture in the model registry."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import blur_model

from denoiselab import inference

# Every architecture the model registry builds, at the depths it takes.
ARCHITECTURES = [
    ("cae", 2, False),
    ("cae", 3, False),
    ("unet", 2, False),
    ("unet", 3, False),
    ("unet", 2, True),
]


@pytest.mark.parametrize(("architecture", "depth", "pixel_unshuffle"), ARCHITECTURES)
def test_tiled_result_equals_the_untiled_one(architecture, depth, pixel_unshuffle):
    model, config = blur_model(architecture, depth, pixel_unshuffle=pixel_unshuffle)
    depth = config.downsamplings
    tile_size = 32
    margin = inference.tile_margin(depth)
    # Several tiles in each direction, each with its full margin of context.
    height, width = tile_size * 3 + 2 * margin + 5, tile_size * 4 + 2 * margin + 3
    image = np.random.default_rng(0).uniform(0, 1, (height, width, 1)).astype(np.float32)

    whole = inference.denoise_image(model, image, depth, tile_size=4096)  # one piece
    tiled = inference.denoise_image(model, image, depth, tile_size=tile_size)

    assert tiled.shape == image.shape
    np.testing.assert_allclose(tiled, whole, atol=1e-5)  # no seam at the tile borders
    assert np.abs(whole - image).mean() > 0.05  # and the model did change the image


@pytest.mark.parametrize(("architecture", "depth", "pixel_unshuffle"), ARCHITECTURES)
def test_the_tile_margin_covers_what_each_output_pixel_sees(architecture, depth, pixel_unshuffle):
    # The blurring model's every weight is positive, so one lit pixel of a black image changes
    # every output pixel that sees it, however little: how far that reaches is what a tile's
    # margin must hold. Every position on the pooling grid is tried, as tiles start anywhere.
    model, config = blur_model(architecture, depth, pixel_unshuffle=pixel_unshuffle)
    depth = config.downsamplings
    margin = inference.tile_margin(depth)
    size = 6 * margin
    black = np.zeros((1, size, size, 1), np.float32)
    baseline = np.asarray(model(black, training=False))[0, ..., 0]
    reach = 0
    for offset in range(2**depth):
        lit = black.copy()
        centre = size // 2 + offset
        lit[0, centre, centre] = 1.0
        change = np.asarray(model(lit, training=False))[0, ..., 0] - baseline
        rows, columns = np.nonzero(change)
        reach = max(reach, np.abs(rows - centre).max(), np.abs(columns - centre).max())
    assert reach <= margin
    if architecture == "unet" and not pixel_unshuffle:
        # The U-Net's margin is no wider than the pooling grid makes it: no work is wasted.
        assert reach > margin - 2**depth


def test_sizes_off_the_pooling_grid_are_reflect_padded_and_cropped_back():
    depth = 2
    model, _ = blur_model("unet", depth)
    image = np.random.default_rng(1).uniform(0, 1, (37, 53, 1)).astype(np.float32)

    result = inference.denoise_image(model, image, depth)

    # docs/protocol.md step 3: reflect padding at the bottom and right, cropped back after.
    padded = np.pad(image, ((0, 3), (0, 3), (0, 0)), mode="reflect")
    expected = np.clip(np.asarray(model(padded[None], training=False))[0, :37, :53], 0, 1)
    assert result.shape == image.shape
    np.testing.assert_allclose(result, expected, atol=1e-6)
    zero_padded = np.pad(image, ((0, 3), (0, 3), (0, 0)))
    other = np.clip(np.asarray(model(zero_padded[None], training=False))[0, :37, :53], 0, 1)
    assert np.abs(other - expected).max() > 1e-3  # the test tells the paddings apart
