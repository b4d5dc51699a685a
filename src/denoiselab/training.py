"""Training with ``model.fit``: tf.data input pipelines, losses, metrics and callbacks.

Nothing here touches MLflow or the stage's output files; the stage passes in the callbacks
that record progress.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from denoiselab import files
from denoiselab.config import TrainConfig
from denoiselab.errors import NonFiniteLossError

log = logging.getLogger(__name__)
# Retracing notices when a search builds many models are expected, not actionable.
tf.get_logger().setLevel("ERROR")

LOSSES = {
    "bce": lambda: keras.losses.BinaryCrossentropy(name="bce"),
    "mse": lambda: keras.losses.MeanSquaredError(name="mse"),
    "l1": lambda: keras.losses.MeanAbsoluteError(name="l1"),
}


def psnr(y_true, y_pred):
    """Mean PSNR (dB) over a batch of NHWC images in [0, 1]; the output is clipped first."""
    return tf.reduce_mean(tf.image.psnr(y_true, tf.clip_by_value(y_pred, 0.0, 1.0), max_val=1.0))


def ssim_tf(y_true, y_pred):
    """Mean SSIM by ``tf.image.ssim`` (fast, for per-epoch curves; final numbers use skimage)."""
    return tf.reduce_mean(tf.image.ssim(y_true, tf.clip_by_value(y_pred, 0.0, 1.0), max_val=1.0))


def configure_threads(deterministic: bool) -> None:
    """Op determinism when asked (slower); otherwise TensorFlow's own thread choices."""
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def _augment(image: tf.Tensor, seed: tf.Tensor, crop_size: int | None, augment: bool) -> tf.Tensor:
    """Random crop, rot90 and flip of an HWC (or stacked 2C) patch, seeded statelessly."""
    if crop_size is not None:
        channels = tf.shape(image)[-1]
        image = tf.image.stateless_random_crop(
            image, tf.stack([crop_size, crop_size, channels]), seed=seed
        )
    if augment:
        turns = tf.random.stateless_uniform([], seed=seed + 1, maxval=4, dtype=tf.int32)
        image = tf.image.rot90(image, turns)
        image = tf.image.stateless_random_flip_left_right(image, seed=seed + 2)
    return image


def make_train_dataset(
    clean: np.ndarray,
    noisy: np.ndarray | None,
    config: TrainConfig,
    sigma: float,
    seed: int,
) -> tf.data.Dataset:
    """Endless, shuffled (noisy, clean) batches of NHWC float32 patches.

    With ``fresh_noise`` each drawn patch gets new clipped Gaussian noise (a fresh draw every
    epoch, reproducible from ``seed``); otherwise the fixed noisy patches from add_noise are
    used. Crops and flips/rotations are applied identically to both halves of a pair.
    """
    channels = clean.shape[-1]
    if config.fresh_noise:
        dataset = tf.data.Dataset.from_tensor_slices(clean)
    else:
        if noisy is None:
            raise ValueError("fixed-noise training needs the noisy patches from add_noise")
        dataset = tf.data.Dataset.from_tensor_slices(np.concatenate([noisy, clean], axis=-1))
    dataset = dataset.shuffle(len(clean), seed=seed, reshuffle_each_iteration=True).repeat()
    dataset = dataset.enumerate()

    def make_pair(index, patch):
        pair_seed = tf.stack([tf.constant(seed, tf.int64), index])
        patch = _augment(patch, pair_seed, config.crop_size, config.augment)
        if config.fresh_noise:
            noise = tf.random.stateless_normal(tf.shape(patch), seed=pair_seed + 3, stddev=sigma)
            return tf.clip_by_value(patch + noise, 0.0, 1.0), patch
        return patch[..., :channels], patch[..., channels:]

    dataset = dataset.map(make_pair, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.batch(config.batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def learning_rate(config: TrainConfig):
    if config.lr_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(
            config.learning_rate, decay_steps=config.epochs * config.steps_per_epoch, alpha=0.02
        )
    return config.learning_rate


def compile_model(model: keras.Model, config: TrainConfig) -> None:
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate(config)),
        loss=LOSSES[config.loss](),
        metrics=[psnr, ssim_tf],
        jit_compile=config.jit_compile,
    )


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Raises instead of quietly stopping, so a diverged run never saves a model."""

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise NonFiniteLossError(
                f"training loss became {loss} at batch {batch}; lower the learning rate "
                f"or check the data"
            )


class History(keras.callbacks.Callback):
    """Per-epoch logs plus throughput, persisted beside the backup so a resume keeps them.

    Must come after ``BackupAndRestore`` in the callback list so it sees the restored epoch.
    """

    def __init__(self, path: Path | None, batch_size: int, steps_per_epoch: int):
        super().__init__()
        self.path = path
        self.batch_size = batch_size
        self.steps_per_epoch = steps_per_epoch
        self.rows: list[dict] = []
        self._started = 0.0

    def on_train_begin(self, logs=None):
        if self.path is not None and self.path.is_file():
            restored = getattr(self.model, "_initial_epoch", None) or 0
            self.rows = [
                row for row in json.loads(self.path.read_text()) if row["epoch"] <= restored
            ]

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self._started
        row = {"epoch": epoch + 1}
        row.update({key: float(value) for key, value in (logs or {}).items()})
        row["patches_per_s"] = self.batch_size * self.steps_per_epoch / max(seconds, 1e-9)
        self.rows.append(row)
        if self.path is not None:
            files.write_json(self.path, self.rows)


def fit(
    model: keras.Model,
    train_dataset: tf.data.Dataset,
    validation: tuple[np.ndarray, np.ndarray],
    config: TrainConfig,
    backup_dir: Path | None = None,
    callbacks: list | None = None,
    verbose: int = 2,
) -> list[dict]:
    """Compiles and trains ``model``; returns one dict of logs per epoch (resumed ones too).

    With ``backup_dir`` the model and optimizer are saved after every epoch and a rerun after
    a crash resumes from the last finished epoch.
    """
    compile_model(model, config)
    history = History(
        backup_dir / "history.json" if backup_dir else None,
        config.batch_size,
        config.steps_per_epoch,
    )
    all_callbacks = []
    if backup_dir is not None:
        all_callbacks.append(
            keras.callbacks.BackupAndRestore(str(backup_dir), double_checkpoint=True)
        )
    all_callbacks += [StopOnNonFiniteLoss(), history, *(callbacks or [])]
    noisy_val, clean_val = validation
    model.fit(
        train_dataset,
        epochs=config.epochs,
        steps_per_epoch=config.steps_per_epoch,
        validation_data=(noisy_val, clean_val),
        validation_batch_size=max(config.batch_size, 32),
        callbacks=all_callbacks,
        shuffle=False,
        verbose=verbose,
    )
    return history.rows
