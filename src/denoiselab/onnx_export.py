"""ONNX export of the project's Keras models, and a fast runner that needs no TensorFlow.

Importing TensorFlow takes seconds, longer than denoising a megapixel; ``denoiselab denoise``
therefore runs a model folder's ``model.onnx`` with onnxruntime when it is there. The export
walks the functional graph layer by layer (convolutions, ReLU, batch normalisation, pooling,
upsampling, transpose convolutions, concatenation, subtraction, the image planes of an input
with a noise level map), so the ONNX graph computes
exactly what the Keras model computes, in float32, for any image size (NHWC in and out).
It translates only the layer options it knows and refuses, naming the layer, any other, so an
export never silently computes something else.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from denoiselab.errors import UserError

ONNX_FILE = "model.onnx"
OPSET = 17
# onnxruntime 1.30 reads IR versions up to 13; onnx 1.23 would write 14 by default.
IR_VERSION = 10
# Keras's Conv2D padding -> ONNX Conv auto_pad; SAME_UPPER pads as "same" does, the odd pixel
# after.
CONV_PADDING = {"same": "SAME_UPPER", "valid": "VALID"}


def _inputs_of(layer) -> list[str]:
    node = layer._inbound_nodes[0]
    return [tensor._keras_history.operation.name for tensor in node.input_tensors]


def _refuse(layer, what: str) -> None:
    raise UserError(
        f"ONNX export: layer {layer.name!r} ({type(layer).__name__}) has {what}, which the "
        "exporter does not translate"
    )


def check_translatable(layer) -> None:
    """Raises ValueError naming ``layer`` if it has an option the exporter does not translate.

    Options that only shape training (initializers, regularizers, constraints, momentum) do
    not change what a trained layer computes and are not checked.
    """
    from keras import layers

    if len(layer._inbound_nodes) > 1:
        _refuse(layer, "several calls (a shared layer)")
    if getattr(layer, "quantization_mode", None):
        _refuse(layer, f"quantization {layer.quantization_mode!r}")
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        _refuse(layer, f"data_format {layer.data_format!r}")
    if isinstance(layer, (layers.Conv2D, layers.Conv2DTranspose)):
        if tuple(layer.dilation_rate) != (1, 1):
            _refuse(layer, f"dilation_rate {tuple(layer.dilation_rate)}")
        if getattr(layer, "groups", 1) != 1:
            _refuse(layer, f"groups {layer.groups}")
    if isinstance(layer, layers.Conv2DTranspose):
        # Keras's "valid" output size, (in - 1) * stride + kernel when the kernel is no
        # smaller than the stride, is ONNX ConvTranspose's without padding.
        if layer.padding != "valid":
            _refuse(layer, f"padding {layer.padding!r} (only 'valid' is translated)")
        if layer.output_padding is not None:
            _refuse(layer, f"output_padding {layer.output_padding}")
        if any(k < s for k, s in zip(layer.kernel_size, layer.strides, strict=True)):
            _refuse(layer, f"kernel_size {layer.kernel_size} smaller than strides {layer.strides}")
        if layer.activation.__name__ != "linear":
            _refuse(layer, f"activation {layer.activation.__name__!r}")
    elif isinstance(layer, layers.Conv2D) and layer.padding not in CONV_PADDING:
        _refuse(layer, f"padding {layer.padding!r}")
    if isinstance(layer, layers.BatchNormalization):
        if layer.axis not in (-1, 3, [-1], [3]):
            _refuse(layer, f"axis {layer.axis} (only the channel axis is translated)")
        if not (layer.center and layer.scale):
            _refuse(layer, "center or scale off")
    if isinstance(layer, layers.MaxPooling2D) and layer.padding != "valid":
        _refuse(layer, f"padding {layer.padding!r} (only 'valid' is translated)")
    if isinstance(layer, layers.UpSampling2D) and layer.interpolation != "nearest":
        _refuse(layer, f"interpolation {layer.interpolation!r} (only 'nearest' is translated)")
    if isinstance(layer, layers.Concatenate) and layer.axis not in (-1, 3):
        _refuse(layer, f"axis {layer.axis} (only the channel axis is translated)")


def export_onnx(model, path: str | Path) -> None:
    """Writes ``model`` (built by denoiselab.models) as an ONNX graph; byte-stable for the same
    weights. Raises ValueError for a layer, or a layer option, the exporter does not know."""
    import onnx
    from keras import layers
    from onnx import TensorProto, helper, numpy_helper

    from denoiselab.network_layers import NoisyPlanes

    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise UserError(
            f"ONNX export: model {model.name!r} has {len(model.inputs)} inputs and "
            f"{len(model.outputs)} outputs; the exporter translates one of each"
        )
    nodes, initializers = [], []

    def constant(name: str, array: np.ndarray, dtype=np.float32) -> str:
        initializers.append(numpy_helper.from_array(np.asarray(array, dtype), name))
        return name

    input_name = model.layers[0].name
    nodes.append(helper.make_node("Transpose", ["input_nhwc"], [input_name], perm=[0, 3, 1, 2]))
    for layer in model.layers[1:]:
        check_translatable(layer)
        sources = _inputs_of(layer)
        name = layer.name
        if isinstance(layer, (layers.Conv2D, layers.Conv2DTranspose)):
            # Keras keeps (h, w, a, b) kernels, ONNX (b, a, h, w): for a convolution a, b are
            # in, out channels; for a transpose convolution out, in. One transpose serves both.
            kernel = layer.kernel.numpy()
            inputs = [sources[0], constant(f"{name}/W", kernel.transpose(3, 2, 0, 1))]
            if layer.use_bias:
                inputs.append(constant(f"{name}/B", layer.bias.numpy()))
        if isinstance(layer, layers.Conv2DTranspose):
            nodes.append(
                helper.make_node(
                    "ConvTranspose",
                    inputs,
                    [name],
                    strides=list(layer.strides),
                    kernel_shape=list(kernel.shape[:2]),
                )
            )
        elif isinstance(layer, layers.Conv2D):
            activation = layer.activation.__name__
            output = name if activation == "linear" else f"{name}/pre"
            nodes.append(
                helper.make_node(
                    "Conv",
                    inputs,
                    [output],
                    kernel_shape=list(kernel.shape[:2]),
                    auto_pad=CONV_PADDING[layer.padding],
                    strides=list(layer.strides),
                )
            )
            if activation != "linear":
                nodes.append(helper.make_node(_activation(activation, name), [output], [name]))
        elif isinstance(layer, layers.Activation):
            op = _activation(layer.activation.__name__, name)
            nodes.append(helper.make_node(op, sources, [name]))
        elif isinstance(layer, layers.BatchNormalization):
            params = [
                constant(f"{name}/{key}", value.numpy())
                for key, value in (
                    ("scale", layer.gamma),
                    ("bias", layer.beta),
                    ("mean", layer.moving_mean),
                    ("var", layer.moving_variance),
                )
            ]
            nodes.append(
                helper.make_node(
                    "BatchNormalization", [sources[0], *params], [name], epsilon=layer.epsilon
                )
            )
        elif isinstance(layer, layers.MaxPooling2D):
            nodes.append(
                helper.make_node(
                    "MaxPool",
                    sources,
                    [name],
                    kernel_shape=list(layer.pool_size),
                    strides=list(layer.strides),
                )
            )
        elif isinstance(layer, layers.UpSampling2D):
            scales = constant(f"{name}/scales", np.array([1, 1, *layer.size], np.float32))
            nodes.append(
                helper.make_node("Resize", [sources[0], "", scales], [name], mode="nearest")
            )
        elif isinstance(layer, layers.Concatenate):
            nodes.append(helper.make_node("Concat", sources, [name], axis=1))
        elif isinstance(layer, layers.Subtract):
            nodes.append(helper.make_node("Sub", sources, [name]))
        elif isinstance(layer, NoisyPlanes):
            # The first channels, along ONNX's channel axis (1).
            bounds = [
                constant(f"{name}/{key}", [value], np.int64)
                for key, value in (("starts", 0), ("ends", layer.channels), ("axes", 1))
            ]
            nodes.append(helper.make_node("Slice", [sources[0], *bounds], [name]))
        else:
            raise UserError(
                f"ONNX export: layer {name!r} ({type(layer).__name__}) is not supported"
            )
    output_name = model.layers[-1].name
    nodes.append(helper.make_node("Transpose", [output_name], ["output_nhwc"], perm=[0, 2, 3, 1]))
    in_channels, out_channels = model.input_shape[-1], model.output_shape[-1]
    graph = helper.make_graph(
        nodes,
        model.name,
        [
            helper.make_tensor_value_info(
                "input_nhwc", TensorProto.FLOAT, ["n", "h", "w", in_channels]
            )
        ],
        [
            helper.make_tensor_value_info(
                "output_nhwc", TensorProto.FLOAT, ["n", "h", "w", out_channels]
            )
        ],
        initializer=initializers,
    )
    onnx_model = helper.make_model(
        graph,
        producer_name="denoiselab",
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
    )
    onnx.checker.check_model(onnx_model)
    from denoiselab import files

    with files.atomic_path(path) as temporary:
        temporary.write_bytes(onnx_model.SerializeToString())


def _activation(name: str, layer_name: str) -> str:
    ops = {"relu": "Relu", "sigmoid": "Sigmoid"}
    if name not in ops:
        raise UserError(f"ONNX export: activation {name!r} of {layer_name!r} is not supported")
    return ops[name]


class OnnxModel:
    """Callable like a Keras model on NHWC float32 batches, backed by onnxruntime."""

    def __init__(self, path: str | Path, threads: int | None = None):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
        shape = self.session.get_inputs()[0].shape
        self.channels = int(shape[-1])

    def __call__(self, batch, training: bool = False) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        return self.session.run(["output_nhwc"], {"input_nhwc": batch})[0]
