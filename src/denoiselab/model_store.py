"""Finding and loading models: what ``--model`` names (a registry alias, a trained model's
folder, an MLflow model URI or a path) and how it is loaded, with onnxruntime when it can be,
so that denoising needs neither MLflow nor TensorFlow."""

from __future__ import annotations

import dataclasses
import re
import tempfile
from pathlib import Path
from typing import Any

from denoiselab import files, onnx_export, registry
from denoiselab.errors import UserError

# The models `dvc repro` trains, each in models/<name> and registered under its name, and the
# dataset each trains on: gray (1 channel) or colour (3 channels).
MODEL_MODES = {"cae": "gray", "unet": "gray", "unet_tuned": "gray", "unet_rgb": "colour"}
TRAINED_MODELS = tuple(MODEL_MODES)
GRAY_MODELS = tuple(name for name, mode in MODEL_MODES.items() if mode == "gray")
DEFAULT_MODEL = registry.CHAMPION
# The folder `dvc repro` wrote that stands in for each champion alias while the registry has
# none, and the words a user reads about it.
CHAMPION_FALLBACKS = {registry.CHAMPION: "unet_tuned", registry.CHAMPION_RGB: "unet_rgb"}
FALLBACK_DESCRIPTIONS = {
    registry.CHAMPION: "the tuned U-Net",
    registry.CHAMPION_RGB: "the colour U-Net",
}
FALLBACK_MODEL = CHAMPION_FALLBACKS[registry.CHAMPION]
FALLBACK_RGB_MODEL = CHAMPION_FALLBACKS[registry.CHAMPION_RGB]
ALIASES = (*registry.CHAMPIONS.values(), *TRAINED_MODELS)
MODELS_FOLDER = "models"
# The name models.py writes; repeated here because importing models.py imports Keras.
CONFIG_FILE = "config.json"
# The name under which a registered model keeps its model folder among its pyfunc artifacts.
PYFUNC_ARTIFACT = "model_dir"
_URI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/")


@dataclasses.dataclass(frozen=True)
class ModelSource:
    """Where a model comes from: an MLflow model URI or a local path, and a note for stderr."""

    location: str
    is_mlflow: bool
    note: str | None = None


@dataclasses.dataclass(frozen=True)
class Denoiser:
    """A loaded model (onnxruntime or Keras, called on NHWC batches), its number of 2x
    poolings and its channels (1 or 3)."""

    model: Any
    depth: int
    channels: int
    location: str


def _local_folder_for_run(root: Path, run_id: str) -> Path | None:
    """The model folder `dvc repro` wrote for an MLflow run, when it is still in the workspace."""
    for name in TRAINED_MODELS:
        folder = root / MODELS_FOLDER / name
        try:
            if run_id and files.read_json(folder / CONFIG_FILE).get("mlflow_run_id") == run_id:
                return folder
        except ValueError:
            continue
    return None


def locate_model(spec: str, root: Path, aliases: dict[str, str]) -> ModelSource:
    """Resolves ``--model``: champion/champion_rgb/cae/unet/unet_tuned/unet_rgb (registry alias,
    else the model folder ``dvc repro`` wrote under ``root``: models/unet_tuned for champion,
    models/unet_rgb for champion_rgb), an MLflow model URI, or a path to a saved model.
    ``aliases`` maps registry aliases to the run ids of their versions."""
    if spec in ALIASES:
        if spec in aliases:
            # The very model the registry points at, from the workspace when it is there: the
            # same weights, loaded without MLflow or TensorFlow.
            local = _local_folder_for_run(root, aliases[spec])
            if local is not None:
                return ModelSource(str(local), is_mlflow=False)
            return ModelSource(f"models:/{registry.REGISTERED_MODEL}@{spec}", is_mlflow=True)
        folder = _fallback_folder(spec, root)
        if not (folder / CONFIG_FILE).is_file():
            raise UserError(
                f"no {spec!r} model: the MLflow registry has no alias {spec!r} and {folder} "
                f"does not exist; run `dvc repro` or pass --model PATH"
            )
        note = None
        if spec in CHAMPION_FALLBACKS:
            note = (
                f"no {spec} in the MLflow model registry yet; "
                f"using {FALLBACK_DESCRIPTIONS[spec]} from `dvc repro` ({folder})"
            )
        return ModelSource(str(folder), is_mlflow=False, note=note)
    if _URI_SCHEME.match(spec):
        return ModelSource(spec, is_mlflow=True)
    path = Path(spec)
    if (path / "MLmodel").is_file():
        return ModelSource(str(path), is_mlflow=True)
    if path.exists():
        return ModelSource(str(path), is_mlflow=False)
    raise UserError(
        f"--model {spec!r}: not {', '.join(ALIASES)}, an existing model path or an "
        f"MLflow model URI (models:/NAME@ALIAS, runs:/RUN_ID/PATH)"
    )


def _fallback_folder(spec: str, root: Path) -> Path:
    """The model folder `dvc repro` writes for an alias name in ``ALIASES``."""
    return root / MODELS_FOLDER / CHAMPION_FALLBACKS.get(spec, spec)


def has_model(spec: str, root: Path, aliases: dict[str, str]) -> bool:
    """Whether :func:`locate_model` finds an alias name in ``ALIASES``: the registry has the
    alias, or the model folder that stands in for it exists."""
    return spec in aliases or (_fallback_folder(spec, root) / CONFIG_FILE).is_file()


def runs_without_keras(source: ModelSource) -> bool:
    """Whether the model runs without TensorFlow (seconds saved on every call): a folder with
    an ONNX export, or an MLflow model, which holds such a folder."""
    if source.is_mlflow:
        return _has_onnxruntime()
    return _is_onnx_folder(Path(source.location))


def _has_onnxruntime() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def _is_onnx_folder(folder: Path) -> bool:
    return (
        (folder / onnx_export.ONNX_FILE).is_file()
        and (folder / CONFIG_FILE).is_file()
        and _has_onnxruntime()
    )


def load_denoiser(source: ModelSource) -> Denoiser:
    """Loads the model: an MLflow model through the model folder it holds, a folder with an
    ONNX export through onnxruntime, anything else with Keras in safe mode."""
    if source.is_mlflow:
        return _load_mlflow_model(source.location)
    return load_folder(source.location)


def load_folder(location: str | Path) -> Denoiser:
    """Loads a saved model folder (ONNX when it has one) or a .keras file."""
    folder = Path(location)
    if _is_onnx_folder(folder):
        info = files.read_json(folder / CONFIG_FILE)
        model = onnx_export.OnnxModel(folder / onnx_export.ONNX_FILE)
        depth, channels = int(info["model_config"]["depth"]), model.channels
        return Denoiser(model, depth, channels, str(location))
    from denoiselab import models

    model, depth = models.load_any_model(folder)
    channels = model.input_shape[-1]
    if channels not in (1, 3):
        raise UserError(f"{location}: model takes {channels} channels; expected 1 or 3")
    return Denoiser(model, depth, channels, str(location))


def _load_mlflow_model(uri: str) -> Denoiser:
    """Loads the model folder an MLflow pyfunc model holds (see :mod:`denoiselab.serving`)."""
    from denoiselab import tracking

    with tempfile.TemporaryDirectory(prefix="denoiselab-model-") as scratch:
        path = Path(uri)
        if not (path / "MLmodel").is_file():
            path = tracking.download_model(uri, scratch)
        folder = _pyfunc_folder(path)
        if folder is None or not (folder / CONFIG_FILE).is_file():
            raise UserError(
                f"{uri}: not a denoiselab model (no model folder among its artifacts); "
                f"register it again with `dvc repro`"
            )
        denoiser = load_folder(folder)
    # onnxruntime and Keras have read the files; the temporary copy can go.
    return dataclasses.replace(denoiser, location=uri)


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


def default_evaluation_models(root: Path, aliases: dict[str, str]) -> list[str]:
    """The champion, and the colour champion too, when the registry has them; else each of
    the models `dvc repro` trains (cae, unet, unet_tuned, unet_rgb) that exists."""
    if DEFAULT_MODEL in aliases:
        return [alias for alias in registry.CHAMPIONS.values() if alias in aliases]
    found = [name for name in TRAINED_MODELS if has_model(name, root, aliases)]
    if not found:
        raise UserError(
            "no models to evaluate: no champion in the MLflow registry and no folder "
            f"{root / MODELS_FOLDER}/{{{','.join(TRAINED_MODELS)}}}; run `dvc repro` or pass "
            "--models"
        )
    return found
