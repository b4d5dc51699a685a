"""Typed, validated view of params.yaml.

Each section of params.yaml is parsed once into a frozen pydantic model. Unknown keys, wrong
types and out-of-range values raise ``UserError`` (a ``ValueError``) with one line naming the
dotted key, so a typo fails in seconds instead of after an hour of training.

Training settings are written once: the ``train`` section holds what every trained model
shares, and each ``train_<model>`` section and ``tune_unet.train`` hold only what differs.
Parsing merges them, so every :class:`TrainConfig` here is the resolved one a model trains with.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn, TypeVar

import pydantic
import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError, PydanticKnownError

from denoiselab import vocabulary
from denoiselab.errors import UserError
from denoiselab.vocabulary import CLASSICAL_METHODS

# Network architectures, the `model` key of a training section.
Architecture = Literal["cae", "unet"]
Loss = Literal["bce", "mse", "l1"]
# auto: mixed_bfloat16 where the hardware computes bfloat16 natively, else float32
# (see denoiselab.precision).
Precision = Literal["auto", "float32", "mixed_bfloat16"]
ClassicalMethod = Literal[CLASSICAL_METHODS]
LrSchedule = Literal["constant", "cosine"]
# How a grayscale model denoises a colour image (see denoiselab.denoise).
ColourTransform = Literal["opponent", "per_channel", "blend"]

Distribution = Literal["none", "mirrored", "multi_worker"]
# Each section named train_<model> trains one model of dvc.yaml's train stage (the catalogue,
# denoiselab.catalogue, lists them). Parsing knows them by this prefix rather than from the
# catalogue, so that no training stage depends on the catalogue's labels and colours.
MODEL_SECTION_PREFIX = "train_"
# Optuna storages: an RDB URL (sqlite for one machine, PostgreSQL or MySQL for several) or a
# journal file, which several processes on one machine (or a shared disk) can append to.
STORAGE_SCHEMES = ("sqlite", "postgresql", "mysql")
JOURNAL_SUFFIX = ".log"
STORAGE_RULE = (
    "must be null (optuna.db at the repository root), a URL such as sqlite:///optuna.db or "
    f"postgresql://user@host/db, or an Optuna journal file ending in {JOURNAL_SUFFIX}"
)


def _refuse_bool(value: Any) -> Any:
    # A literal 1 would otherwise accept YAML's true, which equals 1 in Python.
    if isinstance(value, bool):
        raise PydanticKnownError("int_type")
    return value


# Flips and rotations of the image averaged at inference: 1 (none), 2, 4 or 8.
SelfEnsemble = Annotated[Literal[1, 2, 4, 8], BeforeValidator(_refuse_bool)]


def interval(
    low: float, high: float, open_low: bool = False, open_high: bool = False, note: str = ""
) -> Any:
    """Bounds ``low <= value <= high``, either end open; the message names the whole interval
    (pydantic's own bounds would name only the end that failed)."""
    rule = f"must be in {'(' if open_low else '['}{low}, {high}{')' if open_high else ']'} {note}"

    def check(value: float) -> float:
        above = value > low if open_low else value >= low
        below = value < high if open_high else value <= high
        if not (above and below):
            raise PydanticCustomError("params", "{rule}", {"rule": rule.rstrip()})
        return value

    return AfterValidator(check)


Channels = Annotated[Literal[1, 3], BeforeValidator(_refuse_bool)]
Positive = Annotated[int, Field(gt=0)]
PositiveNumber = Annotated[float, Field(gt=0)]
Filters = Annotated[int, interval(1, 256)]
Depth = Annotated[int, interval(1, 6)]
Item = TypeVar("Item")
# YAML gives lists and the configs hold tuples, so these fields alone convert; their items
# stay strict.
ListOf = Annotated[tuple[Item, ...], Field(strict=False)]
ChoicesOf = Annotated[tuple[Item, ...], Field(strict=False, min_length=1)]


def _check_range(value: tuple[float, float]) -> tuple[float, float]:
    low, high = value
    if not 0 <= low <= high < 1 or high == 0:
        rule = "must be [low, high] with 0 <= low <= high < 1 and high > 0"
        raise PydanticCustomError("params", "{rule}", {"rule": rule})
    return value


NoiseRange = Annotated[tuple[float, float], Field(strict=False), AfterValidator(_check_range)]


def _refuse(key: str, rule: str, value: Any) -> NoReturn:
    """Fails a cross-field rule; ``key`` is dotted, relative to the model being validated."""
    raise PydanticCustomError("params", "{rule}", {"key": key, "rule": rule, "value": value})


def _require_divisible(
    key: str, size: int | None, depths: Iterable[int], depth_key: str = "depth", where: str = ""
) -> None:
    """A crop or patch must halve cleanly at every level of every network it will be used with
    (``depths`` are their downsamplings: ``depth_key``, plus one with pixel_unshuffle);
    ``where`` says which networks, for the message."""
    for depth in depths:
        if size is not None and size % 2**depth:
            why = f"2**{depth_key}, times 2 with pixel_unshuffle"
            rule = f"must be divisible by {2**depth}{where} ({why})"
            _refuse(key, rule, size)


class Section(BaseModel):
    """A params.yaml section: frozen, strict about types, and refusing unknown keys."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


Sigma = Annotated[float, interval(0, 1, open_low=True, note="(images are in [0, 1])")]


class BaseConfig(Section):
    seed: int = 0
    noise_sigma: Sigma = 0.1
    deterministic: bool = False


class PrepareConfig(Section):
    source: Literal["builtin", "folder"] = "builtin"
    folder: str | None = None
    test_images: ListOf[str] = ()
    val_images: ListOf[str] = ()
    # The colour model's split, among the colour images of the source (gray ones are left out).
    colour_test_images: ListOf[str] = ()
    colour_val_images: ListOf[str] = ()
    test_fraction: Annotated[float, interval(0, 1, open_high=True)] = 0.2
    val_fraction: Annotated[float, interval(0, 1, open_high=True)] = 0.1
    patch_size: Annotated[int, Field(ge=8)] = 64
    stride: Positive = 32
    max_train_patches: Positive = 20000
    max_val_patches: Positive = 512
    # Training patches whose pixels' standard deviation is below this are dropped: flat patches
    # (a black surround, an empty sky) teach a denoiser no detail. 0 keeps every patch.
    min_patch_std: Annotated[float, interval(0, 0.5)] = 0.0
    # At most this many training patches from any one image (a seeded sample of its grid), so
    # that one large image does not fill the training set; None keeps every patch.
    max_patches_per_image: Positive | None = None
    # Source images left out of every split: images that are no clean target (their own noise,
    # a sensor's or a scan's, would teach a denoiser to keep noise of that kind). Listed in the
    # manifest; a name the source lacks is refused.
    exclude_images: ListOf[str] = ()
    on_bad_image: Literal["skip", "fail"] = "skip"

    @model_validator(mode="after")
    def _check(self) -> PrepareConfig:
        if self.source == "folder" and not self.folder:
            _refuse("folder", "must name a folder", self.folder)
        for key in ("test_images", "val_images", "colour_test_images", "colour_val_images"):
            both = sorted(set(getattr(self, key)) & set(self.exclude_images))
            if both:
                _refuse(
                    "exclude_images",
                    f"must not name images of {key} ({', '.join(both)})",
                    list(self.exclude_images),
                )
        if self.test_fraction + self.val_fraction >= 1:
            rule = "plus test_fraction must leave images for training"
            _refuse("val_fraction", rule, self.val_fraction)
        return self


def _sweep(levels: tuple[float, ...]) -> tuple[float, ...]:
    return tuple(sorted(set(levels)))


SweepLevels = Annotated[ChoicesOf[Sigma], AfterValidator(_sweep)]


class SweepConfig(Section):
    """Noise levels every method is scored at, per dataset (docs/protocol.md)."""

    gray: SweepLevels = (0.05, 0.1, 0.15, 0.2)
    colour: SweepLevels = (0.05, 0.1, 0.2)


class AddNoiseConfig(Section):
    seed: int = 0
    sweep: SweepConfig = SweepConfig()


class NetworkConfig(Section):
    """The network's shape, which a model's config and its training config share: a field
    added here is set in params.yaml's training sections and saved with every model."""

    model: Architecture = "unet"
    base_filters: Filters = 16
    depth: Depth = 3
    residual: bool = True
    batch_norm: bool = False
    # False: bias-free convolutions (Mohan et al., ICLR 2020), which generalise across noise
    # levels; True keeps biases (the default of models saved before the key existed).
    bias: bool = True
    # True (U-Net only): the first layer is a 2x2 stride-2 convolution, a pixel-unshuffle
    # followed by a 1x1 convolution (FFDNet), and the last a 2x2 stride-2 transpose
    # convolution, a 1x1 convolution followed by a pixel-shuffle, so every layer between runs
    # on a quarter of the pixels: a quarter of the FLOPs at the same width.
    pixel_unshuffle: bool = False
    # True (U-Net only): the network also takes the noise level, as one more input channel
    # that holds it everywhere (FFDNet's noise level map). Training gives it each patch's
    # sigma; denoising, the level estimated from the image itself (noise_level.estimate_sigma), so
    # the model is still never told the level.
    noise_map: bool = False

    @property
    def downsamplings(self) -> int:
        """How many times the network halves the image: its input's sides must divide by
        ``2**downsamplings`` (inference pads to that and crops back)."""
        return vocabulary.downsamplings(self.depth, self.pixel_unshuffle)

    @model_validator(mode="after")
    def _check_network(self) -> NetworkConfig:
        if self.pixel_unshuffle and self.model != "unet":
            _refuse("pixel_unshuffle", "must be false for the cae model", self.pixel_unshuffle)
        if self.noise_map and self.model != "unet":
            _refuse("noise_map", "must be false for the cae model", self.noise_map)
        return self


class ModelConfig(NetworkConfig):
    """Everything needed to rebuild a model; saved next to its weights.

    ``precision`` may be ``auto`` while training is set up; a saved config.json records the
    precision the model was trained in.
    """

    channels: Channels = 1
    precision: Precision = "float32"

    @property
    def input_channels(self) -> int:
        """The channels the network takes: the image's, and the noise level map's with
        ``noise_map``."""
        return self.channels + int(self.noise_map)


class TrainConfig(NetworkConfig):
    """How one model is trained: its network and everything that shapes its training."""

    loss: Loss = "mse"
    learning_rate: Annotated[float, interval(0, 1, True, True)] = 1e-3
    lr_schedule: LrSchedule = "cosine"
    batch_size: Positive = 32
    epochs: Positive = 10
    steps_per_epoch: Positive = 100
    crop_size: Annotated[int, Field(ge=8)] | None = None
    fresh_noise: bool = True
    # [low, high]: blind training, each patch's sigma drawn uniformly from the range; null:
    # every patch at base.noise_sigma.
    noise_sigma_range: NoiseRange | None = None
    # How a blind model's sigma is drawn from noise_sigma_range: low + (high - low) * u**power
    # with u uniform in [0, 1]; 1 is uniform, above 1 draws more low levels, where one blind
    # model trails most (Gnanasambandam and Chan, ICML 2020).
    noise_sigma_power: Annotated[float, interval(0.25, 4)] = 1.0
    # A blind model's loss on each patch weighted by (0.1 / max(sigma, 0.02)) ** this: above 0
    # the low levels, whose errors are smallest, count for more (0: every patch alike; see
    # training.loss_weight).
    loss_level_power: Annotated[float, interval(0, 2)] = 0.0
    augment: bool = True
    jit_compile: bool = False
    precision: Precision = "auto"
    distribution: Distribution = "none"
    steps_per_execution: Positive = 1

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.loss == "bce" and self.residual:
            rule = "'bce' needs outputs in [0, 1]; use mse or l1 with residual: true"
            _refuse("loss", rule, self.loss)
        _require_divisible("crop_size", self.crop_size, (self.downsamplings,))
        if self.batch_norm and not self.bias:
            rule = "must be true with batch_norm: true (batch normalisation adds a shift)"
            _refuse("bias", rule, self.bias)
        if self.noise_map and self.noise_sigma_range is None:
            rule = "needs noise_sigma_range (a model trained at one level has nothing to map)"
            _refuse("noise_map", rule, self.noise_map)
        if self.loss_level_power and self.noise_sigma_range is None:
            rule = "needs noise_sigma_range (a model trained at one level has no levels to weigh)"
            _refuse("loss_level_power", rule, self.loss_level_power)
        if self.noise_sigma_range is not None and not self.fresh_noise:
            rule = "needs fresh_noise: true (the noise is drawn while training)"
            _refuse("noise_sigma_range", rule, self.noise_sigma_range)
        return self

    def architecture(self, channels: int) -> ModelConfig:
        """The model this config trains, for images of ``channels`` channels: every other field
        of :class:`ModelConfig` comes from here."""
        shared = ModelConfig.model_fields.keys() - {"channels"}
        return ModelConfig(channels=channels, **self.model_dump(include=shared))


class SearchConfig(Section):
    """The search space: each trial draws these keys of its training config, the learning rate
    log-uniformly from [low, high], the others from their lists of choices."""

    learning_rate: ListOf[float] = (3e-4, 3e-3)
    base_filters: ChoicesOf[Filters] = (16, 24, 32)
    depth: ChoicesOf[Depth] = (2, 3)
    batch_size: ChoicesOf[Positive] = (16, 32)
    loss: ChoicesOf[Loss] = ("mse", "l1")
    batch_norm: ChoicesOf[bool] = (False,)


# Training keys every trial and the final run set themselves: the epochs from trial_epochs or
# final_epochs, the steps per epoch from the compute budget; the rest of SearchConfig is drawn.
TRIAL_SET_KEYS = ("epochs", "steps_per_epoch")


class TuneConfig(Section):
    n_trials: Positive = 8
    trial_epochs: Positive = 3
    # Budgets in seconds of training on the reference machine, turned into steps with the
    # training throughput measured there for the drawn width (reference_gflops), so that every
    # trial costs about the same time and a width the hardware runs faster gets more FLOPs.
    trial_budget_s: PositiveNumber = 50.0
    search: SearchConfig = SearchConfig()
    final_epochs: Positive = 20
    final_budget_s: PositiveNumber = 500.0
    # Training GFLOP/s by base width (a U-Net, batch 16, crop 48, float32) on the reference
    # machine; a width between two entries is interpolated on a log scale, one outside them
    # takes the nearest entry.
    reference_gflops: Annotated[
        dict[Filters, PositiveNumber], Field(strict=False, min_length=1)
    ] = {16: 100.0}
    warm_start: bool = True
    storage: str | None = None
    study_name: str = "unet_tune"
    # The training config of the trials and the final run, before the drawn keys and those of
    # TRIAL_SET_KEYS are set; params.yaml's train, with tune_unet.train's changes.
    train: TrainConfig = TrainConfig()

    @property
    def search_downsamplings(self) -> list[int]:
        """The downsamplings of every network the search may build (see
        :attr:`NetworkConfig.downsamplings`)."""
        return [depth + int(self.train.pixel_unshuffle) for depth in self.search.depth]

    @model_validator(mode="after")
    def _check(self) -> TuneConfig:
        rate = self.search.learning_rate
        if len(rate) != 2 or not 0 < rate[0] <= rate[1] < 1:
            rule = "must be [low, high] with 0 < low <= high < 1"
            _refuse("search.learning_rate", rule, rate)
        if "bce" in self.search.loss and self.train.residual:
            rule = "may not hold 'bce' while train.residual is true (bce needs outputs in [0, 1])"
            _refuse("search.loss", rule, self.search.loss)
        _require_divisible(
            "train.crop_size",
            self.train.crop_size,
            self.search_downsamplings,
            where=" for every search.depth choice",
        )
        if self.storage is not None and not is_storage(self.storage):
            _refuse("storage", STORAGE_RULE, self.storage)
        if not self.study_name.strip():
            _refuse("study_name", "must be a non-empty name", self.study_name)
        return self


class ClassicalConfig(Section):
    """The classical baselines. Settings with several candidates are chosen per noise level on
    the whole validation images, as multiples of that level's sigma."""

    methods: ListOf[ClassicalMethod] = CLASSICAL_METHODS
    tv_weight_scale: ChoicesOf[PositiveNumber] = (0.6, 0.8, 1.0, 1.2)
    nl_means_h_scale: ChoicesOf[PositiveNumber] = (0.6, 0.8, 1.0)
    bm3d_sigma_scale: ChoicesOf[PositiveNumber] = (1.0,)


class EvaluateConfig(Section):
    register_models: bool = True


class DenoiseConfig(Section):
    """How every model denoises an image, wherever it runs: the evaluate stage scores it so,
    logs it with each model into MLflow (what ``make serve`` computes), and ``denoiselab
    denoise`` reads it from the repository's params.yaml."""

    colour_transform: ColourTransform = "opponent"
    self_ensemble: SelfEnsemble = 1
    # With colour_transform blend: the opponent result's weight (the per-channel one's is the
    # rest).
    opponent_weight: Annotated[float, interval(0, 1)] = 0.5
    # A model with a noise level map gets 0.1 * (read / 0.1) ** level_exponent for the level
    # read from the image (denoise.Settings.map_level); 1 = the level as read.
    level_exponent: Annotated[float, interval(0.5, 2)] = 1.0
    # A grayscale model's two opponent chrominance planes are stretched by this about their
    # mid-range before it denoises them, and shrunk back after (denoise.Settings); 1 = as they
    # are.
    chroma_gain: Annotated[float, interval(0.25, 4)] = 1.0
    # A model with a noise level map denoises its output again at half, then a quarter, ... of
    # the resolution, told these fractions of the level read, and each change goes back at
    # full resolution (denoise.coarse_passes); empty = no such pass.
    coarse_pass: Annotated[ListOf[Annotated[float, interval(0, 1)]], Field(max_length=4)] = ()


class PlotConfig(Section):
    n_samples: Positive = 4
    dpi: Annotated[int, Field(ge=30)] = 110


class Params(Section):
    """The whole params file: the sections below, plus one ``train_<model>`` section
    (a :class:`TrainConfig`) per model of dvc.yaml's train stage."""

    model_config = ConfigDict(strict=True, extra="allow", frozen=True)
    __pydantic_extra__: dict[str, TrainConfig] = Field(init=False)

    base: BaseConfig = BaseConfig()
    prepare: PrepareConfig = PrepareConfig()
    add_noise: AddNoiseConfig = AddNoiseConfig()
    train: TrainConfig = TrainConfig()
    tune_unet: TuneConfig = TuneConfig()
    classical: ClassicalConfig = ClassicalConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    denoise: DenoiseConfig = DenoiseConfig()
    plot: PlotConfig = PlotConfig()

    @model_validator(mode="before")
    @classmethod
    def _inherit_train(cls, raw: Any) -> Any:
        """Merges each model's section and tune_unet.train over ``train``. The ``train`` field
        is validated first, so a bad shared value is named as ``train.<key>``."""
        if not isinstance(raw, dict):
            return raw
        for name in raw:
            if name not in cls.model_fields and not name.startswith(MODEL_SECTION_PREFIX):
                raise PydanticCustomError("unknown_section", "unknown section", {"name": name})
        shared = raw.get("train", {})
        tune = raw.get("tune_unet", {})
        if not isinstance(shared, dict) or not isinstance(tune, dict):
            return raw
        resolved = dict(raw)
        for name, own in raw.items():
            if name.startswith(MODEL_SECTION_PREFIX) and isinstance(own, dict):
                resolved[name] = {**shared, **own}
        own = tune.get("train") or {}
        if isinstance(own, dict):
            for key in own:
                if key in TRIAL_SET_KEYS or key in SearchConfig.model_fields:
                    rule = "is set by each trial (tune_unet.search and trial_epochs/final_epochs)"
                    _refuse(f"tune_unet.train.{key}", rule, own[key])
            resolved["tune_unet"] = {**tune, "train": {**shared, **own}}
        return resolved

    @property
    def model_sections(self) -> dict[str, TrainConfig]:
        """The resolved training config of each ``train_<model>`` section, by section name."""
        return dict(self.model_extra or {})

    def model_section(self, name: str) -> TrainConfig:
        sections = self.model_sections
        if name not in sections:
            raise UserError(
                f"params.yaml: no model section {name!r}; there are {', '.join(sections)}"
            )
        return sections[name]

    @model_validator(mode="after")
    def _check(self) -> Params:
        """Checks that need more than one section."""
        patch = self.prepare.patch_size
        exceeds = f"must not exceed prepare.patch_size = {patch}"
        for section, train in self.model_sections.items():
            if (train.crop_size or patch) > patch:
                _refuse(f"{section}.crop_size", exceeds, train.crop_size)
            depth_key = f"{section}.depth"
            _require_divisible("prepare.patch_size", patch, [train.downsamplings], depth_key)
        _require_divisible(
            "prepare.patch_size",
            patch,
            self.tune_unet.search_downsamplings,
            where=" for every tune_unet.search.depth choice",
        )
        crop = self.tune_unet.train.crop_size
        if (crop or 0) > patch:
            _refuse("tune_unet.train.crop_size", exceeds, crop)
        return self


# The project's wording for pydantic's error types; braces take values from the error's context.
RULES = {
    "int_type": "must be an integer",
    "float_type": "must be a number",
    "bool_type": "must be true or false",
    "string_type": "must be a string",
    "tuple_type": "must be a list",
    "model_type": "must be a mapping of keys to values",
    "literal_error": "must be {expected}",
    "greater_than": "must be greater than {gt}",
    "greater_than_equal": "must be at least {ge}",
    "too_short": "must list at least one value",
    "params": "{rule}",
}


def _user_error(error: pydantic.ValidationError, model: type[BaseModel], source: str) -> UserError:
    """The first problem pydantic found, as one line naming the dotted key."""
    problem = error.errors()[0]
    kind, ctx = problem["type"], problem.get("ctx", {})
    path = [*problem["loc"], *filter(None, ctx.get("key", "").split("."))]
    key = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path)[1:]
    if kind == "unknown_section":
        allowed = [*Params.model_fields, f"{MODEL_SECTION_PREFIX}<model>"]
        return UserError(
            f"{source}: unknown section {ctx['name']!r}; allowed sections: {', '.join(allowed)}"
        )
    if kind == "extra_forbidden":
        for part in path[:-1]:
            # A model's section is no field of Params: an extra, validated as a TrainConfig.
            field = model.model_fields.get(part)
            model = field.annotation if field is not None else TrainConfig
        allowed = list(model.model_fields)
        return UserError(
            f"{source}: unknown key {key}; allowed keys: {', '.join(sorted(allowed))}"
        )
    if kind == "literal_error" and "," in ctx["expected"]:
        rule = f"must be one of [{ctx['expected'].replace(' or ', ', ')}]"
    elif kind == "greater_than" and ctx["gt"] == 0:
        rule = "must be positive"
    else:
        rule = RULES[kind].format(**ctx) if kind in RULES else f"is not valid ({problem['msg']})"
    value = ctx.get("value", problem["input"])
    value = list(value) if isinstance(value, tuple) else value
    return UserError(f"{source}: {key + ' ' if key else ''}{rule}, got {value!r}")


Model = TypeVar("Model", bound=BaseModel)


def parse(model: type[Model], raw: Any, source: str = "params.yaml") -> Model:
    """Validates ``raw`` into ``model``; the first problem becomes a one-line ``UserError``."""
    try:
        return model.model_validate(raw)
    except pydantic.ValidationError as error:
        raise _user_error(error, model, source) from None


def is_storage(storage: str) -> bool:
    """Whether ``storage`` names an Optuna storage: an RDB URL or a journal file."""
    scheme, separator, _ = storage.partition("://")
    is_url = bool(separator) and scheme.partition("+")[0] in STORAGE_SCHEMES
    return is_url or storage.endswith(JOURNAL_SUFFIX)


def parse_params(raw: Any) -> Params:
    if not isinstance(raw, dict):
        raise UserError("params.yaml: the file must hold a mapping of sections")
    # A section with nothing under it reads as None in YAML and means all defaults.
    return parse(Params, {name: {} if value is None else value for name, value in raw.items()})


def load_params(path: str | Path = "params.yaml") -> Params:
    """Reads and validates the whole params file; raises UserError naming the bad key."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: params file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise UserError(f"{path}: not valid YAML ({error.__class__.__name__})") from error
    return parse_params(raw)


def to_dict(config: BaseModel) -> dict[str, Any]:
    """Plain-dict form of a config, lists instead of tuples, for JSON and MLflow."""
    return config.model_dump(mode="json")


def flat_dict(config: BaseModel, prefix: str) -> dict[str, Any]:
    """:func:`to_dict` with every leaf under a dotted key starting with ``prefix``, for MLflow
    params (``train.learning_rate``, ``tune.search.depth``)."""

    def leaves(values: dict[str, Any], path: str) -> dict[str, Any]:
        flat: dict[str, Any] = {}
        for key, value in values.items():
            if isinstance(value, dict):
                flat.update(leaves(value, f"{path}.{key}"))
            else:
                flat[f"{path}.{key}"] = value
        return flat

    return leaves(to_dict(config), prefix)
