"""Scoring every denoiser on whole noisy test images, per PROTOCOL.md."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from denoiselab import classical, inference, metrics


def score_denoiser(
    denoise: Callable[[np.ndarray], np.ndarray],
    clean: dict[str, np.ndarray],
    noisy: dict[str, np.ndarray],
) -> tuple[dict, dict[str, np.ndarray]]:
    """Denoises each noisy test image, scores it against the clean one and times it.

    Returns the scores (mean and per image PSNR/SSIM plus seconds per megapixel) and the
    denoised images.
    """
    denoised, seconds, pixels = {}, 0.0, 0
    for name in sorted(clean):
        started = time.perf_counter()
        denoised[name] = np.clip(denoise(noisy[name]), 0.0, 1.0).astype(np.float32)
        seconds += time.perf_counter() - started
        pixels += noisy[name].shape[0] * noisy[name].shape[1]
    scores = metrics.score_images(clean, denoised)
    scores["seconds_per_megapixel"] = seconds / (pixels / 1e6)
    return scores, denoised


def model_denoiser(model, depth: int) -> Callable[[np.ndarray], np.ndarray]:
    # One warm-up call so the timing excludes graph building, as a long-running user sees it.
    channels = model.channels if hasattr(model, "channels") else model.input_shape[-1]
    model(np.zeros((1, 2**depth, 2**depth, channels), np.float32), training=False)
    return lambda image: inference.denoise_image(model, image, depth)


def classical_denoiser(
    method: str, sigma: float, settings: dict
) -> Callable[[np.ndarray], np.ndarray]:
    return lambda image: classical.DENOISERS[method](image, sigma, **settings)


def summary_row(scores: dict) -> dict:
    """The part of a method's scores that goes into reports/metrics.json."""
    return {
        "psnr": round(scores["psnr"], 4),
        "ssim": round(scores["ssim"], 4),
        "seconds_per_megapixel": round(scores.get("seconds_per_megapixel", 0.0), 4),
    }
