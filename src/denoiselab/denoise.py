"""Denoising an image with a loaded model: how an image's colour mode and bit depth map onto
the model's channels. ``denoiselab denoise``, the evaluate stage and the served model all
denoise through :func:`denoise_values`."""

from __future__ import annotations

import functools
import math

import numpy as np

from denoiselab import images, inference, model_store
from denoiselab.errors import UserError


def denoise_values(
    denoiser: model_store.Denoiser, image: np.ndarray, tile_size: int = inference.DEFAULT_TILE
) -> np.ndarray:
    """Denoises an HWC float32 image in [0, 1] with 1 or 3 channels; returns the same shape,
    clipped to [0, 1].

    A grayscale model denoises each colour channel on its own; a colour model gets a
    grayscale image repeated to 3 channels and its output converted back with rgb2gray.
    """
    multiple = 2**denoiser.depth
    run = functools.partial(
        inference.denoise_image,
        denoiser.model,
        depth=denoiser.depth,
        tile_size=math.ceil(tile_size / multiple) * multiple,
        margin=inference.tile_margin(denoiser.depth),
    )
    if denoiser.channels == 1:
        planes = [run(image[..., [channel]]) for channel in range(image.shape[-1])]
        return np.concatenate(planes, axis=-1)
    if image.shape[-1] == 1:
        from skimage import color

        return color.rgb2gray(run(np.repeat(image, 3, axis=-1))).astype(np.float32)[..., None]
    return run(image)


def denoise_pixels(
    denoiser: model_store.Denoiser, pixels: np.ndarray, tile_size: int = inference.DEFAULT_TILE
) -> np.ndarray:
    """Denoises an image file's pixels; returns the same shape and dtype.

    ``pixels`` is HW or HWC with 1-4 channels (gray, gray+alpha, RGB, RGBA), uint8 or uint16.
    The alpha channel is copied unchanged.
    """
    if pixels.dtype not in (np.uint8, np.uint16):
        raise UserError(f"expected uint8 or uint16 pixels, got {pixels.dtype}")
    planes = pixels if pixels.ndim == 3 else pixels[..., None]
    if planes.ndim != 3 or planes.shape[-1] not in (1, 2, 3, 4):
        raise UserError(f"expected HW or HWC pixels with 1-4 channels, got {pixels.shape}")
    has_alpha = planes.shape[-1] in (2, 4)
    colour = planes[..., :-1] if has_alpha else planes
    denoised = denoise_values(denoiser, images.to_float(colour), tile_size)
    scale = np.iinfo(pixels.dtype).max
    result = np.round(np.clip(denoised, 0.0, 1.0) * scale).astype(pixels.dtype)
    if has_alpha:
        result = np.concatenate([result, planes[..., -1:]], axis=-1)
    return result.reshape(pixels.shape)
