"""Typed, validated view of params.yaml.

Each section of params.yaml is parsed once into a frozen dataclass. Unknown keys, wrong types
and out-of-range values raise ``ValueError`` with a message naming the dotted key, so a typo
fails in seconds instead of after an hour of training.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

import yaml

from denoiselab.errors import UserError
from denoiselab.rules import (
    coerce,
    require,
    require_choice,
    require_divisible_by_depths,
    require_in_range,
    require_positive,
)

# Network architectures, the `model` key of a training section.
ARCHITECTURES = ("cae", "unet")
LOSS_NAMES = ("bce", "mse", "l1")
LR_SCHEDULES = ("constant", "cosine")
DISTRIBUTIONS = ("none", "mirrored", "multi_worker")
# Optuna storages: an RDB URL (sqlite for one machine, PostgreSQL or MySQL for several) or a
# journal file, which several processes on one machine (or a shared disk) can append to.
STORAGE_SCHEMES = ("sqlite", "postgresql", "mysql")
JOURNAL_SUFFIX = ".log"
STORAGE_RULE = (
    "must be null (optuna.db at the repository root), a URL such as sqlite:///optuna.db or "
    f"postgresql://user@host/db, or an Optuna journal file ending in {JOURNAL_SUFFIX}"
)
# auto: mixed_bfloat16 where the hardware computes bfloat16 natively, else float32
# (see denoiselab.precision).
PRECISIONS = ("auto", "float32", "mixed_bfloat16")
CLASSICAL_METHODS = ("tv", "wavelet", "nl_means", "bm3d")


@dataclasses.dataclass(frozen=True)
class BaseConfig:
    seed: int = 0
    channels: int = 1
    noise_sigma: float = 0.1
    deterministic: bool = False

    def validate(self, section: str) -> None:
        require_choice(self.channels, (1, 3), section, "channels")
        require_in_range(
            self, section, "noise_sigma", 0, 1, "(images are in [0, 1])", open_low=True
        )


@dataclasses.dataclass(frozen=True)
class PrepareConfig:
    source: str = "builtin"
    folder: str | None = None
    test_images: tuple[str, ...] = ()
    val_images: tuple[str, ...] = ()
    test_fraction: float = 0.2
    val_fraction: float = 0.1
    patch_size: int = 64
    stride: int = 32
    max_train_patches: int = 20000
    max_val_patches: int = 512
    on_bad_image: str = "skip"

    def validate(self, section: str) -> None:
        require_choice(self.source, ("builtin", "folder"), section, "source")
        if self.source == "folder":
            require(bool(self.folder), section, "folder", "must name a folder", self.folder)
        require_in_range(self, section, "test_fraction", 0, 1, open_high=True)
        require_in_range(self, section, "val_fraction", 0, 1, open_high=True)
        require(
            self.test_fraction + self.val_fraction < 1, section, "val_fraction",
            "plus test_fraction must leave images for training", self.val_fraction,
        )  # fmt: skip
        require(self.patch_size >= 8, section, "patch_size", "must be at least 8", self.patch_size)
        require_positive(self, section, "stride", "max_train_patches", "max_val_patches")
        require_choice(self.on_bad_image, ("skip", "fail"), section, "on_bad_image")


@dataclasses.dataclass(frozen=True)
class AddNoiseConfig:
    seed: int = 0

    def validate(self, section: str) -> None:
        pass


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model; saved next to its weights.

    ``precision`` may be ``auto`` while training is set up; a saved config.json records the
    precision the model was trained in.
    """

    model: str = "unet"
    base_filters: int = 16
    depth: int = 3
    residual: bool = True
    batch_norm: bool = False
    channels: int = 1
    precision: str = "float32"

    def validate(self, section: str) -> None:
        require_choice(self.precision, PRECISIONS, section, "precision")
        require_choice(self.model, ARCHITECTURES, section, "model")
        require_in_range(self, section, "base_filters", 1, 256)
        require_in_range(self, section, "depth", 1, 6)
        require_choice(self.channels, (1, 3), section, "channels")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    model: str = "unet"
    base_filters: int = 16
    depth: int = 3
    residual: bool = True
    batch_norm: bool = False
    loss: str = "mse"
    learning_rate: float = 1e-3
    lr_schedule: str = "cosine"
    batch_size: int = 32
    epochs: int = 10
    steps_per_epoch: int = 100
    crop_size: int | None = None
    fresh_noise: bool = True
    augment: bool = True
    jit_compile: bool = False
    precision: str = "auto"
    distribution: str = "none"
    steps_per_execution: int = 1

    def validate(self, section: str) -> None:
        # Width, depth, model name and precision are checked where they are defined.
        self.model_config(channels=1).validate(section)
        require_choice(self.loss, LOSS_NAMES, section, "loss")
        require(
            not (self.loss == "bce" and self.residual), section, "loss",
            "'bce' needs outputs in [0, 1]; use mse or l1 with residual: true", self.loss,
        )  # fmt: skip
        require_in_range(self, section, "learning_rate", 0, 1, open_low=True, open_high=True)
        require_choice(self.lr_schedule, LR_SCHEDULES, section, "lr_schedule")
        require_positive(
            self, section, "batch_size", "epochs", "steps_per_epoch", "steps_per_execution"
        )
        if self.crop_size is not None:
            require(
                self.crop_size >= 8, section, "crop_size", "must be at least 8 or null",
                self.crop_size,
            )  # fmt: skip
            require_divisible_by_depths(self.crop_size, (self.depth,), section, "crop_size")
        require_choice(self.distribution, DISTRIBUTIONS, section, "distribution")

    def model_config(self, channels: int) -> ModelConfig:
        return ModelConfig(
            model=self.model,
            base_filters=self.base_filters,
            depth=self.depth,
            residual=self.residual,
            batch_norm=self.batch_norm,
            channels=channels,
            precision=self.precision,
        )


@dataclasses.dataclass(frozen=True)
class TuneConfig:
    n_trials: int = 8
    trial_epochs: int = 3
    trial_budget_tflop: float = 5.0
    learning_rate: tuple[float, float] = (3e-4, 3e-3)
    base_filters: tuple[int, ...] = (16, 24, 32)
    depth: tuple[int, ...] = (2, 3)
    batch_size: tuple[int, ...] = (16, 32)
    loss: tuple[str, ...] = ("mse", "l1")
    batch_norm: tuple[bool, ...] = (False,)
    crop_size: int | None = 48
    final_epochs: int = 20
    final_budget_tflop: float = 80.0
    warm_start: bool = True
    storage: str | None = None
    study_name: str = "unet_tune"
    jit_compile: bool = False
    precision: str = "auto"
    steps_per_execution: int = 1

    def validate(self, section: str) -> None:
        require_choice(self.precision, PRECISIONS, section, "precision")
        require_positive(
            self, section, "n_trials", "trial_epochs", "trial_budget_tflop", "final_epochs",
            "final_budget_tflop", "steps_per_execution",
        )  # fmt: skip
        low, high = self.learning_rate
        require(
            0 < low <= high < 1, section, "learning_rate",
            "must be [low, high] with 0 < low <= high < 1", list(self.learning_rate),
        )  # fmt: skip
        for key in ("base_filters", "depth", "batch_size", "loss", "batch_norm"):
            choices = list(getattr(self, key))
            require(bool(choices), section, key, "must list at least one choice", choices)
        for loss in self.loss:
            require(
                loss in ("mse", "l1"), section, "loss",
                "choices must be 'mse' or 'l1' (the tuned U-Net is residual)", loss,
            )  # fmt: skip
        for depth in self.depth:
            require(1 <= depth <= 6, section, "depth", "choices must be in [1, 6]", depth)
        for filters in self.base_filters:
            require(
                1 <= filters <= 256, section, "base_filters", "choices must be in [1, 256]",
                filters,
            )  # fmt: skip
        for size in self.batch_size:
            require(size >= 1, section, "batch_size", "choices must be positive", size)
        if self.crop_size is not None:
            require_divisible_by_depths(self.crop_size, self.depth, section, "crop_size")
        if self.storage is not None:
            require(is_storage(self.storage), section, "storage", STORAGE_RULE, self.storage)
        require(
            bool(self.study_name.strip()), section, "study_name", "must be a non-empty name",
            self.study_name,
        )  # fmt: skip


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    classical: tuple[str, ...] = ("tv", "wavelet", "nl_means", "bm3d")
    tv_weights: tuple[float, ...] = (0.06, 0.08, 0.1, 0.12)
    nl_means_h: tuple[float, ...] = (0.06, 0.08, 0.1)
    bm3d_sigma_scale: tuple[float, ...] = (1.0,)
    val_patches: int = 16
    register_models: bool = True

    def validate(self, section: str) -> None:
        for name in self.classical:
            require_choice(name, CLASSICAL_METHODS, section, "classical")
        for key in ("tv_weights", "nl_means_h", "bm3d_sigma_scale"):
            values = getattr(self, key)
            require(
                len(values) > 0 and all(v > 0 for v in values), section, key,
                "must list positive numbers", list(values),
            )  # fmt: skip
        require_positive(self, section, "val_patches")


@dataclasses.dataclass(frozen=True)
class PlotConfig:
    n_samples: int = 4
    dpi: int = 110

    def validate(self, section: str) -> None:
        require_positive(self, section, "n_samples")
        require(self.dpi >= 30, section, "dpi", "must be at least 30", self.dpi)


@dataclasses.dataclass(frozen=True)
class Params:
    base: BaseConfig
    prepare: PrepareConfig
    add_noise: AddNoiseConfig
    train_cae: TrainConfig
    train_unet: TrainConfig
    tune_unet: TuneConfig
    evaluate: EvaluateConfig
    plot: PlotConfig

    def validate(self) -> None:
        """Checks that need more than one section."""
        patch = self.prepare.patch_size
        for section in ("train_cae", "train_unet"):
            train = getattr(self, section)
            size = train.crop_size or patch
            require(
                size <= patch,
                section,
                "crop_size",
                f"must not exceed prepare.patch_size = {patch}",
                train.crop_size,
            )
            require(
                patch % 2**train.depth == 0,
                "prepare",
                "patch_size",
                f"must be divisible by 2**{section}.depth = {2**train.depth}",
                patch,
            )
        for depth in self.tune_unet.depth:
            require(
                patch % 2**depth == 0,
                "prepare",
                "patch_size",
                f"must be divisible by 2**depth = {2**depth} for every tune_unet.depth choice",
                patch,
            )
        if self.tune_unet.crop_size is not None:
            require(
                self.tune_unet.crop_size <= patch,
                "tune_unet",
                "crop_size",
                f"must not exceed prepare.patch_size = {patch}",
                self.tune_unet.crop_size,
            )


SECTIONS: dict[str, type] = {
    "base": BaseConfig,
    "prepare": PrepareConfig,
    "add_noise": AddNoiseConfig,
    "train_cae": TrainConfig,
    "train_unet": TrainConfig,
    "tune_unet": TuneConfig,
    "evaluate": EvaluateConfig,
    "plot": PlotConfig,
}


def is_storage(storage: str) -> bool:
    """Whether ``storage`` names an Optuna storage: an RDB URL or a journal file."""
    scheme, separator, _ = storage.partition("://")
    is_url = bool(separator) and scheme.partition("+")[0] in STORAGE_SCHEMES
    return is_url or storage.endswith(JOURNAL_SUFFIX)


def parse_section(name: str, raw: Any, cls: type | None = None) -> Any:
    """Parses one params.yaml section into its dataclass, rejecting unknown keys."""
    cls = cls or SECTIONS[name]
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UserError(f"params.yaml: {name} must be a mapping of keys to values, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {field.name for field in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - fields)
    if unknown:
        raise UserError(
            f"params.yaml: unknown key {name}.{unknown[0]}; "
            f"allowed keys: {', '.join(sorted(fields))}"
        )
    values = {key: coerce(value, hints[key], f"{name}.{key}") for key, value in raw.items()}
    config = cls(**values)
    config.validate(name)
    return config


def parse_params(raw: Any) -> Params:
    if not isinstance(raw, dict):
        raise UserError("params.yaml: the file must hold a mapping of sections")
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise UserError(
            f"params.yaml: unknown section {unknown[0]!r}; allowed sections: {', '.join(SECTIONS)}"
        )
    params = Params(**{name: parse_section(name, raw.get(name)) for name in SECTIONS})
    params.validate()
    return params


def load_params(path: str | Path = "params.yaml") -> Params:
    """Reads and validates the whole params file; raises ValueError naming the bad key."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: params file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise UserError(f"{path}: not valid YAML ({error.__class__.__name__})") from error
    return parse_params(raw)


def to_dict(config: Any) -> dict[str, Any]:
    """Plain-dict form of a config dataclass, lists instead of tuples, for JSON and MLflow."""

    def convert(value: Any) -> Any:
        if isinstance(value, tuple):
            return [convert(item) for item in value]
        return value

    return {key: convert(value) for key, value in dataclasses.asdict(config).items()}
