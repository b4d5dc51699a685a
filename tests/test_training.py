import keras
import numpy as np
import pytest

from denoiselab import models, training
from denoiselab.config import TrainConfig


def smooth_patches(count, size=16, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    patches = [
        0.5 + 0.3 * np.sin(6 * x * rng.random() + 4 * y * rng.random()) for _ in range(count)
    ]
    return np.stack(patches)[..., None].astype(np.float32)


def tiny_config(**overrides):
    values = dict(
        model="unet",
        base_filters=4,
        depth=2,
        loss="mse",
        learning_rate=3e-3,
        batch_size=8,
        epochs=3,
        steps_per_epoch=8,
        crop_size=None,
    )
    values.update(overrides)
    return TrainConfig(**values)


def test_fresh_noise_dataset_is_seeded_and_new_each_draw():
    clean = smooth_patches(4)
    config = tiny_config(batch_size=4, augment=False)
    first = list(training.make_train_dataset(clean, None, config, 0.1, seed=0).take(2))
    again = list(training.make_train_dataset(clean, None, config, 0.1, seed=0).take(2))
    noisy_a, clean_a = first[0]
    np.testing.assert_array_equal(noisy_a, again[0][0])
    assert noisy_a.shape == (4, 16, 16, 1)
    noise_std = float(np.std(noisy_a.numpy() - clean_a.numpy()))
    assert 0.08 < noise_std < 0.12
    # The second pass over the same patches draws new noise.
    assert not np.allclose(
        np.sort(first[0][0].numpy().ravel()), np.sort(first[1][0].numpy().ravel())
    )


def test_blind_dataset_draws_each_patch_a_level_from_the_range():
    # Mid-gray patches, so clipping never shrinks the noise and its std is the drawn level.
    clean = np.full((64, 16, 16, 1), 0.5, np.float32)
    config = tiny_config(batch_size=64, augment=False, noise_sigma_range=(0.02, 0.2))
    noisy, clean_batch = next(iter(training.make_train_dataset(clean, None, config, 0.1, 0)))
    stds = np.std((noisy - clean_batch).numpy(), axis=(1, 2, 3))
    assert stds.min() > 0.015 and stds.max() < 0.21
    # Levels spread over the range, not one level for all (a fixed 0.1 fails both).
    assert stds.min() < 0.06 and stds.max() > 0.15
    again = next(iter(training.make_train_dataset(clean, None, config, 0.1, 0)))[0]
    np.testing.assert_array_equal(noisy, again)


def test_noise_sigma_power_draws_more_low_levels_within_the_same_range():
    uniform = np.random.default_rng(0).random(20000)
    even = training.noise_sigma_from_uniform(uniform, (0.0, 0.2), 1.0)
    low = training.noise_sigma_from_uniform(uniform, (0.0, 0.2), 1.5)
    assert even.min() >= 0 and even.max() <= 0.2 and low.min() >= 0 and low.max() <= 0.2
    # Uniform: a quarter of the draws below 0.05; power 1.5: (1/4)**(1/1.5) = 40 percent.
    assert np.mean(even < 0.05) == pytest.approx(0.25, abs=0.01)
    assert np.mean(low < 0.05) == pytest.approx(0.25 ** (1 / 1.5), abs=0.01)
    assert np.mean(low) == pytest.approx(0.2 / 2.5, abs=0.002)


def test_blind_dataset_draws_levels_by_the_power():
    clean = np.full((256, 16, 16, 1), 0.5, np.float32)

    def stds(power):
        config = tiny_config(
            batch_size=256, augment=False, noise_sigma_range=(0.0, 0.2), noise_sigma_power=power
        )
        noisy, clean_batch = next(iter(training.make_train_dataset(clean, None, config, 0.1, 0)))
        return np.std((noisy - clean_batch).numpy(), axis=(1, 2, 3))

    even, low = stds(1.0), stds(2.0)
    assert np.mean(even) == pytest.approx(0.1, abs=0.015)
    assert np.mean(low) == pytest.approx(0.2 / 3, abs=0.015)


def test_loss_level_power_weighs_each_patch_by_its_level():
    clean = np.full((256, 16, 16, 1), 0.5, np.float32)
    config = tiny_config(
        batch_size=256,
        augment=False,
        noise_sigma_range=(0.0, 0.2),
        noise_sigma_power=1.5,
        noise_map=True,
        loss_level_power=0.75,
    )
    noisy, clean_batch, weight = next(
        iter(training.make_train_dataset(clean, None, config, 0.1, 0))
    )
    sigma = noisy.numpy()[:, 0, 0, 1]
    assert weight.shape == (256, 1, 1)
    expected = (0.1 / np.maximum(sigma, 0.02)) ** 0.75
    np.testing.assert_allclose(weight.numpy()[:, 0, 0], expected, rtol=1e-5)
    # Lower levels weigh more, 1 at 0.1, and the floor caps the weight of the lowest.
    order = np.argsort(sigma)
    assert np.all(np.diff(weight.numpy()[order, 0, 0]) <= 1e-6)
    assert weight.numpy().max() == pytest.approx(5**0.75, rel=1e-5)
    assert float(training.loss_weight(0.1, 0.75)) == pytest.approx(1.0)
    # The same patches and noise as without weights: only the loss changes.
    plain = config.model_copy(update={"loss_level_power": 0.0})
    unweighted = next(iter(training.make_train_dataset(clean, None, plain, 0.1, 0)))
    assert len(unweighted) == 2
    np.testing.assert_array_equal(unweighted[0].numpy(), noisy.numpy())
    np.testing.assert_array_equal(unweighted[1].numpy(), clean_batch.numpy())


def test_a_weighted_loss_trains_a_blind_model():
    clean = smooth_patches(64)
    config = tiny_config(
        noise_sigma_range=(0.0, 0.2), noise_map=True, loss="l1", loss_level_power=0.75
    )
    model = models.build_model(config.architecture(1))
    validation = training.validation_data(clean[:16], clean[:16], (0.0, 0.2), 0, True)
    rows = training.fit(
        model,
        training.make_train_dataset(clean, None, config, 0.1, 0),
        validation,
        config,
        verbose=0,
    )
    assert len(rows) == 3
    assert rows[-1]["loss"] < rows[0]["loss"]


def test_a_blind_model_is_validated_at_each_quarter_of_its_range():
    assert training.validation_levels((0.0, 0.2)) == (0.05, 0.1, 0.15, 0.2)
    clean = np.full((8, 32, 32, 1), 0.5, np.float32)
    fixed = clean + 0.1
    noisy, target = training.validation_data(clean, fixed, None, seed=0)
    assert noisy is fixed and target is clean
    noisy, target = training.validation_data(clean, fixed, (0.0, 0.2), seed=0)
    # Each patch once, the levels in turn: a quarter of the patches at each.
    assert noisy.shape == target.shape == (8, 32, 32, 1)
    stds = [float(np.std(noisy[index::4] - 0.5)) for index in range(4)]
    np.testing.assert_allclose(stds, [0.05, 0.1, 0.15, 0.2], rtol=0.1)
    # Fewer patches than levels: every level still gets one.
    noisy, target = training.validation_data(clean[:3], fixed[:3], (0.0, 0.2), seed=0)
    assert noisy.shape == target.shape == (4, 32, 32, 1)
    assert float(np.std(noisy[3] - 0.5)) == pytest.approx(0.2, rel=0.1)


def test_a_noise_map_carries_each_patchs_own_level():
    clean = np.full((64, 16, 16, 1), 0.5, np.float32)
    config = tiny_config(
        batch_size=64, augment=False, noise_sigma_range=(0.0, 0.2), noise_map=True
    )
    noisy, clean_batch = next(iter(training.make_train_dataset(clean, None, config, 0.1, 0)))
    noisy, clean_batch = noisy.numpy(), clean_batch.numpy()
    assert noisy.shape == (64, 16, 16, 2) and clean_batch.shape == (64, 16, 16, 1)
    levels = noisy[..., 1]
    # One level per patch, held everywhere, and it is the std of that patch's noise.
    assert np.ptp(levels, axis=(1, 2)).max() == 0
    stds = np.std(noisy[..., 0] - clean_batch[..., 0], axis=(1, 2))
    np.testing.assert_allclose(stds, levels[:, 0, 0], atol=0.03)
    assert np.corrcoef(stds, levels[:, 0, 0])[0, 1] > 0.97
    # Validation patches carry their level too.
    val_noisy, val_clean = training.validation_data(clean[:3], clean[:3], (0.0, 0.2), 0, True)
    assert val_noisy.shape == (4, 16, 16, 2) and val_clean.shape == (4, 16, 16, 1)
    np.testing.assert_allclose(val_noisy[:, 0, 0, 1], [0.05, 0.1, 0.15, 0.2])


def test_fixed_noise_dataset_keeps_pairs_aligned_under_crops_and_flips():
    clean = smooth_patches(6)
    noisy = clean + 0.25
    config = tiny_config(batch_size=3, fresh_noise=False, augment=True, crop_size=8)
    noisy_batch, clean_batch = next(
        iter(training.make_train_dataset(clean, noisy, config, 0.1, 0))
    )
    assert noisy_batch.shape == (3, 8, 8, 1)
    np.testing.assert_allclose(noisy_batch - clean_batch, 0.25, atol=1e-6)


def test_training_lowers_the_loss_and_records_each_epoch():
    # Seeded, so the initial weights do not depend on the tests that ran before.
    keras.utils.set_random_seed(0)
    clean = smooth_patches(32)
    config = tiny_config(base_filters=8, steps_per_epoch=30, learning_rate=5e-3)
    model = models.build_model(config.architecture(1))
    dataset = training.make_train_dataset(clean, None, config, 0.1, 0)
    val_clean = smooth_patches(8, seed=1)
    val_noisy = np.clip(val_clean + np.random.default_rng(0).normal(0, 0.1, val_clean.shape), 0, 1)
    rows = training.fit(
        model, dataset, (val_noisy.astype(np.float32), val_clean), config, verbose=0
    )
    assert [row["epoch"] for row in rows] == [1, 2, 3]
    assert {"loss", "val_loss", "val_psnr", "val_ssim_tf", "patches_per_s"} <= set(rows[0])
    noisy_mse = float(np.mean((val_noisy - val_clean) ** 2))
    # Smooth patches are easy to denoise: the model must clearly beat the noisy input.
    assert rows[-1]["val_loss"] < 0.5 * noisy_mse
    assert rows[-1]["val_psnr"] > rows[0]["val_psnr"] - 0.5


def test_nan_loss_stops_training_with_an_error():
    clean = smooth_patches(16)
    clean[3, 2, 2, 0] = np.nan
    config = tiny_config(fresh_noise=True, augment=False, epochs=2)
    model = models.build_model(config.architecture(1))
    dataset = training.make_train_dataset(clean, None, config, 0.1, 0)
    with pytest.raises(training.NonFiniteLossError, match="loss became nan"):
        training.fit(model, dataset, (clean[:4], clean[:4]), config, verbose=0)


def test_several_steps_per_execution_train_the_same_steps_as_one():
    clean = smooth_patches(16)
    weights, iterations = [], []
    for steps_per_execution in (1, 4):
        config = tiny_config(epochs=2, steps_per_epoch=4, steps_per_execution=steps_per_execution)
        keras.utils.set_random_seed(0)
        model = models.build_model(config.architecture(1))
        dataset = training.make_train_dataset(clean, None, config, 0.1, 0)
        rows = training.fit(model, dataset, (clean[:4], clean[:4]), config, verbose=0)
        assert [row["epoch"] for row in rows] == [1, 2]
        iterations.append(int(model.optimizer.iterations.numpy()))
        weights.append(model.get_weights())
    assert iterations == [8, 8]
    for one, four in zip(*weights, strict=True):
        np.testing.assert_allclose(one, four, atol=1e-5)


@pytest.mark.parametrize(
    ("steps", "asked", "used"), [(40, 8, 8), (50, 8, 5), (747, 8, 3), (3, 8, 3)]
)
def test_steps_per_execution_never_runs_past_the_epoch(steps, asked, used):
    config = tiny_config(steps_per_epoch=steps, steps_per_execution=asked)
    assert training.steps_per_execution(config) == used


class Crash(Exception):
    pass


class CrashAfterEpoch(keras.callbacks.Callback):
    """Stands in for a kill once ``epoch`` epochs are finished and backed up."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epoch:
            raise Crash


@pytest.mark.parametrize("crash_after", [1, 3])
def test_a_resumed_fit_ends_as_an_uninterrupted_one(tmp_path, crash_after):
    clean = smooth_patches(16)
    config = tiny_config(epochs=3, steps_per_epoch=4, lr_schedule="cosine", precision="float32")

    def run(backup_dir, callbacks=()):
        keras.utils.set_random_seed(0)
        model = models.build_model(config.architecture(1))
        dataset = training.make_train_dataset(clean, None, config, 0.1, 0)
        rows = training.fit(
            model,
            dataset,
            (clean[:4], clean[:4]),
            config,
            backup_dir=backup_dir,
            callbacks=list(callbacks),
            verbose=0,
        )
        return model, rows

    expected_model, expected_rows = run(tmp_path / "uninterrupted")
    with pytest.raises(Crash):
        run(tmp_path / "resumed", [CrashAfterEpoch(crash_after)])
    model, rows = run(tmp_path / "resumed")
    assert int(model.optimizer.iterations.numpy()) == 12
    assert [row["epoch"] for row in rows] == [1, 2, 3]
    assert [row["val_loss"] for row in rows] == pytest.approx(
        [row["val_loss"] for row in expected_rows], rel=1e-6
    )
    for array, expected in zip(model.get_weights(), expected_model.get_weights(), strict=True):
        np.testing.assert_allclose(array, expected, rtol=0, atol=1e-6)


def test_skipping_batches_continues_the_stream():
    clean = smooth_patches(8)
    config = tiny_config(batch_size=4, crop_size=8)
    dataset = training.make_train_dataset(clean, None, config, 0.1, 0)
    whole = [noisy.numpy() for noisy, _ in dataset.take(5)]
    continued = [noisy.numpy() for noisy, _ in dataset.skip(3).take(2)]
    np.testing.assert_array_equal(np.stack(continued), np.stack(whole[3:]))
