"""Denoising whole images of any size with a trained model: pad, tile, crop back."""

from __future__ import annotations

import math

import numpy as np

from denoiselab.errors import UserError

DEFAULT_TILE = 512
DEFAULT_MARGIN = 48


def tile_margin(depth: int) -> int:
    """Context pixels kept around each tile so the tiled result equals the untiled one.

    The project's U-Net sees 13 * 2**depth - 8 pixels across (two 3x3 convolutions and a 2x2
    pooling per level down, two convolutions per level up, two at the bottleneck; the CAE sees
    less): half of that on each side. The margin covers it and is a multiple of 2**depth, so
    each tile's pooling grid lines up with the whole image's. Depth 3 needs 48.
    """
    multiple = 2**depth
    radius = math.ceil((13 * multiple - 8) / 2)
    return math.ceil(max(radius, DEFAULT_MARGIN) / multiple) * multiple


def _pad_to_multiple(image: np.ndarray, multiple: int) -> np.ndarray:
    """Reflect-pads an HWC image at the bottom and right to sides divisible by ``multiple``."""
    height, width = image.shape[:2]
    pad_height = (-height) % multiple
    pad_width = (-width) % multiple
    if not pad_height and not pad_width:
        return image
    # Reflection needs at least two pixels along an axis; one-pixel images repeat the edge.
    mode = "reflect" if min(height, width) > 1 else "edge"
    return np.pad(image, ((0, pad_height), (0, pad_width), (0, 0)), mode=mode)


def predict_padded(model, image: np.ndarray, multiple: int) -> np.ndarray:
    """Runs ``model`` on one HWC float image, padding for the model and cropping back."""
    height, width = image.shape[:2]
    padded = _pad_to_multiple(image.astype(np.float32, copy=False), multiple)
    output = model(padded[None], training=False)
    output = np.asarray(output)[0, :height, :width]
    return output


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
        return np.clip(predict_padded(model, image, multiple), 0.0, 1.0)
    output = None
    for top in range(0, height, tile_size):
        for left in range(0, width, tile_size):
            bottom, right = min(top + tile_size, height), min(left + tile_size, width)
            context_top, context_left = max(top - margin, 0), max(left - margin, 0)
            context_bottom = min(bottom + margin, height)
            context_right = min(right + margin, width)
            tile = image[context_top:context_bottom, context_left:context_right]
            result = predict_padded(model, tile, multiple)
            if output is None:
                output = np.empty((height, width, result.shape[-1]), np.float32)
            output[top:bottom, left:right] = result[
                top - context_top : bottom - context_top,
                left - context_left : right - context_left,
            ]
    return np.clip(output, 0.0, 1.0)
