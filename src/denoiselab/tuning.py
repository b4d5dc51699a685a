"""Hyperparameter search over the U-Net with Optuna (TPE sampler, median pruning).

Each trial is a nested MLflow run under one parent run; trials are pruned on validation PSNR.
"""

from __future__ import annotations

import dataclasses
import logging

import keras
import numpy as np
import optuna

from denoiselab import models, tracking, training
from denoiselab.config import BaseConfig, TrainConfig, TuneConfig, to_dict
from denoiselab.errors import NonFiniteLossError

log = logging.getLogger(__name__)


def trial_config(trial: optuna.Trial, tune: TuneConfig) -> TrainConfig:
    """The U-Net training config a trial samples from the search space.

    Every trial sees the same number of patches per epoch whatever its batch size, so trials
    compare on equal data.
    """
    low, high = tune.learning_rate
    batch_size = trial.suggest_categorical("batch_size", list(tune.batch_size))
    return TrainConfig(
        model="unet",
        base_filters=trial.suggest_categorical("base_filters", list(tune.base_filters)),
        depth=trial.suggest_categorical("depth", list(tune.depth)),
        residual=True,
        batch_norm=trial.suggest_categorical("batch_norm", list(tune.batch_norm)),
        loss=trial.suggest_categorical("loss", list(tune.loss)),
        learning_rate=trial.suggest_float("learning_rate", low, high, log=True),
        lr_schedule="cosine",
        batch_size=batch_size,
        epochs=tune.trial_epochs,
        steps_per_epoch=max(1, tune.trial_patches_per_epoch // batch_size),
        crop_size=tune.crop_size,
        fresh_noise=True,
        augment=True,
        jit_compile=tune.jit_compile,
        precision=tune.precision,
    )


def final_config(best_params: dict, tune: TuneConfig) -> TrainConfig:
    return TrainConfig(
        model="unet",
        base_filters=best_params["base_filters"],
        depth=best_params["depth"],
        residual=True,
        batch_norm=best_params["batch_norm"],
        loss=best_params["loss"],
        learning_rate=best_params["learning_rate"],
        lr_schedule="cosine",
        batch_size=best_params["batch_size"],
        epochs=tune.final_epochs,
        steps_per_epoch=max(1, tune.final_patches_per_epoch // best_params["batch_size"]),
        crop_size=tune.crop_size,
        fresh_noise=True,
        augment=True,
        jit_compile=tune.jit_compile,
        precision=tune.precision,
    )


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

    weights: dict[int, list[np.ndarray]] = {}

    def objective(trial: optuna.Trial) -> float:
        config = trial_config(trial, tune)
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


def as_dict(config: TrainConfig) -> dict:
    return dataclasses.asdict(config)
