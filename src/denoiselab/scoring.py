"""Scoring denoisers on whole noisy images, per docs/protocol.md: the one place that turns
denoised images into the PSNR/SSIM figures the reports, MLflow and the registry hold.

Pure work on arrays and loaded models: no MLflow, no registry. The evaluate stage's reports
and registrations are :mod:`denoiselab.evaluation`'s; ``denoiselab evaluate`` and the benchmark
score through here too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np

from denoiselab import classical, denoise, files, images, inference, metrics, model_store, noise
from denoiselab.errors import UserError


def model_denoiser(
    denoiser: model_store.Denoiser,
    tile_size: int = inference.DEFAULT_TILE,
    settings: denoise.Settings = denoise.DEFAULT_SETTINGS,
) -> Callable[[np.ndarray], np.ndarray]:
    """The denoising users get from ``denoiselab denoise`` with this model and ``settings``,
    as a function of one HWC float32 image in [0, 1]."""
    # One warm-up call so the timing excludes graph building, as a long-running user sees it.
    size = 2**denoiser.depth
    denoiser.model(np.zeros((1, size, size, denoiser.input_channels), np.float32), training=False)
    return lambda image: denoise.denoise_values(denoiser, image, tile_size, settings)


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
    settings: denoise.Settings = denoise.DEFAULT_SETTINGS,
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
        converted = {name: images.to_channels(image, channels) for name, image in clean.items()}
        noisy = noise.noisy_images(converted, sigma, seed)
        label = "noisy" if len(channel_counts) == 1 else f"noisy ({channels} channels)"
        results[label], _ = metrics.score_denoiser(lambda image: image, converted, noisy)
        for name, denoiser in denoisers.items():
            if denoiser.channels == channels:
                run = model_denoiser(denoiser, tile_size, settings)
                results[name], _ = metrics.score_denoiser(run, converted, noisy)
        for method in classical_methods:
            run = classical_denoiser(method, sigma, classical.settings_for(method, sigma))
            suffix = "" if len(channel_counts) == 1 else f" ({channels} channels)"
            results[f"{method}{suffix}"], _ = metrics.score_denoiser(run, converted, noisy)
    return results


def format_scores(results: dict[str, dict]) -> str:
    """A text table: one row per image and a mean row, one "PSNR / SSIM" column per method."""
    methods = list(results)
    image_names = list(next(iter(results.values()))["per_image"])
    rows = [["image", *methods]]
    for image in image_names:
        rows.append(
            [image, *(format_cell(results[method]["per_image"][image]) for method in methods)]
        )
    rows.append(["mean", *(format_cell(results[method]) for method in methods)])
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    return "\n".join(line.rstrip() for line in lines) + "\n\nPSNR in dB / SSIM"


def format_cell(scores: dict) -> str:
    """One method's scores as a table cell: "PSNR / SSIM"."""
    return f"{scores['psnr']:.2f} / {scores['ssim']:.4f}"


@dataclasses.dataclass(frozen=True)
class Dataset:
    """One dataset's whole test and validation images (name -> HWC float32 in [0, 1]), clean
    and at each noise level (keyed by :func:`noise.level_key`), as the add_noise stage drew it,
    and the folder they were read from."""

    folder: Path
    channels: int
    data_hash: str
    test: dict[str, np.ndarray]
    val: dict[str, np.ndarray]
    noisy_test: dict[str, dict[str, np.ndarray]]
    noisy_val: dict[str, dict[str, np.ndarray]]


def load_dataset(folder: Path, levels: tuple[float, ...]) -> Dataset:
    """Reads ``folder``/prepared and ``folder``/noisy (the layout dvc.yaml gives each dataset)
    at ``levels``; a missing level names the file and the stage that writes it."""
    manifest = files.read_json(folder / "prepared" / "manifest.json")
    noisy_test, noisy_val = {}, {}
    for level in levels:
        level_folder = folder / "noisy" / noise.LEVELS_FOLDER / noise.level_key(level)
        if not level_folder.is_dir():
            raise UserError(
                f"{level_folder}: no noisy images at sigma {noise.level_key(level)}; "
                f"run `dvc repro` (the add_noise stage writes them)"
            )
        noisy_test[noise.level_key(level)] = files.load_arrays(level_folder / "test.npz")
        noisy_val[noise.level_key(level)] = files.load_arrays(level_folder / "val_images.npz")
    return Dataset(
        folder=folder,
        channels=int(manifest["channels"]),
        data_hash=manifest["data_hash"],
        test=files.load_arrays(folder / "prepared" / "test.npz"),
        val=files.load_arrays(folder / "prepared" / "val_images.npz"),
        noisy_test=noisy_test,
        noisy_val=noisy_val,
    )


def score_levels(
    denoise_image: Callable[[np.ndarray], np.ndarray],
    dataset: Dataset,
    val_levels: tuple[float, ...],
) -> tuple[dict[str, dict], dict[str, dict[str, np.ndarray]], float | None]:
    """Scores one denoiser at every noise level of ``dataset``.

    Returns the test scores per level (as :func:`metrics.score_denoiser` gives them; a level
    of ``val_levels`` also holds ``val_psnr``, the mean PSNR on the whole validation images at
    that level), the denoised test images per level, and the mean PSNR on the whole validation
    images over ``val_levels`` (None without levels): the one number models are chosen by, so
    that the champion is the best across the levels users meet, never judged on the test split.
    """
    scores, outputs = {}, {}
    for level in dataset.noisy_test:
        scores[level], outputs[level] = metrics.score_denoiser(
            denoise_image, dataset.test, dataset.noisy_test[level]
        )
    val_psnr = []
    for level in val_levels:
        key = noise.level_key(level)
        row, _ = metrics.score_denoiser(denoise_image, dataset.val, dataset.noisy_val[key])
        val_psnr.append(row["psnr"])
        if key in scores:
            scores[key]["val_psnr"] = row["psnr"]
    if not val_psnr:
        return scores, outputs, None
    return scores, outputs, float(np.mean(val_psnr))
