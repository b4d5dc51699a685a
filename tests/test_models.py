import keras
import numpy as np
import pytest
from keras import layers

from denoiselab import models
from denoiselab.config import ModelConfig, parse

CONFIGS = [
    ModelConfig(model="cae", base_filters=4, depth=2, residual=False, channels=1),
    ModelConfig(model="unet", base_filters=4, depth=2, residual=True, channels=1),
    ModelConfig(
        model="unet", base_filters=4, depth=3, residual=False, batch_norm=True, channels=3
    ),
    ModelConfig(model="unet", base_filters=4, depth=2, residual=True, bias=False, channels=3),
    ModelConfig(
        model="unet", base_filters=4, depth=1, bias=False, pixel_unshuffle=True, channels=1
    ),
    ModelConfig(model="unet", base_filters=4, depth=1, residual=False, pixel_unshuffle=True),
    ModelConfig(model="unet", base_filters=4, depth=2, bias=False, noise_map=True, channels=3),
    ModelConfig(
        model="unet", base_filters=4, depth=1, bias=False, pixel_unshuffle=True, noise_map=True
    ),
]


def config_id(config: ModelConfig) -> str:
    unshuffle = "-unshuffle" if config.pixel_unshuffle else ""
    noise_map = "-noisemap" if config.noise_map else ""
    return f"{config.model}-{config.channels}ch-bias{config.bias}{unshuffle}{noise_map}"


@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_output_shape_equals_input_shape_for_any_size(config):
    # A noise-map model takes one more channel than it returns: the level map.
    model = models.build_model(config)
    for size in ((16, 16), (32, 48)):
        batch = np.random.default_rng(0).random((2, *size, config.input_channels))
        output = model(batch.astype(np.float32))
        assert output.shape == (2, *size, config.channels)
        assert keras.backend.standardize_dtype(output.dtype) == "float32"


@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_model_saves_and_loads_with_its_config(config, tmp_path):
    model = models.build_model(config)
    batch = np.random.default_rng(1).random((1, 16, 16, config.input_channels)).astype(np.float32)
    models.save_model_dir(model, config, tmp_path / "model", {"name": "x"})
    loaded, info = models.load_model_dir(tmp_path / "model")
    assert info["name"] == "x"
    assert info["model_config"]["model"] == config.model
    np.testing.assert_allclose(loaded(batch), model(batch), atol=1e-6)
    reloaded, depth = models.load_any_model(tmp_path / "model")
    assert depth == config.downsamplings
    assert models.takes_noise_map(reloaded) == config.noise_map


def test_weights_file_is_byte_stable(tmp_path):
    config = CONFIGS[1]
    model = models.build_model(config)
    models.save_model_dir(model, config, tmp_path / "a", {})
    models.save_model_dir(model, config, tmp_path / "b", {})
    assert (tmp_path / "a" / models.WEIGHTS_FILE).read_bytes() == (
        tmp_path / "b" / models.WEIGHTS_FILE
    ).read_bytes()


def test_bias_free_unet_has_no_bias_and_scales_with_its_input():
    model = models.build_model(CONFIGS[3])
    assert not any(getattr(layer, "bias", None) is not None for layer in model.layers)
    # Without additive constants a ReLU network is positively homogeneous: twice the input,
    # twice the output; one with biases is not.
    batch = np.random.default_rng(4).random((1, 16, 16, 3)).astype(np.float32)
    np.testing.assert_allclose(model(2 * batch), 2 * model(batch), rtol=1e-4, atol=1e-5)
    biased = models.build_model(CONFIGS[3].model_copy(update={"bias": True}))
    for layer in biased.layers:
        if getattr(layer, "bias", None) is not None:
            layer.bias.assign(np.full(layer.bias.shape, 0.1, np.float32))
    assert not np.allclose(biased(2 * batch), 2 * biased(batch), atol=1e-3)


def test_pixel_unshuffle_runs_the_unet_on_a_quarter_of_the_pixels():
    plain = ModelConfig(model="unet", base_filters=8, depth=2, bias=False)
    unshuffled = plain.model_copy(update={"pixel_unshuffle": True})
    model = models.build_model(unshuffled)
    assert unshuffled.downsamplings == 3 and models.infer_depth(model) == 3
    # The first U-Net level sees half the height and width: a quarter of its FLOPs.
    assert model.get_layer("enc0a_conv").output.shape[-1] == 8
    probe = keras.Model(model.input, model.get_layer("enc0a_conv").output)
    assert probe(np.zeros((1, 32, 48, 1), np.float32)).shape == (1, 16, 24, 8)
    ratio = models.conv_flops_per_pixel(model, 1) / models.conv_flops_per_pixel(
        models.build_model(plain), 1
    )
    assert 0.2 < ratio < 0.3
    # Bias-free all through, the stride-2 layers too: twice the input, twice the output.
    batch = np.random.default_rng(6).random((1, 16, 16, 1)).astype(np.float32)
    assert not any(getattr(layer, "bias", None) is not None for layer in model.layers)
    np.testing.assert_allclose(model(2 * batch), 2 * model(batch), rtol=1e-4, atol=1e-5)
    # Every pixel of a 2x2 block gets its own output: the shuffle back is not an upsampling.
    output = np.asarray(model(batch))[0, :, :, 0] - batch[0, :, :, 0]
    assert np.abs(output[0::2, 0::2] - output[1::2, 1::2]).max() > 1e-4


def test_a_saved_cae_config_with_pixel_unshuffle_is_refused_naming_the_key():
    values = {"model": "cae", "depth": 2, "residual": False, "pixel_unshuffle": True}
    with pytest.raises(ValueError, match="config.json: pixel_unshuffle must be false for the cae"):
        parse(ModelConfig, values, "config.json")


def test_noise_map_unet_reads_the_level_and_returns_the_image_planes():
    config = ModelConfig(model="unet", base_filters=4, depth=2, bias=False, noise_map=True)
    model = models.build_model(config)
    assert model.input_shape[-1] == 2 and model.output_shape[-1] == 1
    image = np.random.default_rng(7).random((1, 16, 16, 1)).astype(np.float32)

    def at_level(sigma):
        return np.asarray(model(np.concatenate([image, np.full_like(image, sigma)], axis=-1)))

    # The network sees the map: another level, another output.
    assert np.abs(at_level(0.05) - at_level(0.2)).max() > 1e-4
    # The residual is taken from the image planes alone: with a zero noise head the output is
    # the image, whatever the level.
    zero_layer(model, "noise")
    np.testing.assert_allclose(at_level(0.2), image, atol=1e-6)


def test_noise_map_is_refused_for_the_cae_naming_the_key():
    values = {"model": "cae", "depth": 2, "residual": False, "noise_map": True}
    with pytest.raises(ValueError, match="config.json: noise_map must be false for the cae"):
        parse(ModelConfig, values, "config.json")


def test_residual_unet_with_zero_noise_head_is_identity():
    model = models.build_model(CONFIGS[1])
    head = model.get_layer("noise")
    head.set_weights([np.zeros_like(weight) for weight in head.get_weights()])
    batch = np.random.default_rng(2).random((1, 16, 16, 1)).astype(np.float32)
    np.testing.assert_allclose(model(batch), batch, atol=1e-6)


def zero_layer(model, name):
    layer = model.get_layer(name)
    layer.set_weights([np.zeros_like(weight) for weight in layer.get_weights()])


def test_unet_skips_carry_the_image_past_a_cut_bottleneck_and_cae_has_none():
    # With the path through the bottleneck cut (its output zeroed), only skip connections can
    # carry the input to the output: the U-Net's output must still depend on its input, the
    # CAE's must not.
    batches = np.random.default_rng(4).random((2, 1, 16, 16, 1)).astype(np.float32)
    unet = models.build_model(ModelConfig(model="unet", base_filters=4, depth=2, residual=False))
    zero_layer(unet, "dec1_up")
    cae = models.build_model(CONFIGS[0])
    zero_layer(cae, "bottleneck_conv")
    assert np.abs(unet(batches[0]) - unet(batches[1])).max() > 1e-3
    np.testing.assert_array_equal(cae(batches[0]), cae(batches[1]))


@pytest.mark.parametrize("level", [0, 1])
def test_every_unet_decoder_level_reads_its_skip(level):
    # The decoder's first convolution sees [upsampled, skip] channels; zeroing the kernel's
    # skip half changes the output only if the skip is really concatenated in.
    model = models.build_model(CONFIGS[1])
    batch = np.random.default_rng(5).random((1, 16, 16, 1)).astype(np.float32)
    before = np.asarray(model(batch))
    conv = model.get_layer(f"dec{level}a_conv")
    kernel, *rest = conv.get_weights()
    width = CONFIGS[1].base_filters * 2**level
    assert kernel.shape[2] == 2 * width
    kernel[:, :, width:, :] = 0
    conv.set_weights([kernel, *rest])
    assert np.abs(np.asarray(model(batch)) - before).max() > 1e-4


def test_flops_count_grows_with_width():
    small = models.build_model(ModelConfig(model="unet", base_filters=4, depth=2))
    large = models.build_model(ModelConfig(model="unet", base_filters=8, depth=2))
    ratio = models.conv_flops_per_pixel(large, 1) / models.conv_flops_per_pixel(small, 1)
    assert 3.0 < ratio < 4.1


def test_unknown_model_and_bad_paths(tmp_path):
    with pytest.raises(ValueError, match="unknown model 'resnet'"):
        # The config refuses unknown names itself; this checks the registry's own guard.
        models.build_model(ModelConfig.model_construct(model="resnet"))
    with pytest.raises(ValueError, match="not a model folder"):
        models.load_any_model(tmp_path)


@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_onnx_export_computes_what_keras_computes(config, tmp_path):
    from denoiselab import onnx_export

    model = models.build_model(config.model_copy(update={"precision": "float32"}))
    if config.batch_norm:
        # Non-trivial moving statistics, so the exported normalisation is really exercised.
        for layer in model.layers:
            if "bn" in layer.name:
                layer.moving_mean.assign(np.full(layer.moving_mean.shape, 0.3, np.float32))
                layer.moving_variance.assign(np.full(layer.moving_variance.shape, 2.0, np.float32))
    onnx_export.export_onnx(model, tmp_path / "model.onnx")
    runner = onnx_export.OnnxModel(tmp_path / "model.onnx")
    batch = np.random.default_rng(3).random((2, 24, 40, config.input_channels)).astype(np.float32)
    np.testing.assert_allclose(runner(batch), model(batch), atol=1e-5)
    onnx_export.export_onnx(model, tmp_path / "again.onnx")
    assert (tmp_path / "model.onnx").read_bytes() == (tmp_path / "again.onnx").read_bytes()


@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_onnx_export_of_a_bfloat16_model_agrees_within_bfloat16_rounding(config, tmp_path):
    from denoiselab import onnx_export, precision

    # The models train in mixed_bfloat16 where the hardware runs it; the export is float32
    # (the weights are float32 variables either way), so the two differ by bfloat16 rounding:
    # activations keep 8 significant bits, a relative step of 2**-8, and outputs are near 1.
    model = models.build_model(config.model_copy(update={"precision": "mixed_bfloat16"}))
    if precision.choose("mixed_bfloat16", precision.detect()).precision == "mixed_bfloat16":
        assert models.model_precision(model) == "mixed_bfloat16"
    onnx_export.export_onnx(model, tmp_path / "model.onnx")
    runner = onnx_export.OnnxModel(tmp_path / "model.onnx")
    batch = np.random.default_rng(3).random((2, 24, 40, config.input_channels)).astype(np.float32)
    np.testing.assert_allclose(runner(batch), model(batch), atol=2**-7)


def functional(*body, inputs=None):
    if inputs is None:
        inputs = keras.Input(shape=(None, None, 4), name="x")
    x = inputs
    for layer in body:
        x = layer(x)
    return keras.Model(inputs, x)


def shared_layer_model():
    inputs = keras.Input(shape=(None, None, 4), name="x")
    conv = layers.Conv2D(4, 3, padding="same", name="bad")
    return keras.Model(inputs, conv(conv(inputs)))


def concatenate_on_width():
    inputs = keras.Input(shape=(None, None, 4), name="x")
    return keras.Model(inputs, layers.Concatenate(axis=2, name="bad")([inputs, inputs]))


def two_outputs():
    inputs = keras.Input(shape=(None, None, 4), name="x")
    return keras.Model(inputs, [layers.ReLU(name="bad")(inputs), inputs])


UNTRANSLATED = {
    "conv-dilation": lambda: functional(
        layers.Conv2D(4, 3, padding="same", dilation_rate=2, name="bad")
    ),
    "conv-groups": lambda: functional(layers.Conv2D(4, 3, padding="same", groups=2, name="bad")),
    "conv-transpose-same": lambda: functional(
        layers.Conv2DTranspose(4, 2, strides=2, padding="same", name="bad")
    ),
    "conv-transpose-output-padding": lambda: functional(
        layers.Conv2DTranspose(4, 3, strides=2, output_padding=1, name="bad")
    ),
    "conv-transpose-kernel-below-stride": lambda: functional(
        layers.Conv2DTranspose(4, 1, strides=2, name="bad")
    ),
    "conv-transpose-activation": lambda: functional(
        layers.Conv2DTranspose(4, 2, strides=2, activation="relu", name="bad")
    ),
    "conv-dilated-transpose": lambda: functional(
        layers.Conv2DTranspose(4, 2, dilation_rate=2, name="bad")
    ),
    "conv-activation": lambda: functional(
        layers.Conv2D(4, 3, padding="same", activation="tanh", name="bad")
    ),
    "pool-same": lambda: functional(layers.MaxPooling2D(2, padding="same", name="bad")),
    "upsampling-bilinear": lambda: functional(
        layers.UpSampling2D(2, interpolation="bilinear", name="bad")
    ),
    "batch-norm-no-center": lambda: functional(
        layers.BatchNormalization(center=False, name="bad")
    ),
    "batch-norm-axis": lambda: functional(
        layers.BatchNormalization(axis=1, name="bad"), inputs=keras.Input(shape=(8, 8, 4))
    ),
    "unknown-layer": lambda: functional(layers.Dense(4, name="bad")),
    "activation": lambda: functional(layers.Activation("elu", name="bad")),
    "shared-layer": shared_layer_model,
    "concatenate-axis": concatenate_on_width,
}


@pytest.mark.parametrize("build", UNTRANSLATED.values(), ids=UNTRANSLATED.keys())
def test_onnx_export_refuses_what_it_does_not_translate(build, tmp_path):
    from denoiselab import onnx_export

    with pytest.raises(ValueError, match="'bad'") as error:
        onnx_export.export_onnx(build(), tmp_path / "model.onnx")
    assert "\n" not in str(error.value)
    assert not (tmp_path / "model.onnx").exists()


def test_onnx_export_refuses_several_outputs(tmp_path):
    from denoiselab import onnx_export

    with pytest.raises(ValueError, match="2 outputs"):
        onnx_export.export_onnx(two_outputs(), tmp_path / "model.onnx")


def test_onnx_export_translates_valid_padding_and_strides(tmp_path):
    from denoiselab import onnx_export

    model = functional(
        layers.Conv2D(4, 3, padding="valid", name="valid"),
        layers.Conv2D(4, 3, strides=2, padding="same", activation="relu", name="strided"),
        layers.Conv2DTranspose(4, 3, strides=2, name="up"),
    )
    onnx_export.export_onnx(model, tmp_path / "model.onnx")
    batch = np.random.default_rng(6).random((2, 15, 17, 4)).astype(np.float32)
    output = onnx_export.OnnxModel(tmp_path / "model.onnx")(batch)
    np.testing.assert_allclose(output, model(batch), atol=1e-5)
