"""Typed, validated view of params.yaml.

Each section of params.yaml is parsed once into a frozen dataclass. Unknown keys, wrong types
and out-of-range values raise ``ValueError`` with a message naming the dotted key, so a typo
fails in seconds instead of after an hour of training.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

import yaml

MODEL_NAMES = ("cae", "unet")
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
PRECISIONS = ("float32", "mixed_bfloat16")


@dataclasses.dataclass(frozen=True)
class BaseConfig:
    seed: int = 0
    channels: int = 1
    noise_sigma: float = 0.1
    deterministic: bool = False

    def validate(self, section: str) -> None:
        _require(self.channels in (1, 3), section, "channels", "must be 1 or 3", self.channels)
        _require(
            0 < self.noise_sigma <= 1,
            section,
            "noise_sigma",
            "must be in (0, 1] (images are in [0, 1])",
            self.noise_sigma,
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
        _require(
            self.source in ("builtin", "folder"),
            section,
            "source",
            "must be 'builtin' or 'folder'",
            self.source,
        )
        if self.source == "folder":
            _require(
                bool(self.folder),
                section,
                "folder",
                "must name a folder when source is 'folder'",
                self.folder,
            )
        _require(
            0 <= self.test_fraction < 1,
            section,
            "test_fraction",
            "must be in [0, 1)",
            self.test_fraction,
        )
        _require(
            0 <= self.val_fraction < 1,
            section,
            "val_fraction",
            "must be in [0, 1)",
            self.val_fraction,
        )
        _require(
            self.test_fraction + self.val_fraction < 1,
            section,
            "val_fraction",
            "plus test_fraction must leave images for training",
            self.val_fraction,
        )
        _require(
            self.patch_size >= 8, section, "patch_size", "must be at least 8", self.patch_size
        )
        _require(self.stride >= 1, section, "stride", "must be a positive integer", self.stride)
        _require(
            self.max_train_patches >= 1,
            section,
            "max_train_patches",
            "must be positive",
            self.max_train_patches,
        )
        _require(
            self.max_val_patches >= 1,
            section,
            "max_val_patches",
            "must be positive",
            self.max_val_patches,
        )
        _require(
            self.on_bad_image in ("skip", "fail"),
            section,
            "on_bad_image",
            "must be 'skip' or 'fail'",
            self.on_bad_image,
        )


@dataclasses.dataclass(frozen=True)
class AddNoiseConfig:
    seed: int = 0

    def validate(self, section: str) -> None:
        pass


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model; saved next to its weights."""

    model: str = "unet"
    base_filters: int = 16
    depth: int = 3
    residual: bool = True
    batch_norm: bool = False
    channels: int = 1
    precision: str = "float32"

    def validate(self, section: str) -> None:
        _require_choice(self.precision, PRECISIONS, section, "precision")
        _require_choice(self.model, MODEL_NAMES, section, "model")
        _require(
            1 <= self.base_filters <= 256,
            section,
            "base_filters",
            "must be in [1, 256]",
            self.base_filters,
        )
        _require(1 <= self.depth <= 6, section, "depth", "must be in [1, 6]", self.depth)
        _require(self.channels in (1, 3), section, "channels", "must be 1 or 3", self.channels)


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
    precision: str = "float32"
    distribution: str = "none"
    steps_per_execution: int = 1

    def validate(self, section: str) -> None:
        # Width, depth, model name and precision are checked where they are defined.
        self.model_config(channels=1).validate(section)
        _require_choice(self.loss, LOSS_NAMES, section, "loss")
        _require(
            not (self.loss == "bce" and self.residual),
            section,
            "loss",
            "'bce' needs outputs in [0, 1]; use mse or l1 with residual: true",
            self.loss,
        )
        _require(
            0 < self.learning_rate < 1,
            section,
            "learning_rate",
            "must be in (0, 1)",
            self.learning_rate,
        )
        _require_choice(self.lr_schedule, LR_SCHEDULES, section, "lr_schedule")
        _require(self.batch_size >= 1, section, "batch_size", "must be positive", self.batch_size)
        _require(self.epochs >= 1, section, "epochs", "must be positive", self.epochs)
        _require(
            self.steps_per_epoch >= 1,
            section,
            "steps_per_epoch",
            "must be positive",
            self.steps_per_epoch,
        )
        _require(
            self.steps_per_execution >= 1,
            section,
            "steps_per_execution",
            "must be positive",
            self.steps_per_execution,
        )
        if self.crop_size is not None:
            _require(
                self.crop_size >= 8,
                section,
                "crop_size",
                "must be at least 8 or null",
                self.crop_size,
            )
            _require(
                self.crop_size % 2**self.depth == 0,
                section,
                "crop_size",
                f"must be divisible by 2**depth = {2**self.depth}",
                self.crop_size,
            )
        _require_choice(self.distribution, DISTRIBUTIONS, section, "distribution")

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
    precision: str = "float32"
    steps_per_execution: int = 1

    def validate(self, section: str) -> None:
        _require_choice(self.precision, PRECISIONS, section, "precision")
        _require(self.n_trials >= 1, section, "n_trials", "must be positive", self.n_trials)
        _require(
            self.steps_per_execution >= 1,
            section,
            "steps_per_execution",
            "must be positive",
            self.steps_per_execution,
        )
        _require(
            self.trial_epochs >= 1, section, "trial_epochs", "must be positive", self.trial_epochs
        )
        _require(
            self.trial_budget_tflop > 0,
            section,
            "trial_budget_tflop",
            "must be positive",
            self.trial_budget_tflop,
        )
        low, high = self.learning_rate
        _require(
            0 < low <= high < 1,
            section,
            "learning_rate",
            "must be [low, high] with 0 < low <= high < 1",
            list(self.learning_rate),
        )
        for key in ("base_filters", "depth", "batch_size", "loss", "batch_norm"):
            _require(
                len(getattr(self, key)) > 0,
                section,
                key,
                "must list at least one choice",
                list(getattr(self, key)),
            )
        for loss in self.loss:
            _require(
                loss in ("mse", "l1"),
                section,
                "loss",
                "choices must be 'mse' or 'l1' (the tuned U-Net is residual)",
                loss,
            )
        for depth in self.depth:
            _require(1 <= depth <= 6, section, "depth", "choices must be in [1, 6]", depth)
        for filters in self.base_filters:
            _require(
                1 <= filters <= 256,
                section,
                "base_filters",
                "choices must be in [1, 256]",
                filters,
            )
        for size in self.batch_size:
            _require(size >= 1, section, "batch_size", "choices must be positive", size)
        if self.crop_size is not None:
            for depth in self.depth:
                _require(
                    self.crop_size % 2**depth == 0,
                    section,
                    "crop_size",
                    f"must be divisible by 2**depth = {2**depth} for every depth choice",
                    self.crop_size,
                )
        _require(
            self.final_epochs >= 1, section, "final_epochs", "must be positive", self.final_epochs
        )
        _require(
            self.final_budget_tflop > 0,
            section,
            "final_budget_tflop",
            "must be positive",
            self.final_budget_tflop,
        )
        if self.storage is not None:
            _require(is_storage(self.storage), section, "storage", STORAGE_RULE, self.storage)
        _require(
            bool(self.study_name.strip()),
            section,
            "study_name",
            "must be a non-empty name",
            self.study_name,
        )


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
            _require(
                name in ("tv", "wavelet", "nl_means", "bm3d"),
                section,
                "classical",
                "entries must be tv, wavelet, nl_means or bm3d",
                name,
            )
        for key in ("tv_weights", "nl_means_h", "bm3d_sigma_scale"):
            values = getattr(self, key)
            _require(
                len(values) > 0 and all(v > 0 for v in values),
                section,
                key,
                "must list positive numbers",
                list(values),
            )
        _require(
            self.val_patches >= 1, section, "val_patches", "must be positive", self.val_patches
        )


@dataclasses.dataclass(frozen=True)
class PlotConfig:
    n_samples: int = 4
    dpi: int = 110

    def validate(self, section: str) -> None:
        _require(self.n_samples >= 1, section, "n_samples", "must be positive", self.n_samples)
        _require(self.dpi >= 30, section, "dpi", "must be at least 30", self.dpi)


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
            _require(
                size <= patch,
                section,
                "crop_size",
                f"must not exceed prepare.patch_size = {patch}",
                train.crop_size,
            )
            _require(
                patch % 2**train.depth == 0,
                "prepare",
                "patch_size",
                f"must be divisible by 2**{section}.depth = {2**train.depth}",
                patch,
            )
        for depth in self.tune_unet.depth:
            _require(
                patch % 2**depth == 0,
                "prepare",
                "patch_size",
                f"must be divisible by 2**depth = {2**depth} for every tune_unet.depth choice",
                patch,
            )
        if self.tune_unet.crop_size is not None:
            _require(
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


def _require(condition: bool, section: str, key: str, rule: str, value: Any) -> None:
    if not condition:
        raise ValueError(f"params.yaml: {section}.{key} {rule}, got {value!r}")


def _require_choice(value: Any, choices: tuple, section: str, key: str) -> None:
    _require(value in choices, section, key, f"must be one of {list(choices)}", value)


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Checks ``value`` against a dataclass field annotation, converting lists to tuples."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [arg for arg in args if arg is not type(None)]
        return _coerce(value, inner[0], key)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"params.yaml: {key} must be a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(item, args[0], key) for item in value)
        if len(value) != len(args):
            raise ValueError(
                f"params.yaml: {key} must be a list of {len(args)} values, got {value!r}"
            )
        return tuple(_coerce(item, arg, key) for item, arg in zip(value, args, strict=True))
    if annotation is bool:
        if not isinstance(value, bool):
            raise ValueError(f"params.yaml: {key} must be true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"params.yaml: {key} must be an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"params.yaml: {key} must be a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ValueError(f"params.yaml: {key} must be a string, got {value!r}")
        return value
    return value


def parse_section(name: str, raw: Any, cls: type | None = None) -> Any:
    """Parses one params.yaml section into its dataclass, rejecting unknown keys."""
    cls = cls or SECTIONS[name]
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ValueError(f"params.yaml: {name} must be a mapping of keys to values, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {field.name for field in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - fields)
    if unknown:
        raise ValueError(
            f"params.yaml: unknown key {name}.{unknown[0]}; "
            f"allowed keys: {', '.join(sorted(fields))}"
        )
    values = {key: _coerce(value, hints[key], f"{name}.{key}") for key, value in raw.items()}
    config = cls(**values)
    config.validate(name)
    return config


def parse_params(raw: Any) -> Params:
    if not isinstance(raw, dict):
        raise ValueError("params.yaml: the file must hold a mapping of sections")
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise ValueError(
            f"params.yaml: unknown section {unknown[0]!r}; allowed sections: {', '.join(SECTIONS)}"
        )
    params = Params(**{name: parse_section(name, raw.get(name)) for name in SECTIONS})
    params.validate()
    return params


def load_params(path: str | Path = "params.yaml") -> Params:
    """Reads and validates the whole params file; raises ValueError naming the bad key."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: params file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML ({error.__class__.__name__})") from error
    return parse_params(raw)


def to_dict(config: Any) -> dict[str, Any]:
    """Plain-dict form of a config dataclass, lists instead of tuples, for JSON and MLflow."""

    def convert(value: Any) -> Any:
        if isinstance(value, tuple):
            return [convert(item) for item in value]
        return value

    return {key: convert(value) for key, value in dataclasses.asdict(config).items()}
