"""params.yaml's ``denoise`` section: how a grayscale model denoises a colour image (the
opponent colour space, channel by channel, or a blend of both) and the geometric self-ensemble,
the same in `denoiselab denoise`, the evaluate stage and the served model."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import blur_model, enter_repo, save_shift_model
from PIL import Image
from test_denoise_cli import opponent_shifted, read_output, run_cli, shifted

from denoiselab import colour, denoise, model_store, models, serving, tracking
from denoiselab.config import ModelConfig
from denoiselab.errors import UserError

# Small enough that no opponent plane of a mid-range pixel is clipped.
SMALL_SHIFT = 0.03


def symmetric_image(side: int, seed: int = 0) -> np.ndarray:
    """A random square HWC image that every flip and rotation leaves unchanged."""
    image = np.random.default_rng(seed).random((side, side, 1)).astype(np.float32)
    for turns in range(1, 4):
        image = np.maximum(image, np.rot90(image, turns, axes=(0, 1)))
    image = np.maximum(image, image[:, ::-1])
    return image


def keras_denoiser(model, config) -> model_store.Denoiser:
    return model_store.Denoiser(model, config.depth, config.channels, "test")


def test_opponent_planes_are_in_range_and_invert_exactly():
    corners = np.array(np.meshgrid([0.0, 1.0], [0.0, 1.0], [0.0, 1.0])).reshape(3, -1).T
    planes = colour.to_opponent(corners[None])
    assert planes.min() >= 0.0 and planes.max() <= 1.0
    image = np.random.default_rng(0).random((9, 7, 3)).astype(np.float32)
    np.testing.assert_allclose(colour.from_opponent(colour.to_opponent(image)), image, atol=1e-6)


def test_opponent_planes_keep_white_noise_white_and_luminance_the_least_noisy():
    noise = np.random.default_rng(0).normal(0.0, 0.1, (200_000, 3))
    planes = noise @ colour.OPPONENT.T
    correlation = np.corrcoef(planes.T)
    np.testing.assert_allclose(correlation, np.eye(3), atol=0.01)
    np.testing.assert_allclose(
        planes.std(axis=0), [0.1 / np.sqrt(3), 0.1 / np.sqrt(2), 0.1 * np.sqrt(6) / 4], rtol=0.01
    )


@pytest.mark.parametrize("size", [2, 4, 8])
def test_self_ensemble_of_an_equivariant_model_on_a_symmetric_image_is_the_plain_model(size):
    # Averaging kernels, a pooling grid that a square of side 2**depth * k maps onto itself:
    # flipping or rotating the input flips or rotates the output.
    model, config = blur_model("unet", depth=2)
    denoiser = keras_denoiser(model, config)
    image = symmetric_image(24)
    plain = denoise.denoise_values(denoiser, image)
    ensemble = denoise.denoise_values(
        denoiser, image, settings=denoise.Settings(self_ensemble=size)
    )
    np.testing.assert_allclose(ensemble, plain, atol=1e-6)


def test_self_ensemble_of_a_trained_like_model_keeps_shape_and_range_and_averages_views():
    keras.utils.set_random_seed(0)
    config = ModelConfig(model="unet", base_filters=4, depth=2, bias=False)
    denoiser = keras_denoiser(models.build_model(config), config)
    # 37 x 53: off the pooling grid and not square, so each rotation pads differently.
    image = np.random.default_rng(1).random((37, 53, 1)).astype(np.float32)
    plain = denoise.denoise_values(denoiser, image)
    for size in (2, 4, 8):
        settings = denoise.Settings(self_ensemble=size)
        ensemble = denoise.denoise_values(denoiser, image, settings=settings)
        assert ensemble.shape == image.shape and ensemble.dtype == np.float32
        assert 0.0 <= ensemble.min() and ensemble.max() <= 1.0
        assert np.abs(ensemble - plain).max() > 1e-4
    # On a symmetric image the 8 views see the same input: the ensemble is the plain output
    # averaged over the flips and rotations (equal to it only where the model's output is
    # itself symmetric).
    square = symmetric_image(32)
    output = denoise.denoise_values(denoiser, square)
    views = [
        np.rot90(view, turns, axes=(0, 1))
        for view in (output, output[:, ::-1])
        for turns in range(4)
    ]
    ensemble = denoise.denoise_values(denoiser, square, settings=denoise.Settings(self_ensemble=8))
    np.testing.assert_allclose(ensemble, np.mean(views, axis=0), atol=1e-5)


def test_a_noise_map_model_is_given_the_level_read_from_each_plane_it_denoises(tmp_path):
    from denoiselab import noise, noise_level, padding

    keras.utils.set_random_seed(0)
    config = ModelConfig(model="unet", base_filters=4, depth=2, bias=False, noise_map=True)
    model = models.build_model(config)
    models.save_model_dir(model, config, tmp_path / "model", {})
    denoiser = model_store.load_folder(tmp_path / "model")
    assert (denoiser.channels, denoiser.input_channels, denoiser.noise_map) == (1, 2, True)
    rng = np.random.default_rng(2)
    image = noise.add_gaussian_noise(np.full((40, 52, 1), 0.5), 0.1, rng)
    # What denoise computes is the network given the image and the level estimated from it,
    # through onnxruntime here, in tiles (of 16, with the margins the model needs) or whole.
    mapped = noise_level.with_estimated_map(image)
    expected = np.clip(padding.predict_padded(model, mapped, 4), 0.0, 1.0)
    np.testing.assert_allclose(denoise.denoise_values(denoiser, image), expected, atol=1e-5)
    tiled = denoise.denoise_values(denoiser, image, tile_size=16)
    np.testing.assert_allclose(tiled, expected, atol=1e-5)
    # Another level in the image, another level in the map: the output follows the estimate.
    louder = noise.add_gaussian_noise(np.full((40, 52, 1), 0.5), 0.2, rng)
    direct = np.clip(padding.predict_padded(model, noise.with_noise_map(louder, 0.1), 4), 0, 1)
    assert np.abs(denoise.denoise_values(denoiser, louder) - direct).max() > 1e-4
    # A colour image: each opponent plane with its own level; shape, range and the ensemble.
    colour = noise.add_gaussian_noise(np.full((24, 32, 3), 0.4), 0.1, rng)
    settings = denoise.Settings(self_ensemble=2)
    output = denoise.denoise_values(denoiser, colour, settings=settings)
    assert output.shape == colour.shape and output.dtype == np.float32
    assert 0.0 <= output.min() and output.max() <= 1.0


class LevelProbe:
    """A stand-in network whose output is its noise level map: what the model was told."""

    def __call__(self, batch, training=False):
        return np.asarray(batch)[..., 1:]


@pytest.mark.parametrize("sigma", [0.03, 0.05, 0.1, 0.2])
def test_the_level_map_holds_the_level_read_bent_by_the_level_exponent(sigma):
    from denoiselab import noise, noise_level

    image = noise.add_gaussian_noise(np.full((64, 64, 1), 0.5), sigma, np.random.default_rng(0))
    read = noise_level.estimate_sigma(image)
    probe = model_store.Denoiser(LevelProbe(), 2, 1, "probe", noise_map=True)
    told = {
        exponent: float(
            denoise.denoise_values(
                probe, image, settings=denoise.Settings(level_exponent=exponent)
            ).mean()
        )
        for exponent in (1.0, 1.05)
    }
    assert told[1.0] == pytest.approx(read, rel=1e-6)
    assert told[1.05] == pytest.approx(0.1 * (read / 0.1) ** 1.05, rel=1e-6)
    # Below the pivot the model is told less noise than read, above it more.
    assert (told[1.05] < read) == (read < 0.1)
    assert (told[1.05] > read) == (read > 0.1)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"colour_transform": "yuv"}, "denoise.colour_transform: must be one of"),
        ({"self_ensemble": 3}, "denoise.self_ensemble: must be one of 1, 2, 4, 8"),
        ({"self_ensemble": True}, "denoise.self_ensemble: must be one of"),
        ({"opponent_weight": 1.5}, r"denoise.opponent_weight: must be a number in \[0, 1\]"),
        ({"opponent_weight": True}, "denoise.opponent_weight: must be a number"),
        ({"level_exponent": 3}, r"denoise.level_exponent: must be a number in \[0.5, 2.0\]"),
        ({"level_exponent": "1"}, "denoise.level_exponent: must be a number"),
        ({"chroma_gain": 0}, r"denoise.chroma_gain: must be a number in \[0.25, 4.0\]"),
        ({"chroma_gain": False}, "denoise.chroma_gain: must be a number"),
        ({"coarse_pass": [1.5]}, r"denoise.coarse_pass: must be a number in \[0.0, 1.0\]"),
        ({"coarse_pass": ["0.1"]}, "denoise.coarse_pass: must be a number"),
        ({"coarse_pass": 0.1}, "denoise.coarse_pass: must be a list of at most 4 numbers"),
        ({"coarse_pass": [0.1] * 5}, "denoise.coarse_pass: must be a list of at most 4"),
    ],
)
def test_bad_settings_name_the_key(values, message):
    with pytest.raises(UserError, match=message):
        denoise.Settings.from_mapping(values)


@pytest.fixture
def repo(tmp_path, monkeypatch):
    return enter_repo(monkeypatch, tmp_path / "repo", tmp_path / "store")


@pytest.fixture(scope="module")
def small_shift_dir(tmp_path_factory):
    return save_shift_model(tmp_path_factory.mktemp("models") / "small", (SMALL_SHIFT,))


def mid_range_rgb(path, seed: int = 0) -> np.ndarray:
    pixels = np.random.default_rng(seed).integers(100, 156, (20, 18, 3)).astype(np.uint8)
    Image.fromarray(pixels).save(path)
    return pixels


def test_gray_model_denoises_colour_in_the_opponent_space_by_default(repo, small_shift_dir):
    pixels = mid_range_rgb(repo / "photo.png")
    assert (
        run_cli("denoise", repo / "photo.png", "-o", repo / "out", "--model", small_shift_dir) == 0
    )
    denoised = read_output(repo / "out" / "photo.png")[1]
    np.testing.assert_allclose(denoised, opponent_shifted(pixels, SMALL_SHIFT), atol=1)
    # Nothing clipped: R, G and B move by -8/3, +1/3 and -2/3 of the shift.
    moves = (denoised.astype(float) - pixels).mean(axis=(0, 1)) / 255 / SMALL_SHIFT
    np.testing.assert_allclose(moves, [-8 / 3, 1 / 3, -2 / 3], atol=0.1)


def test_colour_transform_and_self_ensemble_come_from_params_yaml_or_the_options(
    repo, small_shift_dir, capsys
):
    pixels = mid_range_rgb(repo / "photo.png")
    per_channel = shifted(pixels, SMALL_SHIFT)
    (repo / "params.yaml").write_text("denoise:\n  colour_transform: per_channel\n")
    assert (
        run_cli("denoise", repo / "photo.png", "-o", repo / "a", "--model", small_shift_dir) == 0
    )
    np.testing.assert_allclose(read_output(repo / "a" / "photo.png")[1], per_channel, atol=1)

    # The option wins over params.yaml; the shift model is equivariant, so 8 views change
    # nothing.
    args = ["--colour-transform", "opponent", "--self-ensemble", "8"]
    command = ["denoise", repo / "photo.png", "-o", repo / "b", "--model", small_shift_dir]
    assert run_cli(*command, *args) == 0
    np.testing.assert_allclose(
        read_output(repo / "b" / "photo.png")[1], opponent_shifted(pixels, SMALL_SHIFT), atol=1
    )

    (repo / "params.yaml").write_text("denoise:\n  self_ensemble: 3\n")
    capsys.readouterr()
    assert (
        run_cli("denoise", repo / "photo.png", "-o", repo / "c", "--model", small_shift_dir) == 2
    )
    error = capsys.readouterr().err.strip()
    assert "denoise.self_ensemble: must be one of 1, 2, 4, 8" in error and "\n" not in error
    assert not (repo / "c").exists()


@pytest.mark.parametrize("weight", [0.0, 0.3, 1.0])
def test_blend_averages_the_opponent_and_per_channel_results_with_the_weight(
    repo, small_shift_dir, weight
):
    pixels = mid_range_rgb(repo / "photo.png")
    (repo / "params.yaml").write_text(
        f"denoise:\n  colour_transform: blend\n  opponent_weight: {weight}\n"
    )
    assert (
        run_cli("denoise", repo / "photo.png", "-o", repo / "out", "--model", small_shift_dir) == 0
    )
    expected = weight * opponent_shifted(pixels, SMALL_SHIFT).astype(float) + (
        1 - weight
    ) * shifted(pixels, SMALL_SHIFT).astype(float)
    np.testing.assert_allclose(read_output(repo / "out" / "photo.png")[1], expected, atol=1.01)
    # The option wins over params.yaml.
    command = ["denoise", repo / "photo.png", "-o", repo / "b", "--model", small_shift_dir]
    assert run_cli(*command, "--opponent-weight", "1") == 0
    np.testing.assert_allclose(
        read_output(repo / "b" / "photo.png")[1], opponent_shifted(pixels, SMALL_SHIFT), atol=1
    )


@pytest.mark.parametrize(
    ("transform", "views", "opponent_views", "channel_views"),
    [
        ("opponent", 2, [((0, False), (0, True))] * 3, []),
        ("per_channel", 2, [], [((0, False), (0, True))] * 3),
        ("blend", 2, [((0, False),)] * 3, [((0, True),)] * 3),
        ("blend", 4, [((0, False), (2, False))] * 3, [((0, True), (2, True))] * 3),
        ("blend", 1, [((0, False),)] * 3, [((0, False),)] * 3),
    ],
)
def test_blend_shares_the_self_ensemble_views_between_its_two_colour_bases(
    transform, views, opponent_views, channel_views
):
    """With 2 views, blend runs the model as often as opponent does: the opponent planes take
    the image as it is, R, G and B its mirror image."""
    image = np.random.default_rng(3).uniform(0.2, 0.8, (6, 5, 3)).astype(np.float32)
    opponent_planes = {colour.to_opponent(image)[..., k].tobytes() for k in range(3)}
    runs = {"opponent": [], "channels": []}
    seen = set()

    def run(values, geometries, clipped_in):
        # Each plane's level is read knowing where the RGB image's noise was clipped, worked
        # out once for all the planes.
        assert clipped_in.image is image
        seen.add(id(clipped_in))
        basis = "opponent" if values[..., 0].tobytes() in opponent_planes else "channels"
        runs[basis].append(tuple(geometries))
        return values

    settings = denoise.Settings(transform, self_ensemble=views, opponent_weight=0.6)
    result = denoise.colour_by_planes(run, image, settings)
    assert runs == {"opponent": opponent_views, "channels": channel_views}
    assert len(seen) == 1
    np.testing.assert_allclose(result, image, atol=1e-6)


@pytest.mark.parametrize("gain", [1.0, 1.5, 0.5])
def test_the_chroma_gain_stretches_the_chrominance_planes_the_model_sees(gain):
    image = np.random.default_rng(4).uniform(0.3, 0.7, (6, 5, 3)).astype(np.float32)
    planes = colour.to_opponent(image)
    seen = []

    def run(values, geometries, clipped_in):
        seen.append(values[..., 0])
        return values - 0.01

    settings = denoise.Settings(chroma_gain=gain)
    result = denoise.colour_by_planes(run, image, settings)
    # The luminance as it is, the chrominance stretched about 0.5.
    np.testing.assert_allclose(seen[0], planes[..., 0], atol=1e-6)
    np.testing.assert_allclose(
        seen[1:], np.moveaxis(0.5 + gain * (planes[..., 1:] - 0.5), -1, 0), atol=1e-6
    )
    # Shrunk back: what the model takes off a chrominance plane counts 1 / gain times.
    expected = colour.from_opponent(planes - np.array([0.01, 0.01 / gain, 0.01 / gain]))
    np.testing.assert_allclose(result, expected, atol=1e-6)


def test_the_chroma_gain_is_a_setting_only_where_opponent_planes_are_denoised():
    assert "chroma_gain" not in denoise.Settings(chroma_gain=1.0).in_effect()
    assert denoise.Settings(chroma_gain=1.5).in_effect()["chroma_gain"] == 1.5
    assert "chroma_gain" in denoise.Settings("blend", chroma_gain=1.5).in_effect()
    assert "chroma_gain" not in denoise.Settings("per_channel", chroma_gain=1.5).in_effect()


def test_halving_and_doubling_keep_a_smooth_image_and_double_interpolates_as_skimage():
    from skimage.transform import resize

    ramp = np.add.outer(np.arange(10.0), np.arange(7.0))[..., None].astype(np.float32) / 20
    # A linear ramp halves to its block means and doubles back exactly, but for the last row
    # and column, which repeat their neighbours (odd width, edge).
    np.testing.assert_allclose(
        denoise.double(denoise.halve(ramp), ramp.shape)[1:-1, 1:-2], ramp[1:-1, 1:-2], atol=1e-6
    )
    small = np.random.default_rng(0).random((5, 4, 3)).astype(np.float32)
    expected = resize(small, (10, 8, 3), order=1, mode="edge", anti_aliasing=False)
    np.testing.assert_allclose(denoise.double(small, (10, 8, 3)), expected, atol=1e-6)
    assert denoise.double(small, (11, 9, 3)).shape == (11, 9, 3)


class LevelTaker:
    """A stand-in network that takes off the level its noise level map tells it."""

    def __call__(self, batch, training=False):
        batch = np.asarray(batch)
        return batch[..., :1] - batch[..., 1:]


@pytest.mark.parametrize("fractions", [(), (0.1,), (0.5, 0.25), (0.1, 0.06, 0.03)])
def test_each_coarse_pass_takes_off_what_the_model_does_at_its_scale_told_less(fractions):
    from denoiselab import noise, noise_level

    # Bright enough that no pixel is clipped at any scale.
    image = noise.add_gaussian_noise(np.full((64, 48, 1), 0.65), 0.1, np.random.default_rng(1))
    read = noise_level.estimate_sigma(image)
    taker = model_store.Denoiser(LevelTaker(), 2, 1, "taker", noise_map=True)
    settings = denoise.Settings(level_exponent=1.05, coarse_pass=fractions)
    result = denoise.denoise_values(taker, image, settings=settings)
    # The model takes off what it is told at full resolution, then each coarse pass what it
    # is told there, spread over the pixels the scale's one pixel stands for.
    told = settings.map_level(read) + sum(settings.map_level(read * f) for f in fractions)
    assert result.shape == image.shape
    np.testing.assert_allclose(result, np.clip(image - told, 0, 1), atol=1e-5)


def test_a_coarse_pass_leaves_out_the_scales_smaller_than_the_model_takes():
    seen = []

    def run(values):
        seen.append(values.shape[:2])
        return values[..., :1] - 0.01

    image = np.full((40, 24, 1), 0.5, np.float32)
    result = denoise.coarse_passes(run, image, [0.1, 0.1, 0.1, 0.1], [(0, False)], smallest=4)
    # 20 x 12, 10 x 6 and 5 x 3 (below 4: it and the pass after it are left out).
    assert seen == [(20, 12), (10, 6)]
    np.testing.assert_allclose(result, 0.48, atol=1e-6)


def test_the_coarse_pass_is_a_setting_only_where_it_is_on():
    assert "coarse_pass" not in denoise.Settings().in_effect()
    settings = denoise.Settings.from_mapping({"coarse_pass": [0.1, 0.06]})
    assert settings.in_effect()["coarse_pass"] == [0.1, 0.06]
    # Logged and read back (the served model's config), it is the same setting.
    assert denoise.Settings.from_mapping(settings.as_dict()) == settings


def save_level_map_shift_model(folder, shift: float) -> None:
    """A U-Net with a noise level map input that returns ``clip(input - shift)`` whatever the
    level (all weights zero but its noise layer's bias), saved as `dvc repro` saves one."""
    config = ModelConfig(model="unet", base_filters=2, depth=2, noise_map=True)
    model = models.build_model(config)
    for layer in model.layers:
        layer.set_weights([np.zeros_like(weight) for weight in layer.get_weights()])
    kernel, _ = model.get_layer("noise").get_weights()
    model.get_layer("noise").set_weights([kernel, np.array([shift], np.float32)])
    models.save_model_dir(model, config, folder, {})


def test_the_coarse_pass_comes_from_params_yaml_or_the_option(repo, tmp_path):
    save_level_map_shift_model(tmp_path / "model", SMALL_SHIFT)
    pixels = np.random.default_rng(2).integers(100, 156, (64, 64), dtype=np.uint8)
    Image.fromarray(pixels).save(repo / "photo.png")
    (repo / "params.yaml").write_text("denoise:\n  coarse_pass: [0.5]\n")
    command = ["denoise", repo / "photo.png", "--model", tmp_path / "model"]
    assert run_cli(*command, "-o", repo / "a") == 0
    assert run_cli(*command, "-o", repo / "b", "--coarse-pass", "none") == 0
    assert run_cli(*command, "-o", repo / "c", "--coarse-pass", "0.5,0.5") == 0
    with_pass = read_output(repo / "a" / "photo.png")[1].astype(float)
    without = read_output(repo / "b" / "photo.png")[1].astype(float)
    two_passes = read_output(repo / "c" / "photo.png")[1].astype(float)
    # Without a pass the model takes its shift off once; each pass takes it off again.
    np.testing.assert_allclose(without, pixels - SMALL_SHIFT * 255, atol=1)
    np.testing.assert_allclose(with_pass, pixels - 2 * SMALL_SHIFT * 255, atol=1)
    np.testing.assert_allclose(two_passes, pixels - 3 * SMALL_SHIFT * 255, atol=1)


def test_the_chroma_gain_comes_from_params_yaml_or_the_option(repo, small_shift_dir):
    pixels = mid_range_rgb(repo / "photo.png")
    (repo / "params.yaml").write_text("denoise:\n  chroma_gain: 2\n")
    command = ["denoise", repo / "photo.png", "-o", repo / "a", "--model", small_shift_dir]
    assert run_cli(*command) == 0
    halved = colour.from_opponent(
        colour.to_opponent(pixels / 255)
        - np.array([SMALL_SHIFT, SMALL_SHIFT / 2, SMALL_SHIFT / 2])
    )
    np.testing.assert_allclose(read_output(repo / "a" / "photo.png")[1], halved * 255, atol=1)
    # The option wins over params.yaml: gain 1 is the plain opponent planes.
    command = ["denoise", repo / "photo.png", "-o", repo / "b", "--model", small_shift_dir]
    assert run_cli(*command, "--chroma-gain", "1") == 0
    np.testing.assert_allclose(
        read_output(repo / "b" / "photo.png")[1], opponent_shifted(pixels, SMALL_SHIFT), atol=1
    )


def test_an_opponent_weight_without_blend_is_warned_about(repo, small_shift_dir, capsys):
    pixels = mid_range_rgb(repo / "photo.png")
    command = ["denoise", repo / "photo.png", "-o", repo / "out", "--model", small_shift_dir]
    assert run_cli(*command, "--colour-transform", "opponent", "--opponent-weight", "0.3") == 0
    assert (
        "warning: --opponent-weight has no effect with colour transform opponent; "
        "add --colour-transform blend" in capsys.readouterr().err
    )
    np.testing.assert_allclose(
        read_output(repo / "out" / "photo.png")[1], opponent_shifted(pixels, SMALL_SHIFT), atol=1
    )
    assert run_cli(*command, "--colour-transform", "blend", "--opponent-weight", "0.3") == 0
    assert "warning" not in capsys.readouterr().err


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--opponent-weight", "2", "--opponent-weight: must be a number in [0, 1], got 2"),
        ("--level-exponent", "3", "--level-exponent: must be a number in [0.5, 2], got 3"),
        ("--level-exponent", "x", "--level-exponent: must be a number in [0.5, 2], got x"),
        ("--coarse-pass", "2", "--coarse-pass: must be a number in [0, 1], got 2"),
        ("--coarse-pass", "0.1,x", "--coarse-pass: must be a number in [0, 1], got x"),
        ("--coarse-pass", "0.1,0.1,0.1,0.1,0.1", "--coarse-pass: at most 4 comma-separated"),
    ],
)
def test_a_bad_settings_option_is_refused_in_one_line(
    repo, small_shift_dir, capsys, option, value, message
):
    mid_range_rgb(repo / "photo.png")
    command = ["denoise", repo / "photo.png", "-o", repo / "out", "--model", small_shift_dir]
    with pytest.raises(SystemExit) as stop:
        run_cli(*command, option, value)
    assert stop.value.code == 2
    assert message in capsys.readouterr().err
    assert not (repo / "out").exists()


def test_the_logged_model_serves_with_the_settings_it_was_logged_with(repo, small_shift_dir):
    import mlflow

    tracking.setup()
    # Logged for colour images (the signature's channels), as a grayscale champion_rgb is.
    batch = np.random.default_rng(2).uniform(0.4, 0.6, (2, 11, 13, 3)).astype(np.float32)
    denoiser = model_store.load_folder(small_shift_dir)
    for transform in ("opponent", "per_channel", "blend"):
        settings = denoise.Settings(
            colour_transform=transform, self_ensemble=2, opponent_weight=0.7
        )
        with tracking.model_run(f"shift-{transform}", "test", {}) as run:
            pass
        uri = serving.log_model_folder(small_shift_dir, 3, run.info.run_id, settings)
        served = mlflow.pyfunc.load_model(uri).predict(batch)
        expected = [denoise.denoise_values(denoiser, image, settings=settings) for image in batch]
        np.testing.assert_allclose(served, np.stack(expected), atol=1e-6)
        # The same folder with the same settings is not logged twice; other settings are.
        assert serving.log_model_folder(small_shift_dir, 3, run.info.run_id, settings) == uri
        other = denoise.Settings(colour_transform=transform, self_ensemble=1)
        assert serving.log_model_folder(small_shift_dir, 3, run.info.run_id, other) != uri


def test_the_served_model_makes_the_coarse_passes_it_was_logged_with(repo, tmp_path):
    import mlflow

    tracking.setup()
    save_level_map_shift_model(tmp_path / "model", SMALL_SHIFT)
    denoiser = model_store.load_folder(tmp_path / "model")
    batch = np.random.default_rng(3).uniform(0.4, 0.6, (2, 32, 24, 1)).astype(np.float32)
    settings = denoise.Settings(coarse_pass=(0.1, 0.06))
    with tracking.model_run("level-shift", "test", {}) as run:
        pass
    uri = serving.log_model_folder(tmp_path / "model", 1, run.info.run_id, settings)
    served = mlflow.pyfunc.load_model(uri).predict(batch)
    expected = [denoise.denoise_values(denoiser, image, settings=settings) for image in batch]
    np.testing.assert_allclose(served, np.stack(expected), atol=1e-6)
    # The full-resolution run and each of the two passes took the shift off.
    np.testing.assert_allclose(served, batch - 3 * SMALL_SHIFT, atol=1e-5)


def test_level_options_for_a_model_without_a_noise_map_are_warned_about(
    repo, small_shift_dir, capsys
):
    mid_range_rgb(repo / "photo.png")
    command = ["denoise", repo / "photo.png", "-o", repo / "out", "--model", small_shift_dir]
    assert run_cli(*command, "--coarse-pass", "0.1", "--level-exponent", "1.2") == 0
    err = capsys.readouterr().err
    assert "warning: --coarse-pass has no effect with" in err
    assert "warning: --level-exponent has no effect with" in err
    assert "which takes no noise level map" in err
    # Turning the passes off, or a model that takes the level, is nothing to warn about.
    assert run_cli(*command, "--coarse-pass", "none") == 0
    assert "warning" not in capsys.readouterr().err
    save_level_map_shift_model(repo / "level_model", SMALL_SHIFT)
    command = ["denoise", repo / "photo.png", "-o", repo / "out2", "--model", repo / "level_model"]
    assert run_cli(*command, "--coarse-pass", "0.1") == 0
    assert "warning" not in capsys.readouterr().err
