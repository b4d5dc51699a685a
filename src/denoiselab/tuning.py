"""Hyperparameter search over the U-Net with Optuna (TPE sampler, median pruning).

The study lives in a storage that several processes can share (``tune_unet.storage``): the
tune_unet stage and any number of ``denoiselab tune-worker`` processes, on this machine or on
others, draw their trials from one search. Each trial is a nested MLflow run, scored and
pruned on its PSNR on the whole validation images at every noise level add_noise wrote (the
measure the evaluate stage chooses champions by), and its trained weights are kept in a file so
that the stage can warm-start its final run from the best trial, whichever process ran it.

Whole images, not the validation patches the training curves use: a network trained on 48-pixel
crops can learn to lean on the zero padding at their borders, which its receptive field (103
pixels at depth 3) always reaches there and never reaches inside a whole image. One such trial
led the search with 29.8 dB on patches and scored 29.0 on the whole images, below the plain
U-Net's 29.1.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import socket
from pathlib import Path

import keras
import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from denoiselab import (
    files,
    models,
    noise,
    noise_level,
    padding,
    precision,
    studies,
    tracking,
    training,
)
from denoiselab.config import BaseConfig, ModelConfig, TrainConfig, TuneConfig, flat_dict
from denoiselab.errors import NonFiniteLossError, UserError

log = logging.getLogger(__name__)

# The modules whose code shapes a trial's result; an edit to any of them starts a new study.
TRIAL_CODE = (
    models.__file__,
    precision.__file__,
    training.__file__,
    studies.__file__,
    noise.__file__,
    noise_level.__file__,  # how a trial is scored: the level read from each validation image
    padding.__file__,
    __file__,
)


@dataclasses.dataclass(frozen=True)
class ValidationImages:
    """The whole validation images (name -> HWC float32) and their noisy copies per level."""

    clean: dict[str, np.ndarray]
    noisy: dict[str, dict[str, np.ndarray]]


def load_validation_images(prepared: Path, noisy: Path) -> ValidationImages:
    """The whole validation images of prepared/val_images.npz and their noisy copies at every
    level of noisy/levels, as the add_noise stage wrote them."""
    levels_folder = noisy / noise.LEVELS_FOLDER
    levels = sorted(path.name for path in levels_folder.iterdir() if path.is_dir())
    if not levels:
        raise UserError(f"{levels_folder}: no noisy validation images; run `dvc repro`")
    return ValidationImages(
        clean=files.load_arrays(prepared / "val_images.npz"),
        noisy={
            level: files.load_arrays(levels_folder / level / "val_images.npz") for level in levels
        },
    )


def whole_image_psnr(
    model: keras.Model, images: ValidationImages, depth: int, noise_map: bool = False
) -> float:
    """The model's PSNR on the whole validation images: per level the mean over the images,
    then the mean over the levels, as the evaluate stage measures it (padded to the pooling
    grid and cropped back, clipped to [0, 1]; with ``noise_map``, given the level estimated
    from each image)."""
    per_level = []
    for noisy in images.noisy.values():
        values = []
        for name, clean in images.clean.items():
            image = noise_level.with_estimated_map(noisy[name]) if noise_map else noisy[name]
            output = padding.predict_padded(model, image, 2**depth)
            error = np.clip(output.astype(np.float64), 0.0, 1.0) - clean
            values.append(10 * math.log10(1.0 / max(float(np.mean(error**2)), 1e-12)))
        per_level.append(float(np.mean(values)))
    return float(np.mean(per_level))


def reference_gflops(table: dict[int, float], base_filters: int) -> float:
    """Training GFLOP/s of a ``base_filters`` wide U-Net on the reference machine, from the
    measured ``table`` (width -> GFLOP/s): log-linear between two measured widths, the nearest
    measured width's outside them."""
    widths = sorted(table)
    if base_filters <= widths[0]:
        return float(table[widths[0]])
    if base_filters >= widths[-1]:
        return float(table[widths[-1]])
    upper = next(width for width in widths if width >= base_filters)
    lower = max(width for width in widths if width <= base_filters)
    if upper == lower:
        return float(table[upper])
    share = math.log(base_filters / lower) / math.log(upper / lower)
    return float(table[lower] ** (1 - share) * table[upper] ** share)


def steps_for_budget(
    model_config: ModelConfig,
    crop_size: int,
    batch_size: int,
    epochs: int,
    budget_seconds: float,
    gflops: dict[int, float],
    multiple_of: int = 1,
) -> int:
    """Steps per epoch that train for ``budget_seconds`` on the reference machine over
    ``epochs``, rounded to a multiple of ``multiple_of`` (the steps run per call into the graph).

    A training step costs about three forward passes, run at the reference machine's measured
    GFLOP/s for the model's width. Counting time rather than FLOPs gives a width that uses the
    hardware better (wider layers run at more GFLOP/s) its due, and counting it from params
    rather than from a clock keeps a run reproducible on any machine.
    """
    model = models.build_model(model_config)
    flops_per_patch = models.training_flops_per_patch(model, model_config.channels, crop_size)
    flops = budget_seconds * reference_gflops(gflops, model_config.base_filters) * 1e9
    steps = flops / (flops_per_patch * batch_size * epochs)
    return max(1, round(steps / multiple_of)) * multiple_of


def sampled_config(params: dict, tune: TuneConfig, epochs: int, steps: int) -> TrainConfig:
    """``tune_unet.train`` (the shared training settings with tune_unet's changes) with the
    drawn ``params`` of the search space, for ``epochs`` of ``steps`` steps."""
    values = {**tune.train.model_dump(), **params, "epochs": epochs, "steps_per_epoch": steps}
    return TrainConfig.model_validate(values)


def suggest(trial: optuna.Trial, tune: TuneConfig) -> dict:
    """Samples one point of the search space (in a fixed order, which the seeded sampler's
    draws follow)."""
    search = tune.search
    low, high = search.learning_rate
    return {
        "base_filters": trial.suggest_categorical("base_filters", list(search.base_filters)),
        "depth": trial.suggest_categorical("depth", list(search.depth)),
        "batch_norm": trial.suggest_categorical("batch_norm", list(search.batch_norm)),
        "loss": trial.suggest_categorical("loss", list(search.loss)),
        "learning_rate": trial.suggest_float("learning_rate", low, high, log=True),
        "batch_size": trial.suggest_categorical("batch_size", list(search.batch_size)),
    }


def enqueue_every_depth(study: optuna.Study, tune: TuneConfig) -> None:
    """Makes a new study's first trials take each depth of the search in turn (their other keys
    drawn as usual): a seeded sampler's first, random draws may miss a choice altogether (depth
    3 was never drawn in 5 trials), and the depths differ most in what they cost and score.

    A search of one depth enqueues nothing: every trial takes it anyway, and a queued trial is
    what two processes on one sqlite study can both pop (:func:`optimize_shared`)."""
    if study.trials or len(tune.search.depth) < 2:
        return
    for depth in tune.search.depth[: tune.n_trials]:
        study.enqueue_trial({"depth": depth}, skip_if_exists=True)


def budgeted_config(
    params: dict, tune: TuneConfig, channels: int, patch_size: int, epochs: int, budget: float
) -> TrainConfig:
    """The training config for sampled ``params`` that trains ``budget`` seconds on the
    reference machine."""
    crop = tune.train.crop_size or patch_size
    probe = sampled_config(params, tune, epochs, 1)
    steps = steps_for_budget(
        probe.architecture(channels),
        crop,
        params["batch_size"],
        epochs,
        budget,
        tune.reference_gflops,
        tune.train.steps_per_execution,
    )
    return sampled_config(params, tune, epochs, steps)


def study_for(
    tune: TuneConfig,
    base: BaseConfig,
    data_hash: str,
    root: Path,
    storage: str | None = None,
    name: str | None = None,
    seed: int | None = None,
) -> optuna.Study:
    """Opens (or creates) the study of this search configuration in the shared storage.

    ``storage`` and ``name`` default to ``tune_unet.storage`` and ``tune_unet.study_name``; the
    name gets the configuration's fingerprint appended.
    """
    location = studies.storage_location(storage or tune.storage, root)
    fingerprint = studies.study_fingerprint(tune, base, data_hash, studies.code_digest(TRIAL_CODE))
    name = studies.full_study_name(name or tune.study_name, fingerprint)
    study = studies.open_study(studies.open_storage(location), name, tune, seed)
    print(f"study {name} in {tracking.redact(location)}", flush=True)
    return study


def weights_folder(root: Path, study_name: str) -> Path:
    """Where each completed trial's weights are kept, keyed by study and trial number."""
    return root / "checkpoints" / "trials" / study_name


def weights_file(folder: Path, number: int) -> Path:
    return folder / f"trial-{number}.npz"


class WholeImageValidation(keras.callbacks.Callback):
    """After each epoch: the PSNR on the whole validation images, logged to the trial's run as
    ``val_image_psnr`` and reported to the study, which prunes on it."""

    def __init__(
        self, trial: optuna.Trial, images: ValidationImages, depth: int, noise_map: bool = False
    ):
        super().__init__()
        self.trial, self.images, self.depth, self.noise_map = trial, images, depth, noise_map
        self.values: list[float] = []

    def on_epoch_end(self, epoch, logs=None):
        value = whole_image_psnr(self.model, self.images, self.depth, self.noise_map)
        self.values.append(value)
        tracking.log_metrics({"val_image_psnr": value}, step=epoch + 1)
        self.trial.report(value, epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"val_image_psnr {value:.2f} dB at epoch {epoch + 1}")


def run_trials(
    study: optuna.Study,
    tune: TuneConfig,
    base: BaseConfig,
    data: dict,
    parent_run_id: str,
    folder: Path,
    max_trials: int | None = None,
) -> list[int]:
    """Runs trials in this process until the study holds ``tune.n_trials`` finished ones (or
    this process ran ``max_trials``); returns the numbers of the trials it ran.

    Other processes may run trials of the same study at the same time; each completed trial's
    weights go to ``folder`` and to its MLflow run, for the final run's warm start. ``data``
    holds the training patches (:func:`denoiselab.runner.load_training_data`) and, under
    ``val_images``, the whole validation images that score each trial
    (:func:`load_validation_images`).
    """
    patch_size = data["clean_train"].shape[1]
    channels = data["manifest"]["channels"]
    worker = f"{socket.gethostname()}:{os.getpid()}"
    ran: list[int] = []
    validation = training.validation_data(
        data["clean_val"],
        data["noisy_val"],
        tune.train.noise_sigma_range,
        base.seed,
        tune.train.noise_map,
    )

    def objective(trial: optuna.Trial) -> float:
        ran.append(trial.number)
        trial.set_user_attr("worker", worker)
        config = budgeted_config(
            suggest(trial, tune),
            tune,
            channels,
            patch_size,
            tune.trial_epochs,
            tune.trial_budget_s,
        )
        keras.utils.set_random_seed(base.seed + trial.number)
        params = flat_dict(config, "train")
        params["precision_resolved"] = precision.resolve(config.precision).precision
        with tracking.model_run(
            f"trial-{trial.number}",
            "tune_unet",
            params,
            nested=True,
            stopped_by=(optuna.TrialPruned,),
        ) as run:
            tracking.set_tags(
                {
                    "mlflow.parentRunId": parent_run_id,
                    "optuna.study": study.study_name,
                    "optuna.trial": str(trial.number),
                }
            )
            trial.set_user_attr("mlflow_run_id", run.info.run_id)
            model = models.build_model(config.architecture(channels))
            scorer = WholeImageValidation(
                trial, data["val_images"], config.downsamplings, config.noise_map
            )
            dataset = training.make_train_dataset(
                data["clean_train"], None, config, base.noise_sigma, base.seed + trial.number
            )
            try:
                rows = training.fit(
                    model,
                    dataset,
                    validation,
                    config,
                    callbacks=[tracking.epoch_logger(), scorer],
                    verbose=0,
                )
            except optuna.TrialPruned:
                tracking.set_tags({"optuna.state": "PRUNED"})
                print(f"trial {trial.number}: pruned {trial.params}", flush=True)
                raise
            value = scorer.values[-1]
            tracking.set_tags({"optuna.state": "COMPLETE"})
            tracking.log_metrics({"best_val_psnr": value})
            path = weights_file(folder, trial.number)
            weights = model.get_weights()
            files.save_arrays(path, {f"{index:04d}": array for index, array in enumerate(weights)})
            tracking.log_artifact(path, "weights")
            print(
                f"trial {trial.number}/{tune.n_trials}: whole-image validation PSNR "
                f"{value:.2f} dB (patches {rows[-1]['val_psnr']:.2f}), "
                f"{rows[-1]['patches_per_s']:.0f} patches/s, {trial.params}",
                flush=True,
            )
            return value

    remaining = tune.n_trials - studies.count_finished(study)
    todo = remaining if max_trials is None else min(max_trials, remaining)
    if todo <= 0:
        print(
            f"study {study.study_name} already holds {tune.n_trials - remaining} finished "
            f"trials of tune_unet.n_trials = {tune.n_trials}; running none",
            flush=True,
        )
        return ran
    enqueue_every_depth(study, tune)
    optimize_shared(study, objective, todo, tune.n_trials)
    running = len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
    if running:
        print(f"{running} trials of other processes still running; not waiting for them")
    return ran


def work(
    study: optuna.Study,
    tune: TuneConfig,
    base: BaseConfig,
    data: dict,
    root: Path,
    max_trials: int | None = None,
) -> list[int]:
    """What ``denoiselab tune-worker`` does: runs trials of the shared study under one MLflow
    parent run ``unet_tune_worker``; returns the numbers of the trials it ran."""
    tracking.setup()
    params = {
        "optuna.study": study.study_name,
        "max_trials": max_trials,
        "data_hash": data["manifest"]["data_hash"],
    }
    with tracking.model_run("unet_tune_worker", "tune_unet", params) as parent:
        return run_trials(
            study,
            tune,
            base,
            data,
            parent.info.run_id,
            weights_folder(root, study.study_name),
            max_trials,
        )


def optimize_shared(study: optuna.Study, objective, todo: int, n_trials: int) -> None:
    """Runs at most ``todo`` trials of ``objective`` in this process, stopping once the study
    holds ``n_trials`` finished ones, in a study other processes run trials of too.

    Two processes on one sqlite study can pop the same queued trial (Optuna reads its state and
    marks it RUNNING in two steps); the second to finish it cannot record its result ("Cannot
    tell a COMPLETE trial"). The trial is recorded already, so this process goes on with the
    next one instead of failing the stage.
    """
    for _ in range(todo):
        if studies.count_finished(study) >= n_trials:
            return
        try:
            study.optimize(objective, n_trials=1, catch=(NonFiniteLossError,))
        except ValueError as error:
            if not str(error).startswith("Cannot tell a "):
                raise
            print(f"a trial was finished by another process ({error}); going on", flush=True)


def trial_weights(trial: FrozenTrial, folder: Path) -> list[np.ndarray] | None:
    """The weights a completed trial saved: from ``folder``, else from its MLflow run (a trial
    run on another machine); ``None``, with a logged line, when neither has them."""
    path = weights_file(folder, trial.number)
    if not path.is_file() and trial.user_attrs.get("mlflow_run_id"):
        downloaded = tracking.download_run_artifact(
            trial.user_attrs["mlflow_run_id"], f"weights/{path.name}"
        )
        path = downloaded or path
    if not path.is_file():
        log.warning(
            "no saved weights for trial %d (run by %s); the final run starts from scratch",
            trial.number,
            trial.user_attrs.get("worker", "an unknown process"),
        )
        return None
    arrays = files.load_arrays(path)
    return [arrays[key] for key in sorted(arrays)]


def best_summary(study: optuna.Study) -> dict:
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not completed:
        raise UserError(
            f"no trial of study {study.study_name} completed ({len(study.trials)} pruned, failed "
            f"or running); raise tune_unet.trial_budget_s or narrow the search space"
        )
    best = study.best_trial
    return {
        "study_name": study.study_name,
        "best_trial": best.number,
        "best_val_psnr": best.value,
        "params": dict(best.params),
        "trials": [
            {
                "number": trial.number,
                "state": trial.state.name,
                "value": trial.value,
                "params": trial.params,
            }
            for trial in study.trials
        ],
    }
