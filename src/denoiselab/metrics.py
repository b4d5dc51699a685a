"""Image quality metrics, per docs/protocol.md (scikit-image, data_range 1.0), and the scoring
of a denoiser on whole images that every reported figure goes through."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
from skimage import metrics as skimage_metrics


def psnr(clean: np.ndarray, denoised: np.ndarray) -> float:
    """PSNR in dB of HWC images in [0, 1]; infinite when they are identical."""
    clean = np.asarray(clean, np.float64)
    denoised = np.clip(np.asarray(denoised, np.float64), 0.0, 1.0)
    if np.array_equal(clean, denoised):
        return float("inf")
    return float(skimage_metrics.peak_signal_noise_ratio(clean, denoised, data_range=1.0))


def ssim(clean: np.ndarray, denoised: np.ndarray) -> float:
    """SSIM of HWC images in [0, 1], default window, channel axis for colour."""
    clean = np.asarray(clean, np.float64)
    denoised = np.clip(np.asarray(denoised, np.float64), 0.0, 1.0)
    if clean.ndim == 3 and clean.shape[-1] == 1:
        clean, denoised = clean[..., 0], denoised[..., 0]
    channel_axis = -1 if clean.ndim == 3 else None
    return float(
        skimage_metrics.structural_similarity(
            clean, denoised, data_range=1.0, channel_axis=channel_axis
        )
    )


def score_images(clean: dict[str, np.ndarray], denoised: dict[str, np.ndarray]) -> dict:
    """Mean PSNR/SSIM over images plus the per-image values, as the reports store them."""
    per_image = {
        name: {
            "psnr": psnr(clean[name], denoised[name]),
            "ssim": ssim(clean[name], denoised[name]),
        }
        for name in sorted(clean)
    }
    return {
        "psnr": float(np.mean([value["psnr"] for value in per_image.values()])),
        "ssim": float(np.mean([value["ssim"] for value in per_image.values()])),
        "per_image": per_image,
    }


def score_denoiser(
    denoise_image: Callable[[np.ndarray], np.ndarray],
    clean: dict[str, np.ndarray],
    noisy: dict[str, np.ndarray],
) -> tuple[dict, dict[str, np.ndarray]]:
    """Denoises each noisy image (HWC float32 in [0, 1]), scores it against the clean one and
    times it.

    Returns the scores (mean and per image PSNR/SSIM plus seconds per megapixel) and the
    denoised images, clipped to [0, 1].
    """
    denoised, seconds, pixels = {}, 0.0, 0
    for name in sorted(clean):
        started = time.perf_counter()
        denoised[name] = np.clip(denoise_image(noisy[name]), 0.0, 1.0).astype(np.float32)
        seconds += time.perf_counter() - started
        pixels += noisy[name].shape[0] * noisy[name].shape[1]
    scores = score_images(clean, denoised)
    scores["seconds_per_megapixel"] = seconds / (pixels / 1e6)
    return scores, denoised
