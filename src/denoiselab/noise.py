"""Additive Gaussian noise, per docs/protocol.md."""

from __future__ import annotations

import zlib

import numpy as np

from denoiselab.errors import UserError

# Under add_noise's output: one folder per noise level (see level_key) with the whole test and
# validation images at that level.
LEVELS_FOLDER = "levels"


def add_gaussian_noise(images: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Returns ``clip(images + N(0, sigma), 0, 1)`` as float32.

    ``images`` is any array in [0, 1] (HWC or NHWC); ``rng`` is a
    ``numpy.random.default_rng(seed)`` so the draw is reproducible.
    """
    if sigma <= 0:
        raise UserError(f"noise sigma must be positive, got {sigma}")
    noise = rng.normal(0.0, sigma, images.shape)
    return np.clip(images + noise, 0.0, 1.0).astype(np.float32)


def image_rng(name: str, sigma: float, seed: int) -> np.random.Generator:
    """The generator of one image at one noise level, per docs/protocol.md step 2.

    Seeding with the image's name and the level gives every image its own noise field, so two
    images of the same size never share one, and a level's noise does not repeat another's.
    """
    return np.random.default_rng([seed, zlib.crc32(name.encode()), round(sigma * 1000)])


def noisy_images(images: dict[str, np.ndarray], sigma: float, seed: int) -> dict[str, np.ndarray]:
    """Noisy copies of whole images (name -> HWC float32 in [0, 1]), one generator per image.

    The noise an image receives depends only on its name, ``sigma`` and ``seed``, never on the
    other images in the set, so ``denoiselab evaluate`` with the same seed reproduces the
    add_noise stage's pixels exactly. A colour image draws independent noise per channel.
    """
    return {
        name: add_gaussian_noise(image, sigma, image_rng(name, sigma, seed))
        for name, image in images.items()
    }


def level_key(sigma: float) -> str:
    """How a noise level names its folder and its entry in the reports: ``0.05``, ``0.1``."""
    return f"{sigma:g}"


def with_noise_map(image: np.ndarray, sigma: float) -> np.ndarray:
    """An HWC (or NHWC) image with one more channel, constant ``sigma``: a noise level map,
    the extra input of a model trained with ``noise_map`` (denoising gives it the level read
    from the image, ``noise_level.with_estimated_map``)."""
    plane = np.full((*image.shape[:-1], 1), sigma, np.float32)
    return np.concatenate([image.astype(np.float32, copy=False), plane], axis=-1)
