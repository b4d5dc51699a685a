"""The models the pipeline trains: one entry per model, which every other module reads.

Adding a model means one entry here, its section in params.yaml and its item in dvc.yaml's
``train`` stage (the DAG keeps its own list). This module imports only ``vocabulary`` (for
the datasets), so any layer above it may read it.
"""

from __future__ import annotations

import dataclasses

# The two datasets and the channels of their images, as params.yaml knows them.
from denoiselab.vocabulary import DATASET_CHANNELS


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """One trained model: its folder ``models/<name>``, MLflow run name and registry alias are
    all ``name``."""

    name: str
    # The params.yaml section that configures its training.
    section: str
    # The dataset it trains on: "gray" or "colour".
    dataset: str
    # How figures and tables name it, and its line colour in the figures.
    label: str
    colour: str

    @property
    def channels(self) -> int:
        return DATASET_CHANNELS[self.dataset]


MODELS: dict[str, ModelEntry] = {
    entry.name: entry
    for entry in (
        ModelEntry("cae", "train_cae", "gray", "CAE", "tab:orange"),
        ModelEntry("unet", "train_unet", "gray", "U-Net", "tab:blue"),
        ModelEntry("unet_tuned", "tune_unet", "gray", "tuned U-Net", "tab:green"),
        ModelEntry("unet_rgb", "train_unet_rgb", "colour", "colour U-Net", "tab:purple"),
    )
}
MODEL_NAMES = tuple(MODELS)
GRAY_MODELS = tuple(name for name, entry in MODELS.items() if entry.dataset == "gray")


def models_of(dataset: str) -> tuple[str, ...]:
    """The names of the models trained on ``dataset``."""
    return tuple(name for name, entry in MODELS.items() if entry.dataset == dataset)
