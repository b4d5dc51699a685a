"""Hyperparameter search over the U-Net with Optuna (TPE sampler, median pruning).

Each trial is a nested MLflow run under one parent run; trials are pruned on validation PSNR.
"""

from __future__ import annotations

import logging

import keras
import numpy as np
import optuna

from denoiselab import models, tracking, training
from denoiselab.config import BaseConfig, ModelConfig, TrainConfig, TuneConfig, to_dict
from denoiselab.errors import NonFiniteLossError

log = logging.getLogger(__name__)


def steps_for_budget(
    model_config: ModelConfig, crop_size: int, batch_size: int, epochs: int, budget_tflop: float
) -> int:
    """Steps per epoch that spend ``budget_tflop`` of training compute over ``epochs``.

    A training step costs about three forward passes. Budgeting compute rather than patches
    keeps a trial's (and the final run's) time nearly the same whichever width and depth it
    draws, and compares configurations at equal cost, which is what a fixed time budget needs.
    """
    model = models.build_model(model_config)
    flops_per_patch = 3 * models.conv_flops_per_pixel(model, model_config.channels) * crop_size**2
    steps = budget_tflop * 1e12 / (flops_per_patch * batch_size * epochs)
    return max(1, round(steps))


def sampled_config(params: dict, tune: TuneConfig, epochs: int, steps: int) -> TrainConfig:
    return TrainConfig(
        model="unet",
        base_filters=params["base_filters"],
        depth=params["depth"],
        residual=True,
        batch_norm=params["batch_norm"],
        loss=params["loss"],
        learning_rate=params["learning_rate"],
        lr_schedule="cosine",
        batch_size=params["batch_size"],
        epochs=epochs,
        steps_per_epoch=steps,
        crop_size=tune.crop_size,
        fresh_noise=True,
        augment=True,
        jit_compile=tune.jit_compile,
        precision=tune.precision,
    )


def suggest(trial: optuna.Trial, tune: TuneConfig) -> dict:
    """Samples one point of the search space."""
    low, high = tune.learning_rate
    return {
        "base_filters": trial.suggest_categorical("base_filters", list(tune.base_filters)),
        "depth": trial.suggest_categorical("depth", list(tune.depth)),
        "batch_norm": trial.suggest_categorical("batch_norm", list(tune.batch_norm)),
        "loss": trial.suggest_categorical("loss", list(tune.loss)),
        "learning_rate": trial.suggest_float("learning_rate", low, high, log=True),
        "batch_size": trial.suggest_categorical("batch_size", list(tune.batch_size)),
    }


def budgeted_config(
    params: dict, tune: TuneConfig, channels: int, patch_size: int, epochs: int, budget: float
) -> TrainConfig:
    """The training config for sampled ``params`` that spends ``budget`` TFLOP."""
    crop = tune.crop_size or patch_size
    probe = sampled_config(params, tune, epochs, 1)
    steps = steps_for_budget(
        probe.model_config(channels), crop, params["batch_size"], epochs, budget
    )
    return sampled_config(params, tune, epochs, steps)


class PruneOnValidationPsnr(keras.callbacks.Callback):
    def __init__(self, trial: optuna.Trial):
        super().__init__()
        self.trial = trial

    def on_epoch_end(self, epoch, logs=None):
        value = float((logs or {}).get("val_psnr", float("nan")))
        self.trial.report(value, epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"val_psnr {value:.2f} dB at epoch {epoch + 1}")


def run_study(
    tune: TuneConfig,
    base: BaseConfig,
    data: dict,
    parent_run_id: str,
) -> tuple[optuna.Study, dict[int, list[np.ndarray]]]:
    """Runs the search; returns the study and the trained weights of each completed trial."""
    import mlflow

    patch_size = data["clean_train"].shape[1]

    weights: dict[int, list[np.ndarray]] = {}

    def objective(trial: optuna.Trial) -> float:
        config = budgeted_config(
            suggest(trial, tune), tune, base.channels, patch_size, tune.trial_epochs,
            tune.trial_budget_tflop,
        )  # fmt: skip
        keras.utils.set_random_seed(base.seed + trial.number)
        params = {f"train.{key}": value for key, value in to_dict(config).items()}
        with tracking.model_run(f"trial-{trial.number}", "tune_unet", params, nested=True):
            mlflow.set_tag("mlflow.parentRunId", parent_run_id)
            model = models.build_model(config.model_config(base.channels))
            dataset = training.make_train_dataset(
                data["clean_train"], None, config, base.noise_sigma, base.seed + trial.number
            )
            try:
                rows = training.fit(
                    model,
                    dataset,
                    data["validation"],
                    config,
                    callbacks=[tracking.epoch_logger(), PruneOnValidationPsnr(trial)],
                    verbose=0,
                )
            except optuna.TrialPruned:
                mlflow.set_tag("optuna.state", "PRUNED")
                print(f"trial {trial.number}: pruned {trial.params}", flush=True)
                raise
            value = rows[-1]["val_psnr"]
            mlflow.set_tag("optuna.state", "COMPLETE")
            mlflow.log_metric("best_val_psnr", value)
            weights[trial.number] = model.get_weights()
            print(
                f"trial {trial.number}/{tune.n_trials}: val_psnr {value:.2f} dB, "
                f"{rows[-1]['patches_per_s']:.0f} patches/s, {trial.params}",
                flush=True,
            )
            return value

    storage = tune.storage
    study = optuna.create_study(
        study_name=tune.study_name,
        storage=storage,
        load_if_exists=storage is not None,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=base.seed, n_startup_trials=min(4, tune.n_trials)),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
    )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(objective, n_trials=tune.n_trials, catch=(NonFiniteLossError,))
    return study, weights


def best_summary(study: optuna.Study) -> dict:
    best = study.best_trial
    return {
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
