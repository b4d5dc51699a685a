"""Where the project's files are: the repository root, also from inside DVC's temporary copies,
and the folders and file names that code outside a DVC stage looks for there.

dvc.yaml passes every stage its paths as arguments; the names here are the ones the CLI, the
MLflow store and the model loaders need besides, written once. This module imports nothing of
the project, so every layer may read it.
"""

from __future__ import annotations

import os
from pathlib import Path

# models/<name>: one folder per model of the catalogue, as dvc.yaml's train stages write them.
MODELS_FOLDER = "models"
# The file in a model folder that says how to rebuild the model (models.py writes it).
MODEL_CONFIG_FILE = "config.json"
# The default MLflow store: an sqlite file with its artifacts folder beside it.
MLFLOW_STORE_FILE = "mlflow.db"
MLFLOW_ARTIFACTS_FOLDER = "mlartifacts"
DATA_FOLDER = "data"


def repo_root(start: str | Path | None = None) -> Path:
    """The DVC repository the user works in, also from inside DVC's temporary copies."""
    candidates = []
    if os.environ.get("DVC_ROOT"):
        candidates.append(Path(os.environ["DVC_ROOT"]))
    candidates.append(Path(start or Path.cwd()).resolve())
    for candidate in candidates:
        text = str(candidate)
        marker = f"{os.sep}.dvc{os.sep}tmp{os.sep}"
        if marker in text:
            return Path(text.split(marker)[0])
        for folder in [candidate, *candidate.parents]:
            if (folder / ".dvc").is_dir():
                return folder
    return Path.cwd().resolve()


def model_folder(root: Path, name: str) -> Path:
    """The folder `dvc repro` writes model ``name`` into."""
    return root / MODELS_FOLDER / name


def prepared_folder(dataset: str) -> Path:
    """The prepared images of ``dataset`` (gray or colour), relative to the repository root."""
    return Path(DATA_FOLDER) / dataset / "prepared"


def noisy_folder(dataset: str) -> Path:
    """The noisy copies of ``dataset``'s images, relative to the repository root."""
    return Path(DATA_FOLDER) / dataset / "noisy"
