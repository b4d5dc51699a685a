"""A model run on one whole image: reflect-padded to its pooling grid, cropped back.

The tuning trials score whole images this way; :mod:`denoiselab.inference` tiles larger images
around it. Kept apart so that an edit to the tiling reruns no training stage."""

from __future__ import annotations

import numpy as np


def pad_to_multiple(image: np.ndarray, multiple: int) -> np.ndarray:
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
    padded = pad_to_multiple(image.astype(np.float32, copy=False), multiple)
    output = model(padded[None], training=False)
    output = np.asarray(output)[0, :height, :width]
    return output
