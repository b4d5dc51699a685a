"""Which model a name selects, and loading it: what ``--model`` names (a registry alias, a
trained model's folder, an MLflow model URI or a path), the champion that denoises images of
each kind when no model is named, and the models ``denoiselab evaluate`` scores by default.

The registry's aliases come in as a dict (alias -> run id of its version, see
:func:`denoiselab.registry.registered_aliases`), so nothing here asks MLflow; only loading an
MLflow model does (through :mod:`denoiselab.serving`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from pathlib import Path

from denoiselab import catalogue, model_store, paths, registry
from denoiselab.errors import UserError

DEFAULT_MODEL = registry.CHAMPION
# The folder `dvc repro` writes that stands in for each champion alias while the registry has
# none, and the words a user reads about it.
CHAMPION_FALLBACKS = {registry.CHAMPION: "unet_tuned", registry.CHAMPION_RGB: "unet_rgb"}
FALLBACK_DESCRIPTIONS = {
    registry.CHAMPION: "the tuned U-Net",
    registry.CHAMPION_RGB: "the colour U-Net",
}
ALIASES = (*registry.CHAMPIONS.values(), *catalogue.MODEL_NAMES)
_URI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/")


@dataclasses.dataclass(frozen=True)
class ModelSource:
    """Where a model comes from: an MLflow model URI or a local path, and a note for stderr."""

    location: str
    is_mlflow: bool
    note: str | None = None


@dataclasses.dataclass(frozen=True)
class ChampionChoice:
    """The model that denoises images of one kind when no model is named.

    ``alias`` is the champion alias whose model it is; ``run_id`` the run of the version it
    points at, or None while the registry has no such alias and the folder
    ``models/<fallback>`` stands in for it. ``borrowed`` says that colour images get the
    grayscale champion, plane by plane, because there is no colour model at all.
    """

    alias: str
    run_id: str | None
    borrowed: bool = False

    @property
    def fallback(self) -> str:
        """The model whose folder stands in for the alias while the registry lacks it."""
        return CHAMPION_FALLBACKS[self.alias]


def choose_champion(
    channels: int, aliases: dict[str, str], has_folder: Callable[[str], bool]
) -> ChampionChoice:
    """The champion for images of ``channels`` channels (1 or 3): the registry's alias, else
    the folder standing in for it (``has_folder(name)`` says whether models/<name> exists),
    and for colour images without either, the grayscale champion."""
    alias = registry.champion_alias(channels)
    if alias in aliases:
        return ChampionChoice(alias, aliases[alias])
    if channels == 1 or has_folder(CHAMPION_FALLBACKS[alias]):
        return ChampionChoice(alias, None)
    gray = choose_champion(1, aliases, has_folder)
    return dataclasses.replace(gray, borrowed=True)


def locate_model(spec: str, root: Path, aliases: dict[str, str]) -> ModelSource:
    """Resolves ``--model``: champion/champion_rgb/cae/unet/unet_tuned/unet_rgb (registry alias,
    else the model folder ``dvc repro`` wrote under ``root``: models/unet_tuned for champion,
    models/unet_rgb for champion_rgb), an MLflow model URI, or a path to a saved model.
    ``aliases`` maps registry aliases to the run ids of their versions."""
    if spec in ALIASES:
        if spec in aliases:
            # The very model the registry points at, from the workspace when it is there: the
            # same weights, loaded without MLflow or TensorFlow.
            local = model_store.folder_for_run(root, aliases[spec])
            if local is not None:
                return ModelSource(str(local), is_mlflow=False)
            return ModelSource(f"models:/{registry.REGISTERED_MODEL}@{spec}", is_mlflow=True)
        folder = fallback_folder(spec, root)
        if not (folder / model_store.CONFIG_FILE).is_file():
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


def fallback_folder(spec: str, root: Path) -> Path:
    """The model folder `dvc repro` writes for an alias name in ``ALIASES``."""
    return paths.model_folder(root, CHAMPION_FALLBACKS.get(spec, spec))


def has_model(spec: str, root: Path, aliases: dict[str, str]) -> bool:
    """Whether :func:`locate_model` finds an alias name in ``ALIASES``: the registry has the
    alias, or the model folder that stands in for it exists."""
    return spec in aliases or (fallback_folder(spec, root) / model_store.CONFIG_FILE).is_file()


def runs_without_keras(source: ModelSource) -> bool:
    """Whether the model runs without TensorFlow (seconds saved on every call): a folder with
    an ONNX export, or an MLflow model, which holds such a folder."""
    if source.is_mlflow:
        return model_store.has_onnxruntime()
    return model_store.is_onnx_folder(Path(source.location))


def load_denoiser(source: ModelSource) -> model_store.Denoiser:
    """Loads the model: an MLflow model through the model folder it holds, a folder with an
    ONNX export through onnxruntime, anything else with Keras in safe mode."""
    if source.is_mlflow:
        from denoiselab import serving

        return serving.load_logged_model(source.location)
    return model_store.load_folder(source.location)


def default_evaluation_models(root: Path, aliases: dict[str, str]) -> list[str]:
    """The champion, and the colour champion too, when the registry has them; else each of
    the models `dvc repro` trains (cae, unet, unet_tuned, unet_rgb) that exists."""
    if DEFAULT_MODEL in aliases:
        return [alias for alias in registry.CHAMPIONS.values() if alias in aliases]
    found = [name for name in catalogue.MODEL_NAMES if has_model(name, root, aliases)]
    if not found:
        raise UserError(
            "no models to evaluate: no champion in the MLflow registry and no folder "
            f"{root / paths.MODELS_FOLDER}/{{{','.join(catalogue.MODEL_NAMES)}}}; run "
            "`dvc repro` or pass --models"
        )
    return found
