"""Scoring denoisers on whole noisy images, per docs/protocol.md: the one place that turns
denoised images into the PSNR/SSIM figures the reports, MLflow and the registry hold."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np

from denoiselab import (
    classical,
    denoise,
    files,
    inference,
    metrics,
    model_store,
    noise,
    registry,
)
from denoiselab.config import MODE_CHANNELS
from denoiselab.errors import UserError


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
        results[label], _ = metrics.score_denoiser(lambda image: image, converted, noisy)
        for name, denoiser in denoisers.items():
            if denoiser.channels == channels:
                run = model_denoiser(denoiser, tile_size)
                results[name], _ = metrics.score_denoiser(run, converted, noisy)
        for method in classical_methods:
            run = classical_denoiser(method, sigma, classical.settings_for(method, sigma))
            suffix = "" if len(channel_counts) == 1 else f" ({channels} channels)"
            results[f"{method}{suffix}"], _ = metrics.score_denoiser(run, converted, noisy)
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


@dataclasses.dataclass(frozen=True)
class Dataset:
    """One dataset's whole test and validation images (name -> HWC float32 in [0, 1]), clean
    and at each noise level (keyed by :func:`noise.level_key`), as the add_noise stage drew it."""

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

    Returns the test scores per level (as :func:`metrics.score_denoiser` gives them), the
    denoised test images per level, and the mean PSNR on the whole validation images over
    ``val_levels`` (None without levels): the one number models are chosen by, so that the
    champion is the best across the levels users meet, never judged on the test split.
    """
    scores, outputs = {}, {}
    for level in dataset.noisy_test:
        scores[level], outputs[level] = metrics.score_denoiser(
            denoise_image, dataset.test, dataset.noisy_test[level]
        )
    val_psnr = [
        metrics.score_denoiser(
            denoise_image, dataset.val, dataset.noisy_val[noise.level_key(level)]
        )
        for level in val_levels
    ]
    if not val_psnr:
        return scores, outputs, None
    return scores, outputs, float(np.mean([row["psnr"] for row, _ in val_psnr]))


def levels_tag(levels: tuple[float, ...]) -> str:
    """The validation levels a score was taken over, as the registry's tags record them."""
    return ",".join(noise.level_key(level) for level in sorted(levels))


@dataclasses.dataclass(frozen=True)
class Champion:
    """The model `denoiselab denoise` uses for one mode: one of this run's models (``source``
    None) or a registered version from an earlier run, loaded from ``source``."""

    label: str
    source: model_store.ModelSource | None = None


def champions(root: Path, infos: dict[str, dict]) -> dict[str, Champion]:
    """Each mode's champion as ``denoiselab denoise`` resolves it: the registry's alias, else
    the fallback folder. ``infos`` maps this run's model names to their config.json."""
    aliases = registry.registered_aliases()
    by_run = {info.get("mlflow_run_id"): name for name, info in infos.items()}
    found = {}
    for mode, channels in MODE_CHANNELS.items():
        alias = registry.champion_alias(channels)
        if alias not in aliases:
            found[mode] = Champion(model_store.CHAMPION_FALLBACKS[alias])
        elif aliases[alias] in by_run:
            found[mode] = Champion(by_run[aliases[alias]])
        else:
            source = model_store.locate_model(alias, root, aliases)
            found[mode] = Champion(f"{alias} (run {aliases[alias][:8]})", source)
    return found


def _row(scores: dict) -> dict:
    return {"psnr": round(scores["psnr"], 4), "ssim": round(scores["ssim"], 4)}


def reports(
    scores: dict[str, dict[str, dict]],
    baselines: dict[str, dict],
    champions_by_mode: dict[str, Champion],
    val_psnr: dict[str, float | None],
    sweeps: dict[str, tuple[float, ...]],
    table_level: str,
) -> tuple[dict, dict]:
    """reports/metrics.json and reports/per_image.json from every method's scores.

    ``scores`` maps ``<model>/<mode>`` (and ``noisy/<mode>``) to the scores per level on that
    mode's test images, ``val_psnr`` the same keys to the validation PSNR over the sweep;
    ``baselines`` are the classical stage's reports per mode. The metrics hold the seed's
    grayscale table at ``table_level`` at the top level and, under ``sweep``, every method
    per mode and level, with ``champion`` the model ``denoiselab denoise`` uses for that mode,
    ``champions`` naming it and ``validation`` each model's validation PSNR per mode.
    """
    gray = baselines["gray"]["levels"][table_level]
    table_scores = {"noisy": scores["noisy/gray"][table_level]}
    table_scores.update(
        {name: scores[f"{name}/gray"][table_level] for name in model_store.GRAY_MODELS}
    )
    table_scores.update(gray)
    metrics_report = {name: summary_row(row) for name, row in table_scores.items()}
    per_image = {
        "per_image": {name: row["per_image"] for name, row in table_scores.items()},
        "classical_params": {
            method: {"params": row["params"], "val_psnr": row["val_psnr"]}
            for method, row in gray.items()
        },
        "sweep": {},
    }
    sweep: dict = {}
    for mode, levels in sweeps.items():
        sweep[mode], per_image["sweep"][mode] = {}, {}
        for level in map(noise.level_key, levels):
            rows = {
                "champion": scores[f"{champions_by_mode[mode].label}/{mode}"][level],
                "noisy": scores[f"noisy/{mode}"][level],
                **{name: scores[f"{name}/{mode}"][level] for name in model_store.TRAINED_MODELS},
                **baselines[mode]["levels"][level],
            }
            sweep[mode][level] = {name: _row(row) for name, row in rows.items()}
            per_image["sweep"][mode][level] = {
                name: row["per_image"] for name, row in rows.items()
            }
    sweep["champions"] = {mode: champion.label for mode, champion in champions_by_mode.items()}
    sweep["validation"] = {
        mode: {
            name: round(val_psnr[f"{name}/{mode}"], 4)
            for name in model_store.TRAINED_MODELS
            if val_psnr.get(f"{name}/{mode}") is not None
        }
        for mode in sweeps
    }
    metrics_report["sweep"] = sweep
    return metrics_report, per_image


def format_sweep(sweep: dict) -> str:
    """A text table of the sweep: PSNR / SSIM of the champion, BM3D and the noisy input per
    mode and level, and the champion's margin over BM3D."""
    lines = ["mode    sigma  champion          BM3D              noisy             margin"]
    for mode in MODE_CHANNELS:
        for level, rows in sweep.get(mode, {}).items():
            cells = [_cell(rows[name]) if name in rows else "-" for name in ("champion", "bm3d")]
            margin = (
                f"{rows['champion']['psnr'] - rows['bm3d']['psnr']:+.2f} dB"
                if "bm3d" in rows
                else "-"
            )
            lines.append(
                f"{mode:<7} {level:<6} {cells[0]:<17} {cells[1]:<17} "
                f"{_cell(rows['noisy']):<17} {margin}"
            )
    return "\n".join(lines)
