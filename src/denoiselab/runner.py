"""Glue the stages call: train one model end to end with tracking, checkpoints and saving."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import numpy as np

from denoiselab import distribute, files, models, precision, tracking, training
from denoiselab.config import BaseConfig, ModelConfig, TrainConfig, flat_dict, to_dict

log = logging.getLogger(__name__)

CHECKPOINT_ROOT = Path("checkpoints")


def load_training_data(prepared: Path, noisy: Path) -> dict:
    """The training and validation patches of one dataset (gray or colour) and its manifest,
    whose ``channels`` the models trained on it take."""
    manifest = files.read_json(prepared / "manifest.json")
    clean_train = files.load_arrays(prepared / "train.npz")["patches"]
    clean_val = files.load_arrays(prepared / "val.npz")["patches"]
    noisy_train = files.load_arrays(noisy / "train.npz")["patches"]
    noisy_val = files.load_arrays(noisy / "val.npz")["patches"]
    return {
        "manifest": manifest,
        "clean_train": clean_train,
        "noisy_train": noisy_train,
        "clean_val": clean_val,
        "noisy_val": noisy_val,
    }


def checkpoint_dir(stage: str, payload: dict) -> Path:
    """A backup folder keyed by everything that shapes training, so a resume never mixes runs."""
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]
    return CHECKPOINT_ROOT / f"{stage}-{digest}"


def _train(
    model_config: ModelConfig,
    config: TrainConfig,
    base: BaseConfig,
    data: dict,
    strategy,
    backup: Path,
    initial_weights: list[np.ndarray] | None,
    callbacks: list,
):
    """Builds the model inside the ``tf.distribute`` strategy's scope and trains it; returns
    the model and its per-epoch logs."""
    with strategy.scope():
        model = models.build_model(model_config)
        if initial_weights is not None:
            model.set_weights(initial_weights)
    dataset = training.make_train_dataset(
        data["clean_train"], data["noisy_train"], config, base.noise_sigma, base.seed
    )
    rows = training.fit(
        model,
        dataset,
        training.validation_data(
            data["clean_val"],
            data["noisy_val"],
            config.noise_sigma_range,
            base.seed,
            config.noise_map,
        ),
        config,
        backup_dir=backup,
        callbacks=callbacks,
        strategy=strategy,
    )
    return model, rows


def train_tracked(
    name: str,
    stage: str,
    config: TrainConfig,
    base: BaseConfig,
    data: dict,
    model_dir: Path,
    history_path: Path,
    extra_params: dict | None = None,
    initial_weights: list[np.ndarray] | None = None,
    extra_tags: dict | None = None,
) -> dict:
    """Trains one model as one MLflow run named ``name``; saves weights, config and history.

    Resumes from the last finished epoch when a backup of the same configuration exists.
    Trains under ``config.distribution`` (see :mod:`denoiselab.distribute`); in a multi-worker
    run the other workers train in step with the chief and only the chief tracks and saves.
    Returns the saved config.json contents (an empty dict on the other workers).
    """
    # First: the multi-worker strategy must set up the runtime before any other TF work.
    strategy = distribute.make_strategy(config.distribution)
    tf_config = distribute.cluster_config(config.distribution)
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        log.warning(
            "batch_size %d does not divide over %d replicas; their shares differ",
            config.batch_size,
            replicas,
        )
    training.enable_op_determinism(base.deterministic)
    import keras

    keras.utils.set_random_seed(base.seed)
    channels = data["manifest"]["channels"]
    model_config = config.architecture(channels)
    resolved = precision.resolve(config.precision)
    print(f"{name}: precision {config.precision} -> {resolved.precision} ({resolved.reason})")
    data_hash = data["manifest"]["data_hash"]
    params = {
        **flat_dict(config, "train"),
        "seed": base.seed,
        "channels": channels,
        "noise_sigma": base.noise_sigma,
        "deterministic": base.deterministic,
        "data_hash": data_hash,
        "train_patches": len(data["clean_train"]),
        # Part of the backup's key too, so a resume never mixes precisions.
        "precision_resolved": resolved.precision,
        **(extra_params or {}),
    }
    backup = checkpoint_dir(stage, {"params": params, "name": name})
    if not distribute.is_chief(config.distribution, tf_config):
        # Each worker keeps its own backup, so workers sharing a disk never overwrite each
        # other's; they save at the same epochs, so a resumed run restarts in step.
        label = distribute.task_label(tf_config)
        backup = backup.with_name(f"{backup.name}-{label.replace(' ', '')}")
        _train(model_config, config, base, data, strategy, backup, initial_weights, [])
        shutil.rmtree(backup, ignore_errors=True)
        print(f"{label}: trained {name}; the chief tracks the run and writes the outputs")
        return {}
    backup.mkdir(parents=True, exist_ok=True)
    run_id_file = backup / "mlflow_run_id"
    resume_run = run_id_file.read_text().strip() if run_id_file.is_file() else None

    tracking.setup()
    if resume_run:
        if tracking.run_exists(resume_run):
            log.info("resuming %s from %s (MLflow run %s)", name, backup, resume_run)
        else:
            resume_run = None
    for stale in tracking.fail_stale_runs(stage, keep=resume_run):
        log.warning("marked MLflow run %s FAILED: its process is gone", stale)
    with tracking.model_run(name, stage, params, run_id=resume_run) as run:
        run_id_file.write_text(run.info.run_id)
        if extra_tags:
            tracking.set_tags(extra_tags)
        model, rows = _train(
            model_config,
            config,
            base,
            data,
            strategy,
            backup,
            initial_weights,
            [tracking.epoch_logger()],
        )
        flops = models.conv_flops_per_pixel(model, channels)
        tracking.log_params(
            {
                "parameters": model.count_params(),
                "mflops_per_pixel": round(flops / 1e6, 4),
                "replicas": replicas,
            }
        )
        crop = config.crop_size or data["clean_train"].shape[1]
        throughput = float(np.median([row["patches_per_s"] for row in rows[-3:]]))
        step_flops = models.training_flops_per_patch(model, channels, crop)
        tracking.log_metrics(
            {
                "train_patches_per_s": throughput,
                "train_gflops_per_s": throughput * step_flops / 1e9,
            }
        )
        # Save from a fresh, uncompiled copy so the weights file holds no optimizer state.
        clean_model = models.build_model(model_config)
        clean_model.set_weights(model.get_weights())
        info = {
            "name": name,
            "stage": stage,
            "train_config": to_dict(config),
            "base": base.model_dump(),
            "data_hash": data_hash,
            "mlflow_run_id": run.info.run_id,
        }
        # The evaluate stage logs this folder into the run as the model MLflow serves.
        models.save_model_dir(clean_model, model_config, model_dir, info)
        files.write_json(history_path, rows)
    # The model is saved, so the backup has done its job.
    shutil.rmtree(backup, ignore_errors=True)
    return info
