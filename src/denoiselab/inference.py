"""Denoising whole images of any size with a trained model: tiles with enough context that
no seam shows, each run through :func:`denoiselab.padding.predict_padded`."""

from __future__ import annotations

import math

import numpy as np

from denoiselab import padding
from denoiselab.errors import UserError

DEFAULT_TILE = 512


def tile_margin(depth: int) -> int:
    """Context pixels kept around each tile so the tiled result equals the untiled one.

    An output pixel of the project's U-Net sees up to 7 * 2**depth - 5 input pixels to each
    side: two 3x3 convolutions see 2 at the bottleneck, and each level above adds its own
    convolutions and its 2x2 pooling's place on the grid (5) to twice what the level below sees
    (the CAE sees less). The margin is that reach rounded up to a multiple of 2**depth, so each
    tile's pooling grid lines up with the whole image's: 24 at depth 2, 56 at depth 3.
    """
    multiple = 2**depth
    reach = 7 * multiple - 5
    return math.ceil(reach / multiple) * multiple


def denoise_image(
    model,
    image: np.ndarray,
    depth: int,
    tile_size: int = DEFAULT_TILE,
    margin: int | None = None,
) -> np.ndarray:
    """Denoises an HWC float32 image in [0, 1]; returns its height and width with the model's
    output channels (the image's, or one fewer when its last channel is a noise level map),
    clipped to [0, 1].

    Images larger than ``tile_size`` are processed in tiles that overlap their neighbours by
    ``margin`` pixels of context (by default enough for the model's receptive field), and only
    each tile's centre is kept, so memory stays bounded
    and no seam shows.
    """
    if image.ndim != 3:
        raise UserError(f"expected an HWC image, got shape {image.shape}")
    multiple = 2**depth
    margin = tile_margin(depth) if margin is None else margin
    # Tiles on the pooling grid keep each tile's result equal to the whole image's.
    tile_size = math.ceil(tile_size / multiple) * multiple
    height, width = image.shape[:2]
    if height <= tile_size + 2 * margin and width <= tile_size + 2 * margin:
        return np.clip(padding.predict_padded(model, image, multiple), 0.0, 1.0)
    output = None
    for top in range(0, height, tile_size):
        for left in range(0, width, tile_size):
            bottom, right = min(top + tile_size, height), min(left + tile_size, width)
            context_top, context_left = max(top - margin, 0), max(left - margin, 0)
            context_bottom = min(bottom + margin, height)
            context_right = min(right + margin, width)
            tile = image[context_top:context_bottom, context_left:context_right]
            result = padding.predict_padded(model, tile, multiple)
            if output is None:
                output = np.empty((height, width, result.shape[-1]), np.float32)
            output[top:bottom, left:right] = result[
                top - context_top : bottom - context_top,
                left - context_left : right - context_left,
            ]
    return np.clip(output, 0.0, 1.0)
