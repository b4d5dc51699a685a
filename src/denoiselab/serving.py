"""The registered model as MLflow serves it: a pyfunc around a saved model folder.

It runs the folder's ``model.onnx`` through the very functions ``denoiselab denoise`` uses
(the same loader, padding, tiling, cropping and clipping), so ``mlflow models serve`` answers
with what the evaluate stage scored, for an image of any size.
"""

from __future__ import annotations

import mlflow.pyfunc
import numpy as np

from denoiselab import model_store

# The signature's one input tensor; MLflow hands a named tensor over as a dict.
INPUT_NAME = "noisy"


class OnnxDenoiserModel(mlflow.pyfunc.PythonModel):
    """Takes an NHWC float32 batch in [0, 1] of any height and width; returns it denoised."""

    def load_context(self, context) -> None:
        self.denoiser = model_store.load_folder(context.artifacts[model_store.PYFUNC_ARTIFACT])

    def predict(self, context, model_input, params=None) -> np.ndarray:
        from denoiselab import denoise

        if isinstance(model_input, dict):
            model_input = model_input[INPUT_NAME]
        batch = np.asarray(model_input, np.float32)
        if not len(batch):
            return batch
        return np.stack([denoise.denoise_values(self.denoiser, image) for image in batch])
