"""Model folders on disk: finding the folder `dvc repro` wrote for a model or an MLflow run, and
loading a folder (or a ``.keras`` file) into a :class:`Denoiser`, with onnxruntime when it
can be, so that denoising needs neither MLflow nor TensorFlow.

Which model a name such as ``champion`` means is :mod:`denoiselab.selection`'s job; a model
packaged in MLflow is unpacked by :mod:`denoiselab.serving`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from denoiselab import catalogue, files, onnx_export, paths, vocabulary
from denoiselab.errors import UserError

# The name models.py writes; repeated through paths because importing models.py imports Keras.
CONFIG_FILE = paths.MODEL_CONFIG_FILE


@dataclasses.dataclass(frozen=True)
class Denoiser:
    """A loaded model (onnxruntime or Keras, called on NHWC batches), how many times it halves
    the image (``depth``: its input's sides must divide by ``2**depth``), the channels of the
    images it denoises (1 or 3) and whether its input also carries a noise level map (one more
    channel, after the image's)."""

    model: Any
    depth: int
    channels: int
    location: str
    noise_map: bool = False

    @property
    def input_channels(self) -> int:
        return self.channels + int(self.noise_map)


def has_folder(root: Path, name: str) -> bool:
    """Whether `dvc repro` has written model ``name``'s folder under ``root``."""
    return (paths.model_folder(root, name) / CONFIG_FILE).is_file()


def folder_for_run(root: Path, run_id: str) -> Path | None:
    """The model folder `dvc repro` wrote for an MLflow run, when it is still in the workspace."""
    for name in catalogue.MODEL_NAMES:
        folder = paths.model_folder(root, name)
        try:
            if run_id and files.read_json(folder / CONFIG_FILE).get("mlflow_run_id") == run_id:
                return folder
        except ValueError:
            continue
    return None


def weights_digest(folder: str | Path) -> str:
    """The SHA-256 of a model folder's weights file. The file is byte-stable (a ``.keras`` file
    is not: it holds the time it was saved), so the same network trained again to the same
    weights has the same digest."""
    from denoiselab import models

    return files.sha256_of_file(Path(folder) / models.WEIGHTS_FILE)


def has_onnxruntime() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def is_onnx_folder(folder: Path) -> bool:
    """Whether ``folder`` is a model folder that onnxruntime can run, without TensorFlow."""
    return (
        (folder / onnx_export.ONNX_FILE).is_file()
        and (folder / CONFIG_FILE).is_file()
        and has_onnxruntime()
    )


def _onnx_network(network: Any, source: Path) -> tuple[int, bool]:
    """The downsamplings and noise_map of a saved ``model_config``: all that running its ONNX
    file needs. Read as plain values when they are well formed, so that `denoiselab denoise`
    does without pydantic (see :mod:`denoiselab.vocabulary`); otherwise ``config`` checks the
    whole config and names the bad key."""
    if isinstance(network, dict):
        depth = network.get("depth")
        pixel_unshuffle = network.get("pixel_unshuffle", False)
        noise_map = network.get("noise_map", False)
        well_formed = (
            type(depth) is int
            and depth >= 1
            and type(pixel_unshuffle) is bool
            and type(noise_map) is bool
        )
        if well_formed:
            return vocabulary.downsamplings(depth, pixel_unshuffle), noise_map
    from denoiselab.config import ModelConfig, parse

    parsed = parse(ModelConfig, network, str(source))
    return parsed.downsamplings, parsed.noise_map


def load_folder(location: str | Path) -> Denoiser:
    """Loads a saved model folder (ONNX when it has one) or a .keras file."""
    folder = Path(location)
    if is_onnx_folder(folder):
        info = files.read_json(folder / CONFIG_FILE)
        model = onnx_export.OnnxModel(folder / onnx_export.ONNX_FILE)
        downsamplings, noise_map = _onnx_network(info.get("model_config"), folder / CONFIG_FILE)
        channels = model.channels - int(noise_map)
        return Denoiser(model, downsamplings, channels, str(location), noise_map)
    from denoiselab import models

    model, depth = models.load_any_model(folder)
    noise_map = models.takes_noise_map(model)
    channels = model.input_shape[-1] - int(noise_map)
    if channels not in (1, 3):
        raise UserError(f"{location}: model denoises {channels} channels; expected 1 or 3")
    return Denoiser(model, depth, channels, str(location), noise_map)
