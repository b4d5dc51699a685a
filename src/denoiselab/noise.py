"""Additive Gaussian noise, per PROTOCOL.md."""

from __future__ import annotations

import numpy as np

from denoiselab.errors import UserError


def add_gaussian_noise(images: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Returns ``clip(images + N(0, sigma), 0, 1)`` as float32.

    ``images`` is any array in [0, 1] (HWC or NHWC); ``rng`` is a
    ``numpy.random.default_rng(seed)`` so the draw is reproducible.
    """
    if sigma <= 0:
        raise UserError(f"noise sigma must be positive, got {sigma}")
    noise = rng.normal(0.0, sigma, images.shape)
    return np.clip(images + noise, 0.0, 1.0).astype(np.float32)


def noisy_test_images(
    images: dict[str, np.ndarray], sigma: float, seed: int
) -> dict[str, np.ndarray]:
    """Noisy copies of whole test images, each drawn with ``default_rng(seed)``.

    Each image gets its own generator seeded with ``seed``, so the noise an image receives
    does not depend on which other images are in the set, and ``denoiselab evaluate`` with
    the same seed reproduces the stage's noisy pixels exactly.
    """
    return {
        name: add_gaussian_noise(image, sigma, np.random.default_rng(seed))
        for name, image in images.items()
    }
