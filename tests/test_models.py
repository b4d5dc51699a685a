import dataclasses

import keras
import numpy as np
import pytest

from denoiselab import models
from denoiselab.config import ModelConfig

CONFIGS = [
    ModelConfig(model="cae", base_filters=4, depth=2, residual=False, channels=1),
    ModelConfig(model="unet", base_filters=4, depth=2, residual=True, channels=1),
    ModelConfig(
        model="unet", base_filters=4, depth=3, residual=False, batch_norm=True, channels=3
    ),
]


@pytest.mark.parametrize(
    "config", CONFIGS, ids=lambda config: f"{config.model}-{config.channels}ch-{config.precision}"
)
def test_output_shape_equals_input_shape_for_any_size(config):
    model = models.build_model(config)
    for size in ((16, 16), (32, 48)):
        batch = np.random.default_rng(0).random((2, *size, config.channels)).astype(np.float32)
        output = model(batch)
        assert output.shape == batch.shape
        assert keras.backend.standardize_dtype(output.dtype) == "float32"


@pytest.mark.parametrize(
    "config", CONFIGS, ids=lambda config: f"{config.model}-{config.channels}ch-{config.precision}"
)
def test_model_saves_and_loads_with_its_config(config, tmp_path):
    model = models.build_model(config)
    batch = np.random.default_rng(1).random((1, 16, 16, config.channels)).astype(np.float32)
    models.save_model_dir(model, config, tmp_path / "model", {"name": "x"})
    loaded, info = models.load_model_dir(tmp_path / "model")
    assert info["name"] == "x"
    assert info["model_config"]["model"] == config.model
    np.testing.assert_allclose(loaded(batch), model(batch), atol=1e-6)
    reloaded, depth = models.load_any_model(tmp_path / "model")
    assert depth == config.depth


def test_weights_file_is_byte_stable(tmp_path):
    config = CONFIGS[1]
    model = models.build_model(config)
    models.save_model_dir(model, config, tmp_path / "a", {})
    models.save_model_dir(model, config, tmp_path / "b", {})
    assert (tmp_path / "a" / models.WEIGHTS_FILE).read_bytes() == (
        tmp_path / "b" / models.WEIGHTS_FILE
    ).read_bytes()


def test_residual_unet_with_zero_noise_head_is_identity():
    model = models.build_model(CONFIGS[1])
    head = model.get_layer("noise")
    head.set_weights([np.zeros_like(weight) for weight in head.get_weights()])
    batch = np.random.default_rng(2).random((1, 16, 16, 1)).astype(np.float32)
    np.testing.assert_allclose(model(batch), batch, atol=1e-6)


def test_unet_has_skip_connections_and_cae_has_none():
    unet = models.build_model(CONFIGS[1])
    cae = models.build_model(CONFIGS[0])
    assert any("skip" in layer.name for layer in unet.layers)
    assert not any("skip" in layer.name for layer in cae.layers)


def test_flops_count_grows_with_width():
    small = models.build_model(ModelConfig(model="unet", base_filters=4, depth=2))
    large = models.build_model(ModelConfig(model="unet", base_filters=8, depth=2))
    ratio = models.conv_flops_per_pixel(large, 1) / models.conv_flops_per_pixel(small, 1)
    assert 3.0 < ratio < 4.1


def test_unknown_model_and_bad_paths(tmp_path):
    with pytest.raises(ValueError, match="unknown model 'resnet'"):
        models.build_model(ModelConfig(model="resnet"))
    with pytest.raises(ValueError, match="not a model folder"):
        models.load_any_model(tmp_path)


@pytest.mark.parametrize(
    "config", CONFIGS, ids=lambda config: f"{config.model}-{config.channels}ch"
)
def test_onnx_export_computes_what_keras_computes(config, tmp_path):
    from denoiselab import onnx_export

    model = models.build_model(dataclasses.replace(config, precision="float32"))
    if config.batch_norm:
        # Non-trivial moving statistics, so the exported normalisation is really exercised.
        for layer in model.layers:
            if "bn" in layer.name:
                layer.moving_mean.assign(np.full(layer.moving_mean.shape, 0.3, np.float32))
                layer.moving_variance.assign(np.full(layer.moving_variance.shape, 2.0, np.float32))
    onnx_export.export_onnx(model, tmp_path / "model.onnx")
    runner = onnx_export.OnnxModel(tmp_path / "model.onnx")
    batch = np.random.default_rng(3).random((2, 24, 40, config.channels)).astype(np.float32)
    np.testing.assert_allclose(runner(batch), model(batch), atol=1e-5)
    onnx_export.export_onnx(model, tmp_path / "again.onnx")
    assert (tmp_path / "model.onnx").read_bytes() == (tmp_path / "again.onnx").read_bytes()
