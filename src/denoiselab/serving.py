"""A trained model folder as an MLflow model: packaging it as a pyfunc, logging it into the
model's own training run, and unpacking it again.

The pyfunc runs the folder's ``model.onnx`` through the very functions ``denoiselab denoise``
uses (the same loader, padding, tiling, cropping and clipping, colour transform and
self-ensemble, with the denoise settings it was logged with), so ``mlflow models serve``
answers with what the evaluate stage scored, for an image of any size.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import tempfile
import warnings
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np

from denoiselab import denoise, files, model_store, tracking
from denoiselab.errors import UserError

# The signature's one input tensor; MLflow hands a named tensor over as a dict.
INPUT_NAME = "noisy"
# The name under which a logged model keeps its model folder among its pyfunc artifacts.
PYFUNC_ARTIFACT = "model_dir"
# Tags on a training run once its model is logged: the digest of the folder and denoise
# settings logged and the logged model's URI, so that logging the same again reuses it.
MODEL_DIGEST_TAG = "denoiselab.model_sha256"
MODEL_URI_TAG = "denoiselab.model_uri"


class OnnxDenoiserModel(mlflow.pyfunc.PythonModel):
    """Takes an NHWC float32 batch in [0, 1] of any height and width; returns it denoised."""

    def load_context(self, context) -> None:
        self.denoiser = model_store.load_folder(context.artifacts[PYFUNC_ARTIFACT])
        self.settings = denoise.Settings.from_mapping(context.model_config or {})

    def predict(self, context, model_input, params=None) -> np.ndarray:
        if isinstance(model_input, dict):
            model_input = model_input[INPUT_NAME]
        batch = np.asarray(model_input, np.float32)
        if not len(batch):
            return batch
        return np.stack(
            [
                denoise.denoise_values(self.denoiser, image, settings=self.settings)
                for image in batch
            ]
        )


def serving_requirements() -> list[str]:
    """The pinned packages a logged model needs, read from this environment (MLflow adds
    itself; the denoiselab package itself must be installed where the model is served).
    Given explicitly, so MLflow does not load the model in a subprocess to infer them, which
    took about 7 s per model here."""
    from importlib import metadata

    pins = []
    for package in ("onnxruntime", "numpy", "scikit-image", "cloudpickle"):
        try:
            pins.append(f"{package}=={metadata.version(package)}")
        except metadata.PackageNotFoundError:
            continue
    return pins


def log_denoiser_model(
    model_dir: str | Path,
    channels: int,
    run_id: str | None = None,
    name: str = "model",
    settings: denoise.Settings = denoise.DEFAULT_SETTINGS,
) -> Any:
    """Logs a saved model folder (model.onnx, config.json, weights) as an MLflow pyfunc into run
    ``run_id`` (else the active run), which stays as it was: finished or running.

    What MLflow serves is what the evaluate stage scored: float32, padded, tiled, cropped and
    clipped as ``denoiselab denoise`` does, with ``settings`` (the pyfunc's model config), for
    images of any size (signature: NHWC float32, any batch and size). Returns MLflow's
    ModelInfo.
    """
    from mlflow.models import Model, ModelSignature
    from mlflow.types import Schema, TensorSpec

    if run_id is not None:
        # The logged model belongs to the run's experiment, which need not be the active one.
        experiment_id = mlflow.MlflowClient().get_run(run_id).info.experiment_id
        mlflow.set_experiment(experiment_id=experiment_id)
    spec = Schema([TensorSpec(np.dtype("float32"), (-1, -1, -1, channels), INPUT_NAME)])
    output = Schema([TensorSpec(np.dtype("float32"), (-1, -1, -1, channels))])
    pyfunc_log = logging.getLogger("mlflow.pyfunc")
    level = pyfunc_log.level
    with warnings.catch_warnings():
        # MLflow suggests an input example; the explicit tensor signature already says what
        # the model takes, and log_model with an input example fails here. Its note on pickled
        # models does not apply either: the class pickles as a reference to the installed
        # denoiselab.serving module.
        warnings.filterwarnings("ignore", ".*input_example", UserWarning)
        pyfunc_log.setLevel(logging.ERROR)
        try:
            # Model.log, which mlflow.pyfunc.log_model calls, is the one that takes a run id:
            # the model joins a finished run without reopening it.
            return Model.log(
                artifact_path=None,
                name=name,
                flavor=mlflow.pyfunc,
                python_model=OnnxDenoiserModel(),
                artifacts={PYFUNC_ARTIFACT: str(model_dir)},
                signature=ModelSignature(inputs=spec, outputs=output),
                model_config=settings.as_dict(),
                pip_requirements=serving_requirements(),
                run_id=run_id,
            )
        finally:
            pyfunc_log.setLevel(level)


def folder_digest(folder: str | Path) -> str:
    """A SHA-256 of a folder's files, their relative paths and contents."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(item for item in folder.rglob("*") if item.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        digest.update(bytes.fromhex(files.sha256_of_file(path)))
    return digest.hexdigest()


def model_digest(folder: str | Path, settings: denoise.Settings) -> str:
    """A SHA-256 of a model folder's contents and the settings it denoises with: what one
    logged MLflow model holds."""
    payload = folder_digest(folder) + json.dumps(settings.as_dict(), sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def log_model_folder(
    model_dir: str | Path,
    channels: int,
    run_id: str,
    settings: denoise.Settings = denoise.DEFAULT_SETTINGS,
) -> str:
    """The URI of ``model_dir`` logged with ``settings`` as a pyfunc into its training run
    ``run_id``.

    The model is logged only when the run holds no model of the same folder contents and
    settings yet (its tags say which it holds), so evaluating again never piles up copies.
    """
    digest = model_digest(model_dir, settings)
    tags = tracking.get_tags(run_id)
    if tags.get(MODEL_DIGEST_TAG) == digest and tags.get(MODEL_URI_TAG):
        return tags[MODEL_URI_TAG]
    info = log_denoiser_model(model_dir, channels, run_id=run_id, settings=settings)
    tracking.set_tags({MODEL_DIGEST_TAG: digest, MODEL_URI_TAG: info.model_uri}, run_id=run_id)
    return info.model_uri


def load_logged_model(uri: str) -> model_store.Denoiser:
    """Loads the model folder an MLflow pyfunc model holds: a models:/NAME@ALIAS or
    runs:/RUN_ID/PATH URI, or a downloaded model's folder."""
    with tempfile.TemporaryDirectory(prefix="denoiselab-model-") as scratch:
        path = Path(uri)
        if not (path / "MLmodel").is_file():
            path = _download_model(uri, scratch)
        folder = _pyfunc_folder(path)
        if folder is None or not (folder / model_store.CONFIG_FILE).is_file():
            raise UserError(
                f"{uri}: not a denoiselab model (no model folder among its artifacts); "
                f"register it again with `dvc repro`"
            )
        denoiser = model_store.load_folder(folder)
    # onnxruntime and Keras have read the files; the temporary copy can go.
    return dataclasses.replace(denoiser, location=uri)


def logged_weights_digest(uri: str) -> str | None:
    """The digest of the weights in the model folder an MLflow pyfunc model holds
    (:func:`denoiselab.model_store.weights_digest`); None when it holds none or cannot be
    read (its artifacts gone), so that an old version never stops the evaluate stage."""
    with tempfile.TemporaryDirectory(prefix="denoiselab-model-") as scratch:
        try:
            folder = _pyfunc_folder(_download_model(uri, scratch))
            return None if folder is None else model_store.weights_digest(folder)
        except (UserError, OSError):
            return None


def _download_model(uri: str, destination: str | Path) -> Path:
    """Downloads an MLflow model into ``destination``; returns the local folder holding its
    MLmodel file."""
    tracking.setup_uri()
    try:
        return Path(
            mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(destination))
        )
    except mlflow.exceptions.MlflowException as error:
        raise UserError(f"{uri}: cannot load the MLflow model ({error.message})") from None
    except OSError as error:
        raise UserError(f"{uri}: cannot load the MLflow model ({error})") from None


def _pyfunc_folder(path: Path) -> Path | None:
    """The model folder among a downloaded pyfunc model's artifacts, as its MLmodel file
    records it; None for another kind of MLflow model."""
    import yaml

    try:
        conf = yaml.safe_load((path / "MLmodel").read_text())
        relative = conf["flavors"]["python_function"]["artifacts"][PYFUNC_ARTIFACT]["path"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return None
    return path / relative
