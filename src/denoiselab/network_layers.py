"""Keras layers of the project's own that its networks use, kept apart from the builders so
that the ONNX exporter can translate them without importing the builders."""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="denoiselab")
class NoisyPlanes(keras.layers.Layer):
    """The first ``channels`` channels of the input: the noisy image of an input that also
    carries a noise level map (``noise_map``), which the residual output subtracts from."""

    def __init__(self, channels: int, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels

    def call(self, inputs):
        return inputs[..., : self.channels]

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.channels)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels}
