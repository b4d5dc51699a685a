"""Denoising whole images of any size with a trained model: pad, tile, crop back."""

from __future__ import annotations

import numpy as np

DEFAULT_TILE = 512
DEFAULT_MARGIN = 48


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
    margin: int = DEFAULT_MARGIN,
) -> np.ndarray:
    """Denoises an HWC float32 image in [0, 1]; returns the same shape, clipped to [0, 1].

    Images larger than ``tile_size`` are processed in tiles that overlap their neighbours by
    ``margin`` pixels of context, and only each tile's centre is kept, so memory stays bounded
    and no seam shows.
    """
    if image.ndim != 3:
        raise ValueError(f"expected an HWC image, got shape {image.shape}")
    multiple = 2**depth
    height, width = image.shape[:2]
    if height <= tile_size + 2 * margin and width <= tile_size + 2 * margin:
        return np.clip(predict_padded(model, image, multiple), 0.0, 1.0)
    output = np.empty(image.shape, np.float32)
    for top in range(0, height, tile_size):
        for left in range(0, width, tile_size):
            bottom, right = min(top + tile_size, height), min(left + tile_size, width)
            context_top, context_left = max(top - margin, 0), max(left - margin, 0)
            context_bottom = min(bottom + margin, height)
            context_right = min(right + margin, width)
            tile = image[context_top:context_bottom, context_left:context_right]
            result = predict_padded(model, tile, multiple)
            output[top:bottom, left:right] = result[
                top - context_top : bottom - context_top,
                left - context_left : right - context_left,
            ]
    return np.clip(output, 0.0, 1.0)


def denoise_images(model, images: dict[str, np.ndarray], depth: int) -> dict[str, np.ndarray]:
    return {name: denoise_image(model, image, depth) for name, image in images.items()}
