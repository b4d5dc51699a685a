"""Keras model builders and the registry that maps a params ``model`` name to its builder.

Every model takes ``keras.Input(shape=(None, None, channels))`` so one model serves any image
size whose sides divide by ``2**depth`` (inference pads and crops back for other sizes).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import keras
from keras import layers

from denoiselab import files, precision
from denoiselab.config import ModelConfig, parse
from denoiselab.errors import UserError
from denoiselab.network_layers import NoisyPlanes

WEIGHTS_FILE = "model.weights.h5"
# Keras writes weights only to a name with this ending.
WEIGHTS_SUFFIX = ".weights.h5"
CONFIG_FILE = "config.json"


def _conv(x, filters: int, name: str, batch_norm: bool, bias: bool = True):
    """3x3 convolution, optional batch normalisation, ReLU; without ``bias`` no additive
    constant anywhere, so the layer is positively homogeneous (scaling its input scales its
    output)."""
    use_bias = bias and not batch_norm
    x = layers.Conv2D(filters, 3, padding="same", use_bias=use_bias, name=f"{name}_conv")(x)
    if batch_norm:
        x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


def build_cae(config: ModelConfig) -> keras.Model:
    """The original notebook's baseline: conv + max-pooling encoder, conv + upsampling
    decoder, sigmoid."""
    inputs = keras.Input(shape=(None, None, config.channels), name="noisy")
    x = inputs
    widths = [config.base_filters * 2**level for level in range(config.depth)]
    for level, width in enumerate(widths):
        x = _conv(x, width, f"enc{level}", config.batch_norm, config.bias)
        x = layers.MaxPooling2D(2, name=f"enc{level}_pool")(x)
    x = _conv(x, widths[-1], "bottleneck", config.batch_norm, config.bias)
    for level, width in reversed(list(enumerate(widths))):
        x = layers.UpSampling2D(2, name=f"dec{level}_up")(x)
        x = _conv(x, width, f"dec{level}", config.batch_norm, config.bias)
    outputs = layers.Conv2D(
        config.channels, 3, padding="same", activation="sigmoid", name="denoised", dtype="float32"
    )(x)
    return keras.Model(inputs, outputs, name="cae")


def build_unet(config: ModelConfig) -> keras.Model:
    """U-Net: the CAE's contracting path plus skip connections concatenated into the decoder.

    With ``residual`` the network predicts the noise and subtracts it from its input
    (residual learning); otherwise a sigmoid maps straight to the clean image. With
    ``noise_map`` the input has one more channel, the noise level (FFDNet), which every layer
    sees and the output drops.
    """
    inputs = keras.Input(shape=(None, None, config.input_channels), name="noisy")
    x = inputs
    noisy = NoisyPlanes(config.channels, name="image")(inputs) if config.noise_map else inputs
    if config.pixel_unshuffle:
        x = layers.Conv2D(
            config.base_filters, 2, strides=2, use_bias=config.bias, name="unshuffle"
        )(x)
    widths = [config.base_filters * 2**level for level in range(config.depth)]
    skips = []
    for level, width in enumerate(widths):
        x = _conv(x, width, f"enc{level}a", config.batch_norm, config.bias)
        x = _conv(x, width, f"enc{level}b", config.batch_norm, config.bias)
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"enc{level}_pool")(x)
    bottleneck_width = config.base_filters * 2**config.depth
    x = _conv(x, bottleneck_width, "bottleneck_a", config.batch_norm, config.bias)
    x = _conv(x, bottleneck_width, "bottleneck_b", config.batch_norm, config.bias)
    for level, width in reversed(list(enumerate(widths))):
        x = layers.Conv2DTranspose(
            width, 2, strides=2, use_bias=config.bias, name=f"dec{level}_up"
        )(x)
        x = layers.Concatenate(name=f"dec{level}_skip")([x, skips[level]])
        x = _conv(x, width, f"dec{level}a", config.batch_norm, config.bias)
        x = _conv(x, width, f"dec{level}b", config.batch_norm, config.bias)
    if config.pixel_unshuffle:
        # Back to full resolution: a 1x1 convolution to 2x2 pixels per position (pixel-shuffle).
        x = layers.Conv2DTranspose(
            config.channels,
            2,
            strides=2,
            use_bias=config.bias,
            name="noise" if config.residual else "shuffle",
            dtype="float32",
        )(x)
        if config.residual:
            outputs = layers.Subtract(name="denoised", dtype="float32")([noisy, x])
        else:
            outputs = layers.Activation("sigmoid", name="denoised", dtype="float32")(x)
    elif config.residual:
        noise = layers.Conv2D(
            config.channels, 1, use_bias=config.bias, name="noise", dtype="float32"
        )(x)
        outputs = layers.Subtract(name="denoised", dtype="float32")([noisy, noise])
    else:
        outputs = layers.Conv2D(
            config.channels,
            1,
            activation="sigmoid",
            use_bias=config.bias,
            name="denoised",
            dtype="float32",
        )(x)
    return keras.Model(inputs, outputs, name="unet")


MODEL_BUILDERS: dict[str, Callable[[ModelConfig], keras.Model]] = {
    "cae": build_cae,
    "unet": build_unet,
}


def build_model(config: ModelConfig) -> keras.Model:
    """Builds the registered model for ``config`` under its precision policy.

    ``mixed_bfloat16`` computes convolutions in bfloat16 (float32 weights and output), faster
    where the hardware computes bfloat16 natively; ``auto`` picks it only there (see
    :mod:`denoiselab.precision`, which also falls back to float32 where bfloat16 cannot run).
    The global policy is restored afterwards.
    """
    try:
        builder = MODEL_BUILDERS[config.model]
    except KeyError:
        raise UserError(
            f"unknown model {config.model!r}; choose one of {sorted(MODEL_BUILDERS)}"
        ) from None
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision.resolve(config.precision).precision)
    try:
        return builder(config)
    finally:
        keras.config.set_dtype_policy(previous)


def training_flops_per_patch(model: keras.Model, channels: int, crop_size: int) -> float:
    """FLOPs of one training step on one ``crop_size`` patch: about three forward passes
    (forward, and the gradients with respect to activations and to weights)."""
    return 3 * conv_flops_per_pixel(model, channels) * crop_size**2


def conv_flops_per_pixel(model: keras.Model, channels: int, size: int = 64) -> float:
    """Forward FLOPs per input pixel, counted from the conv layers.

    A convolution costs 2 x output pixels x kernel area x in x out channels; a stride-2
    transpose convolution touches each output pixel with a quarter of its kernel.
    """
    import numpy as np

    convs = [
        layer
        for layer in model.layers
        if isinstance(layer, (layers.Conv2D, layers.Conv2DTranspose))
    ]
    probe = keras.Model(model.input, [layer.output for layer in convs])
    outputs = probe(np.zeros((1, size, size, model.input_shape[-1]), "float32"))
    total = 0.0
    for layer, output in zip(convs, outputs, strict=True):
        kernel_height, kernel_width, *_ = layer.kernel.shape
        in_channels = layer.input.shape[-1]
        out_channels = layer.filters
        output_pixels = output.shape[1] * output.shape[2]
        taps = kernel_height * kernel_width
        if isinstance(layer, layers.Conv2DTranspose):
            taps /= layer.strides[0] * layer.strides[1]
        total += 2 * output_pixels * taps * in_channels * out_channels
    return total / (size * size)


def model_precision(model: keras.Model) -> str:
    """The precision ``model`` computes in: mixed_bfloat16 if any layer computes in bfloat16."""
    bfloat16 = any(layer.compute_dtype == "bfloat16" for layer in model.layers)
    return precision.MIXED_BFLOAT16 if bfloat16 else precision.FLOAT32


def save_model_dir(
    model: keras.Model, config: ModelConfig, folder: str | Path, extra: dict
) -> None:
    """Writes byte-stable weights, the same network as ONNX (for fast inference without
    TensorFlow) and, last, ``config.json`` with everything needed to rebuild it, its
    precision being the one ``model`` computes in (never ``auto``)."""
    from denoiselab import onnx_export

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with files.atomic_path(folder / WEIGHTS_FILE, suffix=WEIGHTS_SUFFIX) as temporary:
        model.save_weights(temporary)
    onnx_export.export_onnx(model, folder / onnx_export.ONNX_FILE)
    trained = config.model_copy(update={"precision": model_precision(model)})
    files.write_json(folder / CONFIG_FILE, {"model_config": trained.model_dump(), **extra})


def load_model_dir(folder: str | Path) -> tuple[keras.Model, dict]:
    """Rebuilds a model saved by :func:`save_model_dir` for inference; returns it and its
    config.json.

    A model trained in mixed_bfloat16 runs in float32 where the hardware lacks native
    bfloat16 (see :func:`denoiselab.precision.for_inference`): the same float32 weights,
    slightly more exact, and it runs on CPUs whose oneDNN has no bfloat16 convolutions.
    """
    folder = Path(folder)
    info = files.read_json(folder / CONFIG_FILE)
    if "model_config" not in info:
        raise UserError(f"{folder / CONFIG_FILE}: not a denoiselab model config (no model_config)")
    config = parse(ModelConfig, info["model_config"], str(folder / CONFIG_FILE))
    model = build_model(
        config.model_copy(update={"precision": precision.for_inference(config.precision)})
    )
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise UserError(f"{weights}: weights file not found")
    model.load_weights(weights)
    return model, info


def takes_noise_map(model: keras.Model) -> bool:
    """Whether ``model``'s input carries a noise level map after the image's channels."""
    return any(isinstance(layer, NoisyPlanes) for layer in model.layers)


def load_any_model(path: str | Path) -> tuple[keras.Model, int]:
    """Loads a model folder or a ``.keras`` file (safe mode); returns it and how many times it
    halves the image (its input's sides must divide by 2 to that power)."""
    path = Path(path)
    if path.is_dir() and (path / CONFIG_FILE).is_file():
        model, info = load_model_dir(path)
        return model, infer_depth(model)
    if path.suffix == ".keras" and path.is_file():
        model = keras.models.load_model(path, safe_mode=True, compile=False)
        if precision.for_inference(model_precision(model)) == precision.FLOAT32:
            model = as_float32(model)
        return model, infer_depth(model)
    raise UserError(f"{path}: not a model folder (config.json + weights) or a .keras file")


def as_float32(model: keras.Model) -> keras.Model:
    """A copy of a functional ``model`` with every layer in float32 and the same weights."""
    if model_precision(model) == precision.FLOAT32:
        return model

    def float32_layer(layer):
        return layer.__class__.from_config({**layer.get_config(), "dtype": "float32"})

    copy = keras.models.clone_model(model, clone_function=float32_layer)
    copy.set_weights(model.get_weights())
    return copy


def infer_depth(model: keras.Model) -> int:
    """How many times a model halves the image (2x poolings and stride-2 convolutions), so
    inference can pad to a multiple of 2 to that power."""
    return sum(
        isinstance(layer, layers.MaxPooling2D)
        or (type(layer) is layers.Conv2D and tuple(layer.strides) == (2, 2))
        for layer in model.layers
    )
