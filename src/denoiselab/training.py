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

from denoiselab import files, models, noise
from denoiselab.config import TrainConfig
from denoiselab.errors import NonFiniteLossError, UserError

log = logging.getLogger(__name__)
BACKUP_FILE = "backup.weights.h5"
# Retracing notices when a search builds many models are expected, not actionable.
tf.get_logger().setLevel("ERROR")

LOSSES = {
    "bce": lambda: keras.losses.BinaryCrossentropy(name="bce"),
    "mse": lambda: keras.losses.MeanSquaredError(name="mse"),
    "l1": lambda: keras.losses.MeanAbsoluteError(name="l1"),
}

# A blind model's per-patch loss weight is 1 at LOSS_LEVEL_PIVOT; below LOSS_LEVEL_FLOOR (a
# fifth of the patches at the default sigma draw) it stays at the floor's weight.
LOSS_LEVEL_PIVOT = 0.1
LOSS_LEVEL_FLOOR = 0.02


def psnr(y_true, y_pred):
    """Mean PSNR (dB) over a batch of NHWC images in [0, 1]; the output is clipped first."""
    return tf.reduce_mean(tf.image.psnr(y_true, tf.clip_by_value(y_pred, 0.0, 1.0), max_val=1.0))


def ssim_tf(y_true, y_pred):
    """Mean SSIM by ``tf.image.ssim`` (fast, for per-epoch curves; final numbers use skimage)."""
    return tf.reduce_mean(tf.image.ssim(y_true, tf.clip_by_value(y_pred, 0.0, 1.0), max_val=1.0))


def enable_op_determinism(deterministic: bool) -> None:
    """Turns on TensorFlow's op determinism (reproducible, slower) when ``deterministic``;
    otherwise leaves TensorFlow as it is. It holds for the rest of the process."""
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


def draw_order(count: int, draws: int, seed: int) -> np.ndarray:
    """Which of ``count`` patches each of ``draws`` draws takes: a new permutation per pass over
    the patches, from ``seed`` alone."""
    passes = -(-draws // count)
    return np.concatenate(
        [np.random.default_rng([seed, index]).permutation(count) for index in range(passes)]
    )[:draws]


def validation_levels(noise_range: tuple[float, float]) -> tuple[float, ...]:
    """The noise levels a blind model is validated at: the quarter points of its range above
    the low end (0.05, 0.1, 0.15, 0.2 for [0, 0.2])."""
    low, high = noise_range
    return tuple(round(low + (high - low) * step / 4, 6) for step in range(1, 5))


def validation_data(
    clean: np.ndarray,
    noisy: np.ndarray,
    noise_range: tuple[float, float] | None,
    seed: int,
    noise_map: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """The (noisy, clean) validation patches (NHWC in [0, 1]) of a model trained with
    ``noise_range``: add_noise's fixed noisy patches for a model trained at one level (None);
    for a blind model, the clean patches at its :func:`validation_levels` in turn (patch i at
    level i mod 4, noise seeded per level), so that its validation PSNR is the mean over the
    levels, each on a quarter of the patches. Every patch at every level cost four times the
    time: a third of a short epoch (the plain U-Net's 50 steps of 32). With fewer patches than
    levels the first patches are used again. With ``noise_map`` each noisy patch carries its
    level as one more channel, as in training."""
    if noise_range is None:
        return noisy, clean
    levels = validation_levels(noise_range)
    indices = np.arange(max(len(clean), len(levels))) % len(clean)
    targets = clean[indices]
    channels = clean.shape[-1] + int(noise_map)
    noisy_levels = np.empty((*targets.shape[:-1], channels), np.float32)
    for index, level in enumerate(levels):
        patches = noise.add_gaussian_noise(
            targets[index :: len(levels)], level, np.random.default_rng([seed, round(level * 1e6)])
        )
        noisy_levels[index :: len(levels)] = (
            noise.with_noise_map(patches, level) if noise_map else patches
        )
    return noisy_levels, targets


def noise_sigma_from_uniform(uniform, noise_range: tuple[float, float], power: float):
    """A blind model's training sigma from a uniform draw in [0, 1] (a number, an array or a
    tensor): ``low + (high - low) * uniform**power``. Power 1 spreads the levels evenly over
    the range; above 1 it draws more low ones (the density grows as sigma falls), where one
    blind model otherwise trails models trained per level most."""
    low, high = noise_range
    return low + (high - low) * uniform**power


def loss_weight(sigma, power: float):
    """The loss weight of a patch of noise level ``sigma`` (a number, an array or a tensor), as a
    float32 tensor: ``(LOSS_LEVEL_PIVOT / max(sigma, LOSS_LEVEL_FLOOR)) ** power``.

    A residual network's error grows with the level, and the mean PSNR over the levels, which
    chooses the models, weighs each level's error relative to its size: a level's PSNR moves as
    much for a 1% change of its error at 0.05 as at 0.2. MSE weighs errors by their size, so
    the high levels dominate its gradient; l1's gradient is the same at every level. Weighing
    l1 by about 1 / sigma ** 0.75 (the error's growth with the level) evens the levels out."""
    level = tf.maximum(tf.cast(sigma, tf.float32), LOSS_LEVEL_FLOOR)
    return tf.pow(LOSS_LEVEL_PIVOT / level, power)


def make_train_dataset(
    clean: np.ndarray,
    noisy: np.ndarray | None,
    config: TrainConfig,
    sigma: float,
    seed: int,
) -> tf.data.Dataset:
    """Endless, shuffled (noisy, clean) batches of NHWC float32 patches.

    With ``fresh_noise`` each drawn patch gets new clipped Gaussian noise (a fresh draw every
    epoch, reproducible from ``seed``) of std ``sigma``, or, with ``noise_sigma_range``, of a
    std drawn per patch from that range by :func:`noise_sigma_from_uniform` (blind training:
    one model for every level);
    otherwise the fixed noisy patches from add_noise are used. With ``noise_map`` the noisy
    patch carries its std as one more, constant channel. Crops and flips/rotations are
    applied identically to both halves of a pair. With ``loss_level_power`` each pair comes
    with its loss weight (:func:`loss_weight`, shape 1 x 1, so that it spreads over the
    pixels), which ``fit`` hands to the loss.

    The order is drawn up front and every random op is stateless, so the stream is a pure
    function of ``seed``: the same under any tf.distribute strategy, which rewrites the
    pipeline (a seeded ``shuffle`` then draws another order), and a resumed run continues it
    by skipping the batches its finished steps took (see :func:`fit`).
    """
    channels = clean.shape[-1]
    if config.fresh_noise:
        source = clean
    else:
        if noisy is None:
            raise UserError("fixed-noise training needs the noisy patches from add_noise")
        source = np.concatenate([noisy, clean], axis=-1)
    patches = tf.constant(source)
    draws = config.epochs * config.steps_per_epoch * config.batch_size
    order = draw_order(len(source), draws, seed)
    dataset = tf.data.Dataset.from_tensor_slices(order).repeat().enumerate()

    def make_pair(index, patch_index):
        pair_seed = tf.stack([tf.constant(seed, tf.int64), index])
        patch = _augment(
            tf.gather(patches, patch_index), pair_seed, config.crop_size, config.augment
        )
        if config.fresh_noise:
            stddev = sigma
            if config.noise_sigma_range is not None:
                uniform = tf.random.stateless_uniform([], seed=pair_seed + 4)
                stddev = noise_sigma_from_uniform(
                    uniform, config.noise_sigma_range, config.noise_sigma_power
                )
            field = tf.random.stateless_normal(tf.shape(patch), seed=pair_seed + 3) * stddev
            noisy = tf.clip_by_value(patch + field, 0.0, 1.0)
            if config.noise_map:
                noisy = tf.concat([noisy, tf.ones_like(patch[..., :1]) * stddev], axis=-1)
            if config.loss_level_power:
                weight = loss_weight(stddev, config.loss_level_power)
                return noisy, patch, tf.reshape(weight, [1, 1])
            return noisy, patch
        return patch[..., :channels], patch[..., channels:]

    dataset = dataset.map(make_pair, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.batch(config.batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def learning_rate(config: TrainConfig):
    if config.lr_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(
            config.learning_rate, decay_steps=config.epochs * config.steps_per_epoch, alpha=0.02
        )
    return config.learning_rate


def compile_model(model: keras.Model, config: TrainConfig, distributed: bool = False) -> None:
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate(config)),
        loss=LOSSES[config.loss](),
        metrics=[psnr, ssim_tf],
        jit_compile=config.jit_compile,
        steps_per_execution=steps_per_execution(config, distributed),
    )


def steps_per_execution(config: TrainConfig, distributed: bool = False) -> int:
    """Optimizer steps per call into the graph: the largest divisor of ``steps_per_epoch`` up to
    ``config.steps_per_execution`` (Keras would otherwise run past the epoch's last step).

    The same steps in the same order as one at a time, with less per-step overhead; small
    models at small batches gain most (make bench). Under a tf.distribute strategy it is 1:
    Keras 3.15's multi-step loop fails there ("You must feed a value for placeholder tensor").
    """
    if distributed:
        return 1
    return max(
        divisor
        for divisor in range(1, min(config.steps_per_execution, config.steps_per_epoch) + 1)
        if config.steps_per_epoch % divisor == 0
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

    Must come before :class:`Backup` in the callback list: an epoch's row is written before
    its backup, so a crash between the two leaves a row the resume drops, never a backup
    without its row.
    """

    def __init__(
        self, path: Path | None, batch_size: int, steps_per_epoch: int, finished_epochs: int = 0
    ):
        super().__init__()
        self.path = path
        self.batch_size = batch_size
        self.steps_per_epoch = steps_per_epoch
        self.rows: list[dict] = []
        if finished_epochs and path is not None and path.is_file():
            saved = json.loads(path.read_text())
            self.rows = [row for row in saved if row["epoch"] <= finished_epochs]
        self._started = 0.0

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


class Backup(keras.callbacks.Callback):
    """Saves the weights and the optimizer's state (its variables and step count) after every
    epoch, in one file replaced atomically, so a crash leaves the last finished epoch whole.

    Keras's BackupAndRestore writes the weights and the epoch number to two files one after
    the other, so a crash between them resumes from an epoch that does not match the weights;
    here the optimizer's step count, saved with the weights, says how far training got.
    """

    def __init__(self, folder: Path):
        super().__init__()
        self.path = folder / BACKUP_FILE

    def on_epoch_end(self, epoch, logs=None):
        with files.atomic_path(self.path, suffix=models.WEIGHTS_SUFFIX) as temporary:
            self.model.save_weights(temporary)


def restore_backup(model: keras.Model, folder: Path) -> int:
    """Loads the last :class:`Backup` in ``folder`` into the compiled ``model`` and its
    optimizer; returns the number of optimizer steps it had taken (0 without a backup)."""
    path = folder / BACKUP_FILE
    if not path.is_file():
        return 0
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    model.load_weights(path)
    return int(model.optimizer.iterations.numpy())


def fit(
    model: keras.Model,
    train_dataset: tf.data.Dataset,
    validation: tuple[np.ndarray, np.ndarray],
    config: TrainConfig,
    backup_dir: Path | None = None,
    callbacks: list | None = None,
    verbose: int = 2,
    strategy: tf.distribute.Strategy | None = None,
) -> list[dict]:
    """Compiles and trains ``model``; returns one dict of logs per epoch (resumed ones too).

    With ``backup_dir`` the model and optimizer are saved after every epoch and a rerun after
    a crash resumes from the last finished epoch as if it had never stopped: same weights,
    optimizer state and step (which the learning-rate schedule follows), and the input stream
    continued where the finished steps left it. ``train_dataset`` must be the stream from its
    first batch, as :func:`make_train_dataset` makes it. With a ``strategy`` (see
    :mod:`denoiselab.distribute`) the model must have been built inside ``strategy.scope()``;
    it is compiled there too, and ``config.batch_size`` is the global batch over its replicas.
    """
    strategy = strategy or tf.distribute.get_strategy()
    if model.distribute_strategy is not strategy:
        raise UserError(
            "the model was built outside the distribution strategy's scope; build it inside "
            "`with strategy.scope():`"
        )
    distributed = isinstance(
        strategy, (tf.distribute.MirroredStrategy, tf.distribute.MultiWorkerMirroredStrategy)
    )
    across_workers = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    backup_dir = None if across_workers else backup_dir
    with strategy.scope():
        compile_model(model, config, distributed)
        finished_steps = restore_backup(model, backup_dir) if backup_dir is not None else 0
    finished_epochs = finished_steps // config.steps_per_epoch
    if finished_steps:
        log.info("resuming after epoch %d (step %d)", finished_epochs, finished_steps)
        # Every random op of the stream is keyed by its position, so skipping the batches
        # already trained on continues it exactly where the uninterrupted run would be.
        train_dataset = train_dataset.skip(finished_steps)
    history = History(
        backup_dir / "history.json" if backup_dir else None,
        config.batch_size,
        config.steps_per_epoch,
        finished_epochs,
    )
    # The backup comes last: a crash before it reruns the epoch, so what the other callbacks
    # record of it (the MLflow metrics) is never lost, at worst recorded twice.
    all_callbacks = [history, StopOnNonFiniteLoss(), *(callbacks or [])]
    if backup_dir is not None:
        all_callbacks.append(Backup(backup_dir))
    if across_workers:
        _fit_across_workers(model, train_dataset, validation, config, strategy, all_callbacks)
        return history.rows
    noisy_val, clean_val = validation
    model.fit(
        train_dataset,
        epochs=config.epochs,
        initial_epoch=finished_epochs,
        steps_per_epoch=config.steps_per_epoch,
        validation_data=(noisy_val, clean_val),
        validation_batch_size=max(config.batch_size, 32),
        callbacks=all_callbacks,
        shuffle=False,
        verbose=verbose,
    )
    return history.rows


def _fit_across_workers(
    model: keras.Model,
    train_dataset: tf.data.Dataset,
    validation: tuple[np.ndarray, np.ndarray],
    config: TrainConfig,
    strategy: tf.distribute.Strategy,
    callbacks: list,
) -> None:
    """``model.fit``'s work under MultiWorkerMirroredStrategy, which Keras 3's ``fit`` cannot
    do (keras-team/keras#20585: it reduces each scalar log along axis 0 and fails).

    Each replica takes its share of the global batch; Keras losses divide a replica's mean by
    the number of replicas, so the optimizer's sum of gradients over replicas is the global
    batch's gradient. Every worker scores the whole validation set, so all log the same
    numbers.
    It keeps no backup: a multi-worker run interrupted by a crash starts again from epoch 1.
    """
    loss_function, optimizer = model.loss, model.optimizer
    replicas = strategy.num_replicas_in_sync
    iterator = iter(strategy.experimental_distribute_dataset(train_dataset))

    def replica_step(noisy, clean, weight=None):
        with tf.GradientTape() as tape:
            denoised = model(noisy, training=True)
            loss = loss_function(clean, denoised, sample_weight=weight)
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))
        return loss, psnr(clean, denoised) / replicas, ssim_tf(clean, denoised) / replicas

    @tf.function
    def train_step():
        values = strategy.run(replica_step, args=next(iterator))
        return [strategy.reduce("SUM", value, axis=None) for value in values]

    @tf.function
    def score(noisy, clean):
        denoised = model(noisy, training=False)
        return loss_function(clean, denoised), psnr(clean, denoised), ssim_tf(clean, denoised)

    names = ("loss", "psnr", "ssim_tf")
    callback_list = keras.callbacks.CallbackList(callbacks, model=model)
    callback_list.on_train_begin()
    for epoch in range(config.epochs):
        callback_list.on_epoch_begin(epoch)
        totals = np.zeros(len(names))
        for step in range(config.steps_per_epoch):
            values = np.array([float(value) for value in train_step()])
            totals += values
            callback_list.on_train_batch_end(step, {"loss": values[0]})
        logs = dict(zip(names, totals / config.steps_per_epoch, strict=True))
        noisy_val, clean_val = validation
        size = max(config.batch_size, 32)
        sums = np.zeros(len(names))
        for begin in range(0, len(noisy_val), size):
            batch = slice(begin, begin + size)
            scores = score(noisy_val[batch], clean_val[batch])
            sums += np.array([float(value) for value in scores]) * len(noisy_val[batch])
        logs.update(
            {
                f"val_{name}": value
                for name, value in zip(names, sums / len(noisy_val), strict=True)
            }
        )
        log.info("epoch %d/%d: %s", epoch + 1, config.epochs, logs)
        callback_list.on_epoch_end(epoch, logs)
    callback_list.on_train_end()
