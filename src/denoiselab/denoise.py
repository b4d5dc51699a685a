"""Denoising with a chosen model: what ``--model`` names, how an image's colour mode and bit
depth map onto the model's channels, and scoring models on clean images per PROTOCOL.md."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from denoiselab import files, inference, metrics, noise, onnx_export, registry, tracking
from denoiselab.errors import UserError

MODEL_NAMES = ("cae", "unet", "unet_tuned")
DEFAULT_MODEL = registry.CHAMPION
FALLBACK_MODEL = "unet_tuned"
ALIASES = (DEFAULT_MODEL, *MODEL_NAMES)
MODELS_FOLDER = "models"
# The name models.py writes; repeated here because importing models.py imports Keras.
CONFIG_FILE = "config.json"
_URI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/")


@dataclasses.dataclass(frozen=True)
class ModelSource:
    """Where a model comes from: an MLflow model URI or a local path, and a note for stderr."""

    location: str
    is_mlflow: bool
    note: str | None = None


@dataclasses.dataclass(frozen=True)
class Denoiser:
    """A loaded Keras model, its number of 2x poolings and its channels (1 or 3)."""

    model: Any
    depth: int
    channels: int
    location: str


def registered_aliases() -> dict[str, str]:
    """Aliases of the registered model in the MLflow store (alias -> run id of the version it
    points at); empty when there is no store or no registered model yet. Never creates a store."""
    uri = tracking.tracking_uri()
    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
        if not path.is_file():
            return {}
        aliases = _sqlite_aliases(path)
        if aliases is not None:
            return aliases
    try:
        tracking.check_store(uri)
    except ConnectionError as error:
        raise UserError(str(error)) from None
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    try:
        found = client.get_registered_model(registry.REGISTERED_MODEL).aliases
        return {
            alias: client.get_model_version(registry.REGISTERED_MODEL, version).run_id or ""
            for alias, version in found.items()
        }
    except mlflow.exceptions.MlflowException:
        return {}


def _sqlite_aliases(path: Path) -> dict[str, str] | None:
    """Reads the aliases straight from MLflow's sqlite tables, read-only, in milliseconds
    instead of the seconds that importing MLflow takes; None if the schema is not as expected
    (the caller then asks MLflow itself)."""
    import sqlite3

    query = (
        "SELECT a.alias, v.run_id FROM registered_model_aliases a JOIN model_versions v "
        "ON a.name = v.name AND a.version = v.version WHERE a.name = ?"
    )
    try:
        with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as db:
            rows = db.execute(query, (registry.REGISTERED_MODEL,)).fetchall()
    except sqlite3.Error:
        return None
    return {alias: run_id or "" for alias, run_id in rows}


def _local_folder_for_run(root: Path, run_id: str) -> Path | None:
    """The model folder `dvc repro` wrote for an MLflow run, when it is still in the workspace."""
    for name in MODEL_NAMES:
        folder = root / MODELS_FOLDER / name
        try:
            if run_id and files.read_json(folder / CONFIG_FILE).get("mlflow_run_id") == run_id:
                return folder
        except ValueError:
            continue
    return None


def locate_model(spec: str, root: Path, aliases: dict[str, str]) -> ModelSource:
    """Resolves ``--model``: champion/cae/unet/unet_tuned (registry alias, else the model folder
    ``dvc repro`` wrote under ``root``), an MLflow model URI, or a path to a saved model."""
    if spec in ALIASES:
        if spec in aliases:
            # The very model the registry points at, from the workspace when it is there: the
            # same weights, loaded without MLflow or TensorFlow.
            local = _local_folder_for_run(root, aliases[spec])
            if local is not None:
                return ModelSource(str(local), is_mlflow=False)
            return ModelSource(f"models:/{registry.REGISTERED_MODEL}@{spec}", is_mlflow=True)
        folder = root / MODELS_FOLDER / (FALLBACK_MODEL if spec == DEFAULT_MODEL else spec)
        if not (folder / CONFIG_FILE).is_file():
            raise UserError(
                f"no {spec!r} model: the MLflow registry has no alias {spec!r} and {folder} "
                f"does not exist; run `dvc repro` or pass --model PATH"
            )
        note = None
        if spec == DEFAULT_MODEL:
            note = (
                f"no champion in the MLflow model registry yet; "
                f"using the tuned U-Net from `dvc repro` ({folder})"
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
        f"--model {spec!r}: not champion, cae, unet, unet_tuned, an existing model path or an "
        f"MLflow model URI (models:/NAME@ALIAS, runs:/RUN_ID/PATH)"
    )


def runs_without_keras(source: ModelSource) -> bool:
    """Whether the model is a folder with an ONNX export that onnxruntime can run, so
    TensorFlow need not be imported (seconds saved on every call)."""
    folder = Path(source.location)
    if source.is_mlflow or not (folder / onnx_export.ONNX_FILE).is_file():
        return False
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return (folder / CONFIG_FILE).is_file()


def load_denoiser(source: ModelSource) -> Denoiser:
    """Loads the model (ONNX when the folder has it, else Keras in safe mode) and reads its
    depth and channels."""
    if runs_without_keras(source):
        folder = Path(source.location)
        info = files.read_json(folder / CONFIG_FILE)
        model = onnx_export.OnnxModel(folder / onnx_export.ONNX_FILE)
        depth, channels = int(info["model_config"]["depth"]), model.channels
        return Denoiser(model, depth, channels, source.location)
    from denoiselab import models

    if source.is_mlflow:
        model = _load_mlflow_model(source.location)
        depth = models.infer_depth(model)
    else:
        model, depth = models.load_any_model(source.location)
    channels = model.input_shape[-1]
    if channels not in (1, 3):
        raise UserError(f"{source.location}: model takes {channels} channels; expected 1 or 3")
    return Denoiser(model, depth, channels, source.location)


def _load_mlflow_model(uri: str):
    import mlflow
    import mlflow.keras

    mlflow.set_tracking_uri(tracking.tracking_uri())
    with tempfile.TemporaryDirectory(prefix="denoiselab-model-") as scratch:
        try:
            return mlflow.keras.load_model(
                uri, dst_path=scratch, load_model_kwargs={"safe_mode": True, "compile": False}
            )
        except mlflow.exceptions.MlflowException as error:
            raise UserError(f"{uri}: cannot load the MLflow model ({error.message})") from None
        except OSError as error:
            raise UserError(f"{uri}: cannot load the MLflow model ({error})") from None


def denoise_values(
    denoiser: Denoiser, image: np.ndarray, tile_size: int = inference.DEFAULT_TILE
) -> np.ndarray:
    """Denoises an HWC float32 image in [0, 1] with 1 or 3 channels; returns the same shape.

    A grayscale model denoises each colour channel on its own; a colour model gets a
    grayscale image repeated to 3 channels and its output converted back with rgb2gray.
    """
    multiple = 2**denoiser.depth
    run = functools.partial(
        inference.denoise_image,
        denoiser.model,
        depth=denoiser.depth,
        tile_size=math.ceil(tile_size / multiple) * multiple,
        margin=inference.tile_margin(denoiser.depth),
    )
    if denoiser.channels == 1:
        planes = [run(image[..., [channel]]) for channel in range(image.shape[-1])]
        return np.concatenate(planes, axis=-1)
    if image.shape[-1] == 1:
        from skimage import color

        return color.rgb2gray(run(np.repeat(image, 3, axis=-1))).astype(np.float32)[..., None]
    return run(image)


def denoise_pixels(
    denoiser: Denoiser, pixels: np.ndarray, tile_size: int = inference.DEFAULT_TILE
) -> np.ndarray:
    """Denoises an image file's pixels; returns the same shape and dtype.

    ``pixels`` is HW or HWC with 1-4 channels (gray, gray+alpha, RGB, RGBA), uint8 or uint16.
    The alpha channel is copied unchanged.
    """
    if pixels.dtype not in (np.uint8, np.uint16):
        raise UserError(f"expected uint8 or uint16 pixels, got {pixels.dtype}")
    planes = pixels if pixels.ndim == 3 else pixels[..., None]
    if planes.ndim != 3 or planes.shape[-1] not in (1, 2, 3, 4):
        raise UserError(f"expected HW or HWC pixels with 1-4 channels, got {pixels.shape}")
    has_alpha = planes.shape[-1] in (2, 4)
    colour = planes[..., :-1] if has_alpha else planes
    denoised = denoise_values(denoiser, files.to_float(colour), tile_size)
    scale = np.iinfo(pixels.dtype).max
    result = np.round(np.clip(denoised, 0.0, 1.0) * scale).astype(pixels.dtype)
    if has_alpha:
        result = np.concatenate([result, planes[..., -1:]], axis=-1)
    return result.reshape(pixels.shape)


def default_evaluation_models(root: Path, aliases: dict[str, str]) -> list[str]:
    """The champion when the registry has one, else each of cae/unet/unet_tuned that exists."""
    if DEFAULT_MODEL in aliases:
        return [DEFAULT_MODEL]
    found = [
        name
        for name in MODEL_NAMES
        if name in aliases or (root / MODELS_FOLDER / name / CONFIG_FILE).is_file()
    ]
    if not found:
        raise UserError(
            "no models to evaluate: no champion in the MLflow registry and no folder "
            f"{root / MODELS_FOLDER}/{{cae,unet,unet_tuned}}; run `dvc repro` or pass --models"
        )
    return found


def score_models(
    clean: dict[str, np.ndarray],
    denoisers: dict[str, Denoiser],
    sigma: float,
    seed: int,
    tile_size: int = inference.DEFAULT_TILE,
    classical_methods: tuple[str, ...] = (),
) -> dict[str, dict]:
    """PSNR/SSIM of each model on noisy copies of clean images, per PROTOCOL.md.

    ``clean`` maps names to HW/HWC float images in [0, 1]. Each model sees them converted to
    its channels (rgb2gray, alpha dropped) with noise from ``default_rng(seed)`` per image.
    Returns ``{"noisy": scores, model: scores, ...}`` (mean and per image), with one noisy row
    per channel count when the models differ. Each of ``classical_methods`` (see
    :mod:`denoiselab.classical`) is scored on the same noisy pixels as the models, under a
    label with the channel count when the models differ.
    """
    from denoiselab import classical

    results = {}
    channel_counts = sorted({denoiser.channels for denoiser in denoisers.values()})
    for channels in channel_counts:
        converted = {name: files.to_channels(image, channels) for name, image in clean.items()}
        noisy = noise.noisy_test_images(converted, sigma, seed)
        label = "noisy" if len(channel_counts) == 1 else f"noisy ({channels} channels)"
        results[label] = metrics.score_images(converted, noisy)
        for name, denoiser in denoisers.items():
            if denoiser.channels == channels:
                denoised = {
                    image_name: denoise_values(denoiser, image, tile_size)
                    for image_name, image in noisy.items()
                }
                results[name] = metrics.score_images(converted, denoised)
        for method in classical_methods:
            settings = classical.settings_for(method, sigma)
            denoised = {
                image_name: classical.DENOISERS[method](image, sigma, **settings)
                for image_name, image in noisy.items()
            }
            suffix = "" if len(channel_counts) == 1 else f" ({channels} channels)"
            results[f"{method}{suffix}"] = metrics.score_images(converted, denoised)
    return results


def format_scores(results: dict[str, dict]) -> str:
    """A text table: one row per image and a mean row, one "PSNR / SSIM" column per method."""
    methods = list(results)
    images = list(next(iter(results.values()))["per_image"])
    rows = [["image", *methods]]
    for image in images:
        rows.append([image, *(_cell(results[method]["per_image"][image]) for method in methods)])
    rows.append(["mean", *(_cell(results[method]) for method in methods)])
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    return "\n".join(line.rstrip() for line in lines) + "\n\nPSNR in dB / SSIM"


def _cell(scores: dict) -> str:
    return f"{scores['psnr']:.2f} / {scores['ssim']:.4f}"
