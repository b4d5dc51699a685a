"""Scoring denoisers on whole noisy images, per docs/protocol.md: the one place that turns
denoised images into the PSNR/SSIM figures the reports, MLflow and the registry hold."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from denoiselab import classical, denoise, files, inference, metrics, model_store, noise


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
    scores = metrics.score_images(clean, denoised)
    scores["seconds_per_megapixel"] = seconds / (pixels / 1e6)
    return scores, denoised


def model_denoiser(
    denoiser: model_store.Denoiser, tile_size: int = inference.DEFAULT_TILE
) -> Callable[[np.ndarray], np.ndarray]:
    """The denoising users get from ``denoiselab denoise`` with this model, as a function of
    one HWC float32 image in [0, 1]."""
    # One warm-up call so the timing excludes graph building, as a long-running user sees it.
    size = 2**denoiser.depth
    denoiser.model(np.zeros((1, size, size, denoiser.channels), np.float32), training=False)
    return lambda image: denoise.denoise_values(denoiser, image, tile_size)


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


def score_models(
    clean: dict[str, np.ndarray],
    denoisers: dict[str, model_store.Denoiser],
    sigma: float,
    seed: int,
    tile_size: int = inference.DEFAULT_TILE,
    classical_methods: tuple[str, ...] = (),
) -> dict[str, dict]:
    """PSNR/SSIM of each model on noisy copies of clean images, per docs/protocol.md.

    ``clean`` maps names to HW/HWC float images in [0, 1]. Each model sees them converted to
    its channels (rgb2gray, alpha dropped) with noise drawn per image as the add_noise stage
    draws it. Returns ``{"noisy": scores, model: scores, ...}`` (mean and per image), with one
    noisy row per channel count when the models differ. Each of ``classical_methods`` (see
    :mod:`denoiselab.classical`) is scored on the same noisy pixels as the models, under a
    label with the channel count when the models differ.
    """
    results = {}
    channel_counts = sorted({denoiser.channels for denoiser in denoisers.values()})
    for channels in channel_counts:
        converted = {name: files.to_channels(image, channels) for name, image in clean.items()}
        noisy = noise.noisy_images(converted, sigma, seed)
        label = "noisy" if len(channel_counts) == 1 else f"noisy ({channels} channels)"
        results[label], _ = score_denoiser(lambda image: image, converted, noisy)
        for name, denoiser in denoisers.items():
            if denoiser.channels == channels:
                run = model_denoiser(denoiser, tile_size)
                results[name], _ = score_denoiser(run, converted, noisy)
        for method in classical_methods:
            run = classical_denoiser(method, sigma, classical.settings_for(method, sigma))
            suffix = "" if len(channel_counts) == 1 else f" ({channels} channels)"
            results[f"{method}{suffix}"], _ = score_denoiser(run, converted, noisy)
    return results


def format_scores(results: dict[str, dict]) -> str:
    """A text table: one row per image and a mean row, one "PSNR / SSIM" column per method."""
    methods = list(results)
    images = list(next(iter(results.values()))["per_image"])
    rows = [["image", *methods]]
    for image in images:
        rows.append([image, *(_cell(results[method]["per_image"][image]) for method in methods)])
    rows.append(["mean", *(_cell(results[method]) for method in methods)])
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    return "\n".join(line.rstrip() for line in lines) + "\n\nPSNR in dB / SSIM"


def _cell(scores: dict) -> str:
    return f"{scores['psnr']:.2f} / {scores['ssim']:.4f}"
