"""A short screen of a setting, outside the pipeline: the tuned U-Net's training config
(``tune_unet.train`` with the search's first choice of each key and the middle of its learning
rate range) trained for a few thousand steps on the prepared gray patches, then scored on the
whole validation images of both datasets at every sweep level, with the ``denoise`` settings,
as the evaluate stage scores a gray model (a colour image through its opponent planes).

    python -m denoiselab.screen [--set KEY=VALUE ...] [--seeds 0 1] [--steps 4000]
        [--kinds gray colour] [--out FILE]

KEY is a training setting (``loss_level_power=0.5``, ``batch_size=16``) or a denoise setting
(``denoise.level_exponent=1.1``); VALUE is read as YAML. Run it after ``dvc repro`` has
prepared the data. Each seed draws its own initial weights, patches and noise. A screen is
quick and noisy: a lever worth less than about 0.1 dB needs several seeds, and what wins a
screen must still win as a DVC experiment of the pipeline, whose runs are many times longer.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
import yaml

from denoiselab import (
    config,
    denoise,
    files,
    metrics,
    model_store,
    models,
    scoring,
    training,
    tuning,
)
from denoiselab.config import Params, TrainConfig
from denoiselab.errors import UserError, stage_main

log = logging.getLogger(__name__)

DEFAULT_STEPS = 4000
DENOISE_PREFIX = "denoise."


@dataclasses.dataclass(frozen=True)
class Overrides:
    """``--set`` pairs, split into training settings and denoise settings."""

    train: dict
    denoise: dict


def parse_overrides(pairs: Sequence[str]) -> Overrides:
    """``KEY=VALUE`` pairs, each VALUE read as YAML; a pair without ``=`` is refused in one line.
    Whether a key exists is checked where it is used (:func:`screen_config`,
    :func:`screen_settings`), naming it."""
    train, settings = {}, {}
    for pair in pairs:
        key, separator, text = pair.partition("=")
        if not separator or not key:
            raise UserError(f"--set {pair!r}: expected KEY=VALUE, such as loss_level_power=0.5")
        value = yaml.safe_load(text)
        if key.startswith(DENOISE_PREFIX):
            settings[key.removeprefix(DENOISE_PREFIX)] = value
        else:
            train[key] = value
    return Overrides(train, settings)


def screen_config(params: Params, overrides: dict, steps: int) -> TrainConfig:
    """The training config of a screen: ``tune_unet.train``, the search's first choice of each
    key (the learning rate: the geometric middle of its range), one epoch of ``steps`` steps,
    then ``overrides``; a bad key or value is refused naming it."""
    if steps < 1:
        raise UserError(f"--steps: must be at least 1, got {steps}")
    search = params.tune_unet.search
    low, high = search.learning_rate
    first = {
        "base_filters": search.base_filters[0],
        "depth": search.depth[0],
        "batch_norm": search.batch_norm[0],
        "loss": search.loss[0],
        "batch_size": search.batch_size[0],
        "learning_rate": math.sqrt(low * high),
    }
    trial = tuning.sampled_config(first, params.tune_unet, epochs=1, steps=steps)
    return config.parse(TrainConfig, {**trial.model_dump(), **overrides}, source="--set")


def screen_settings(params: Params, overrides: dict) -> denoise.Settings:
    """params.yaml's ``denoise`` settings with ``overrides``; an unknown key is refused."""
    values = params.denoise.model_dump()
    for key in overrides:
        if key not in values:
            raise UserError(
                f"--set {DENOISE_PREFIX}{key}: unknown denoise setting; allowed: "
                f"{', '.join(DENOISE_PREFIX + name for name in sorted(values))}"
            )
    return denoise.Settings.from_mapping({**values, **overrides})


def load_patches(folder: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """A dataset's clean training patches and its fixed noisy ones (None where add_noise wrote
    none: fresh noise does not need them)."""
    clean = files.load_arrays(folder / "prepared/train.npz")["patches"]
    fixed = folder / "noisy/train.npz"
    return clean, files.load_arrays(fixed)["patches"] if fixed.is_file() else None


def train(
    train_config: TrainConfig,
    patches: tuple[np.ndarray, np.ndarray | None],
    sigma: float,
    seed: int,
) -> keras.Model:
    """A model of ``train_config`` trained on ``patches`` (:func:`load_patches`; ``sigma`` is
    the fixed noise level, for a config without a noise range), seeded by ``seed``."""
    clean, noisy_patches = patches
    keras.utils.set_random_seed(seed)
    model = models.build_model(train_config.architecture(clean.shape[-1]))
    dataset = training.make_train_dataset(clean, noisy_patches, train_config, sigma, seed)
    training.compile_model(model, train_config)
    model.fit(
        dataset, epochs=1, steps_per_epoch=train_config.steps_per_epoch, shuffle=False, verbose=0
    )
    return model


def score(
    model: keras.Model,
    datasets: dict[str, scoring.Dataset],
    settings: denoise.Settings,
) -> dict[str, dict[str, dict[str, float]]]:
    """PSNR / SSIM on the whole validation images of each of ``datasets`` at each of its
    levels: ``{kind: {level: {"psnr", "ssim"}}}``."""
    noise_map = models.takes_noise_map(model)
    channels = model.input_shape[-1] - int(noise_map)
    depth = models.infer_depth(model)
    denoiser = model_store.Denoiser(model, depth, channels, "screen", noise_map)
    denoise_image = scoring.model_denoiser(denoiser, settings=settings)
    scores = {}
    for kind, dataset in datasets.items():
        scores[kind] = {}
        for key, noisy in dataset.noisy_val.items():
            row, _ = metrics.score_denoiser(denoise_image, dataset.val, noisy)
            scores[kind][key] = {"psnr": round(row["psnr"], 3), "ssim": round(row["ssim"], 4)}
    return scores


def run(
    params: Params,
    overrides: Overrides,
    seeds: Sequence[int],
    steps: int,
    data: Path,
    kinds: Sequence[str],
) -> dict:
    """Trains and scores one model per seed; returns the report :func:`main` prints and writes."""
    train_config = screen_config(params, overrides.train, steps)
    settings = screen_settings(params, overrides.denoise)
    patches = load_patches(data / "gray")
    datasets = {
        kind: scoring.load_dataset(data / kind, getattr(params.add_noise.sweep, kind))
        for kind in kinds
    }
    report = {
        "train": config.to_dict(train_config),
        "denoise": settings.as_dict(),
        "runs": [],
    }
    for seed in seeds:
        log.info("seed %d: training %d steps of %d crops", seed, steps, train_config.batch_size)
        start = time.perf_counter()
        model = train(train_config, patches, params.base.noise_sigma, seed)
        seconds = time.perf_counter() - start
        scores = score(model, datasets, settings)
        report["runs"].append({"seed": seed, "train_s": round(seconds, 1), "scores": scores})
        print(f"seed {seed} ({seconds:.0f} s): {format_scores(scores)}", flush=True)
    return report


def format_scores(scores: dict[str, dict[str, dict[str, float]]]) -> str:
    """One line: each dataset's PSNR / SSIM per level and its mean PSNR."""
    parts = []
    for kind, levels in scores.items():
        cells = " ".join(f"{row['psnr']:.2f}/{row['ssim']:.3f}" for row in levels.values())
        mean = np.mean([row["psnr"] for row in levels.values()])
        parts.append(f"{kind} {cells} (mean {mean:.2f})")
    return "; ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--set", dest="pairs", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument(
        "--kinds", nargs="+", choices=("gray", "colour"), default=["gray", "colour"]
    )
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--data", type=Path, default=Path("data"))
    parser.add_argument("--out", type=Path, help="also write the report to this JSON file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    params = config.load_params(args.params)
    report = run(
        params, parse_overrides(args.pairs), args.seeds, args.steps, args.data, args.kinds
    )
    if args.out:
        files.write_json(args.out, report)


if __name__ == "__main__":
    stage_main(main)
