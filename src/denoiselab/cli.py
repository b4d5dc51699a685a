"""The ``denoiselab`` command."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import shlex
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from denoiselab import paths
from denoiselab.errors import UserError
from denoiselab.vocabulary import CLASSICAL_METHODS

if TYPE_CHECKING:
    import numpy as np

    from denoiselab import denoise, model_store, selection

DENOISE_DESCRIPTION = """\
Denoises images and writes each as OUTDIR/<name>.png with the input's size, colour mode
and bit depth: grayscale stays grayscale, RGB stays RGB, RGBA keeps its alpha unchanged,
16-bit stays 16-bit. The models are blind: trained on Gaussian noise of every level up to
sigma about 0.2 on [0, 1] (about 50 on 0-255), they need no noise level.
Without --model, each image goes to the champion of its kind, loaded only when an image
of that kind comes: grayscale images (L, LA, 16-bit gray) to champion (else
models/unet_tuned), colour images (RGB, RGBA, palette, CMYK) to champion_rgb (else
models/unet_rgb, else the grayscale champion); stderr names the model of each kind.
--model uses one model for every image. A grayscale model denoises a colour image plane by
plane, in the opponent colour space (one luminance, two chrominance planes), channel by
channel, or both, averaged (--colour-transform); a colour model gets a grayscale image
repeated to 3 channels and its output converted back to grayscale. --colour-transform,
--opponent-weight, --level-exponent, --chroma-gain and --self-ensemble default to the
denoise section of the repository's params.yaml, what the evaluate stage scored.
Palette and CMYK images come out as RGB. The ICC profile and EXIF orientation carry over.
Large images are denoised in overlapping tiles, so memory stays bounded.
Exit status: 0 when every image was written, 1 when any input could not be read or
written (each named on stderr), 2 for a usage or model error (a model that cannot be
loaded stops the run)."""

MODEL_HELP = (
    "one model for every image, instead of the champion of each image's kind: champion (the "
    "grayscale model best on validation in the MLflow registry, else models/unet_tuned), "
    "champion_rgb (the colour one, else models/unet_rgb), cae, unet, unet_tuned, unet_rgb "
    "(registry alias, else models/<name>), a model folder or .keras file, or an MLflow model "
    "URI such as models:/denoiselab@champion or runs:/RUN_ID/model"
)
# What stderr calls the images of each channel count (without alpha) and its champion.
KIND_NAMES = {1: "grayscale", 3: "colour"}


def _profile_args(args: argparse.Namespace) -> int:
    from denoiselab import profiles

    print(shlex.join(profiles.dvc_set_args(profiles.load_profile(args.profile))))
    return 0


def _check_params(args: argparse.Namespace) -> int:
    from denoiselab.config import load_params

    load_params(args.params)
    print(f"{args.params}: valid")
    return 0


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Hides what C++ libraries print straight to file descriptor 2 (TensorFlow's start-up
    lines ignore TF_CPP_MIN_LOG_LEVEL), so stderr carries only this command's own lines."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _import_keras() -> None:
    with _native_stderr_silenced():
        import keras  # noqa: F401


def _load(spec: str, aliases: dict[str, str] | None = None) -> model_store.Denoiser:
    """Resolves and loads one ``--model``; asks the registry only for an alias name."""
    from denoiselab import registry, selection

    if aliases is None:
        aliases = registry.registered_aliases() if spec in selection.ALIASES else {}
    source = selection.locate_model(spec, paths.repo_root(), aliases)
    if source.note:
        print(f"denoiselab: {source.note}", file=sys.stderr)
    return _load_source(source)


def _load_source(source: selection.ModelSource) -> model_store.Denoiser:
    """Loads a located model, importing Keras only when the model needs it."""
    from denoiselab import selection

    if not selection.runs_without_keras(source):
        _import_keras()
    # MLflow's download bar would sit above ours; a model loads from a local store in a blink.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    return selection.load_denoiser(source)


def _settings(args: argparse.Namespace) -> denoise.Settings:
    """How the models denoise: --colour-transform and --self-ensemble where given, else the
    ``denoise`` section of the repository's params.yaml (what the evaluate stage scored and
    logged with the models), else the defaults."""
    import yaml

    from denoiselab import denoise

    params_file = paths.repo_root() / "params.yaml"
    values = {}
    if params_file.is_file():
        try:
            raw = yaml.safe_load(params_file.read_text()) or {}
        except (OSError, yaml.YAMLError) as error:
            raise UserError(f"{params_file}: cannot read ({error})") from None
        section = raw.get("denoise") if isinstance(raw, dict) else None
        if section is not None and not isinstance(section, dict):
            raise UserError(f"{params_file}: denoise: must be a mapping of keys to values")
        values = dict(section or {})
    for key in (
        "colour_transform",
        "self_ensemble",
        "opponent_weight",
        "level_exponent",
        "chroma_gain",
        "coarse_pass",
    ):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    settings = denoise.Settings.from_mapping(values)
    if args.opponent_weight is not None and "opponent_weight" not in settings.in_effect():
        print(
            f"warning: --opponent-weight has no effect with colour transform "
            f"{settings.colour_transform}; add --colour-transform blend",
            file=sys.stderr,
        )
    return settings


# Options that act only on a model with a noise level map input: the level it is told.
LEVEL_OPTIONS = ("level_exponent", "coarse_pass")


def _warn_level_options(args: argparse.Namespace, model: str) -> None:
    """Warns of each option given that ``model``, which takes no noise level map, ignores."""
    for key in LEVEL_OPTIONS:
        if getattr(args, key):  # None = not given; [] = --coarse-pass none
            option = "--" + key.replace("_", "-")
            print(
                f"warning: {option} has no effect with {model}, which takes no noise level map",
                file=sys.stderr,
            )


def _image_channels(pixels: np.ndarray) -> int:
    """The channels of an image file's pixels without alpha: 1 for grayscale (HW, or HWC with
    gray or gray + alpha), 3 for colour (RGB or RGBA; palette and CMYK are read as such)."""
    return 3 if pixels.ndim == 3 and pixels.shape[-1] in (3, 4) else 1


class _ChampionsByKind:
    """The model for each image when ``--model`` is not given: the champion of the image's
    kind, grayscale or colour (see :func:`denoiselab.selection.choose_champion`), located and
    loaded the first time an image of that kind needs it, so a folder of grayscale images never
    touches the colour model.

    ``report`` gets one line per kind, the first time an image of that kind comes, naming
    the model that denoises its images. Colour images fall back to the grayscale champion,
    plane by plane, when there is neither a colour champion nor the folder standing in
    for it.
    """

    def __init__(self, report: Callable[[str], None]) -> None:
        self._report = report
        self._registry: tuple[Path, dict[str, str]] | None = None
        self._champions: dict[str, tuple[selection.ModelSource, model_store.Denoiser]] = {}
        self._by_kind: dict[int, model_store.Denoiser] = {}

    def for_pixels(self, pixels: np.ndarray) -> model_store.Denoiser:
        """The loaded model that denoises an image file's pixels (HW or HWC)."""
        channels = _image_channels(pixels)
        if channels not in self._by_kind:
            self._by_kind[channels] = self._choose(channels)
        return self._by_kind[channels]

    def _choose(self, channels: int) -> model_store.Denoiser:
        from denoiselab import model_store, registry, selection

        root, aliases = self._root_and_aliases()
        choice = selection.choose_champion(
            channels, aliases, lambda name: model_store.has_folder(root, name)
        )
        source, denoiser = self._champion(choice.alias)
        kind = KIND_NAMES[channels]
        if choice.borrowed:
            alias = registry.CHAMPIONS[channels]
            folder = selection.fallback_folder(alias, root)
            self._report(
                f"denoiselab: {kind} images: no {alias} in the MLflow model registry and no "
                f"{folder}; using the grayscale model on the planes of each colour image "
                f"({source.location})"
            )
        else:
            # A fallback's note names the folder and says why; otherwise the alias and where
            # its model was loaded from.
            used = source.note or f"{choice.alias} ({source.location})"
            self._report(f"denoiselab: {kind} images: {used}")
        return denoiser

    def _champion(self, alias: str) -> tuple[selection.ModelSource, model_store.Denoiser]:
        """The model of champion alias ``alias``, located and loaded at most once."""
        from denoiselab import selection

        if alias not in self._champions:
            root, aliases = self._root_and_aliases()
            source = selection.locate_model(alias, root, aliases)
            self._champions[alias] = (source, _load_source(source))
        return self._champions[alias]

    def _root_and_aliases(self) -> tuple[Path, dict[str, str]]:
        """The repository root and the registry's aliases, asked once, when first needed."""
        from denoiselab import registry

        if self._registry is None:
            self._registry = (paths.repo_root(), registry.registered_aliases())
        return self._registry


@contextlib.contextmanager
def _progress(jobs: list) -> Iterator[tuple[Iterator, Callable[[str], None]]]:
    """The jobs to iterate and a function that prints a line to stderr: with a progress bar
    for several jobs, above which the lines print, and without one for a single job, which
    then does without importing tqdm (its import, with importlib.metadata, takes about 40 ms
    of a 1 MP photo's 1.5 s)."""
    if len(jobs) < 2:
        yield iter(jobs), lambda line: print(line, file=sys.stderr)
        return
    from tqdm import tqdm

    with tqdm(jobs, unit="image", file=sys.stderr) as progress:
        yield iter(progress), lambda line: progress.write(line, file=sys.stderr)


def _denoise(args: argparse.Namespace) -> int:
    from denoiselab import denoise, images

    settings = _settings(args)
    jobs, problems = images.plan_jobs(args.inputs, args.output_dir)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if not jobs:
        return 1
    # --model is loaded before any image, so a bad one stops the run before it writes.
    chosen = _load(args.model) if args.model is not None else None
    if chosen is not None and not chosen.noise_map:
        _warn_level_options(args, args.model)

    failures = len(problems)
    with _progress(jobs) as (progress, report):
        champions = _ChampionsByKind(report)
        for job in progress:
            try:
                image = images.read_image(job.source)
            except images.ImageReadError as error:
                report(f"error: {error}")
                failures += 1
                continue
            if image.note:
                report(f"warning: {job.source}: {image.note}")
            denoiser = chosen if chosen is not None else champions.for_pixels(image.pixels)
            try:
                pixels = denoise.denoise_pixels(denoiser, image.pixels, args.tile_size, settings)
                images.write_png(job.target, dataclasses.replace(image, pixels=pixels))
            except OSError as error:
                report(f"error: {job.target}: cannot write ({error})")
                failures += 1
    return 1 if failures else 0


def _evaluate(args: argparse.Namespace) -> int:
    _import_keras()
    from denoiselab import files, images, registry, scoring, selection

    settings = _settings(args)
    found = images.list_images(args.images) if args.images.is_dir() else []
    if not found:
        raise UserError(f"{args.images}: not a folder of PNG, JPEG, TIFF or BMP images")
    clean, failures = {}, 0
    for path in found:
        try:
            clean[path.name] = images.to_float(images.read_image(path).pixels)
        except images.ImageReadError as error:
            print(f"error: {error}", file=sys.stderr)
            failures += 1
    if not clean:
        return 1
    specs = args.models or []
    aliases = None
    if not specs or any(spec in selection.ALIASES for spec in specs):
        aliases = registry.registered_aliases()
    if not specs:
        specs = selection.default_evaluation_models(paths.repo_root(), aliases)
    denoisers = {spec: _load(spec, aliases or {}) for spec in dict.fromkeys(specs)}
    results = scoring.score_models(
        clean,
        denoisers,
        args.sigma,
        args.seed,
        args.tile_size,
        tuple(args.classical),
        settings,
    )
    print(scoring.format_scores(results))
    if args.json:
        report = {
            "sigma": args.sigma,
            "seed": args.seed,
            "models": {spec: denoiser.location for spec, denoiser in denoisers.items()},
            "denoise": settings.as_dict(),
            "scores": results,
        }
        files.write_json(args.json, report)
    return 1 if failures else 0


def _tune_worker(args: argparse.Namespace) -> int:
    from denoiselab.config import STORAGE_RULE, is_storage, load_params

    if args.storage is not None and not is_storage(args.storage):
        raise UserError(f"--storage {STORAGE_RULE}, got {args.storage!r}")
    _import_keras()
    from denoiselab import runner, studies, tuning

    params = load_params(args.params)
    tune, base = params.tune_unet, params.base
    data = runner.load_training_data(args.prepared, args.noisy)
    data["val_images"] = tuning.load_validation_images(args.prepared, args.noisy)
    root = paths.repo_root()
    try:
        study = tuning.study_for(
            tune, base, data["manifest"]["data_hash"], root, args.storage, args.study
        )
        ran = tuning.work(study, tune, base, data, root, args.n_trials)
    except ConnectionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finished = studies.count_finished(study)
    print(f"ran trials {ran}; study {study.study_name} holds {finished} finished trials")
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _number_in(low: float, high: float) -> Callable[[str], float]:
    """An argparse type: a number in [low, high]."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be a number in [{low}, {high}], got {text}")
        return value

    return parse


def _fractions(text: str) -> list[float]:
    """An argparse type: comma-separated numbers in [0, 1], at most MAX_COARSE_PASSES of them;
    ``none`` (or nothing) = none."""
    from denoiselab.denoise import MAX_COARSE_PASSES

    if text.strip().lower() in ("", "none"):
        return []
    values = [_number_in(0, 1)(part.strip()) for part in text.split(",")]
    if len(values) > MAX_COARSE_PASSES:
        raise argparse.ArgumentTypeError(
            f"at most {MAX_COARSE_PASSES} comma-separated fractions, got {text}"
        )
    return values


def _add_settings_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--colour-transform",
        choices=("opponent", "per_channel", "blend"),
        help="how a grayscale model denoises a colour image: opponent (luminance and two "
        "chrominance planes), per_channel, or blend (both, averaged, sharing the "
        "--self-ensemble views) "
        "(default: params.yaml's denoise.colour_transform)",
    )
    command.add_argument(
        "--opponent-weight",
        type=_number_in(0, 1),
        help="with --colour-transform blend, the opponent result's weight in [0, 1] "
        "(default: params.yaml's denoise.opponent_weight)",
    )
    command.add_argument(
        "--level-exponent",
        type=_number_in(0.5, 2),
        help="a model with a noise level map gets 0.1 * (read / 0.1) ** this for the level "
        "read from each image, in [0.5, 2]; 1 gives it the level as read "
        "(default: params.yaml's denoise.level_exponent)",
    )
    command.add_argument(
        "--chroma-gain",
        type=_number_in(0.25, 4),
        help="a grayscale model's two chrominance planes of a colour image are stretched by "
        "this about their mid-range before it denoises them, in [0.25, 4]; 1 leaves them as "
        "they are (default: params.yaml's denoise.chroma_gain)",
    )
    command.add_argument(
        "--coarse-pass",
        type=_fractions,
        metavar="FRACTIONS",
        help="a model with a noise level map denoises its output again at half, a quarter, "
        "... of the resolution, told these fractions of the level read: comma-separated, "
        "each in [0, 1], e.g. 0.1,0.06,0.06; none = no such pass "
        "(default: params.yaml's denoise.coarse_pass)",
    )
    command.add_argument(
        "--self-ensemble",
        type=int,
        choices=(1, 2, 4, 8),
        help="average the model over this many flips and rotations of each image, for that "
        "many times the time (default: params.yaml's denoise.self_ensemble)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="denoiselab", description="Learned image denoising.")
    commands = parser.add_subparsers(dest="command", required=True)

    profile = commands.add_parser(
        "profile-args", help="print `dvc exp run -S` arguments for a params profile"
    )
    profile.add_argument(
        "profile", help="a YAML file of dotted params keys, e.g. profiles/smoke.yaml"
    )
    profile.set_defaults(handler=_profile_args)

    check = commands.add_parser(
        "check-params", help="validate params.yaml in seconds, naming any bad key"
    )
    check.add_argument("params", nargs="?", default="params.yaml")
    check.set_defaults(handler=_check_params)

    denoise = commands.add_parser(
        "denoise",
        help="denoise image files (PNG, JPEG, TIFF, BMP) into PNGs",
        description=DENOISE_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    denoise.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    denoise.add_argument(
        "-o",
        "--output-dir",
        type=Path,
        required=True,
        metavar="OUTDIR",
        help="folder for the denoised PNGs (created if missing; input files are never replaced)",
    )
    denoise.add_argument("--model", help=MODEL_HELP)
    denoise.add_argument(
        "--tile-size",
        type=_positive_int,
        default=512,
        help="side of the tiles large images are split into; lower it to save memory",
    )
    _add_settings_arguments(denoise)
    denoise.set_defaults(handler=_denoise)

    evaluate = commands.add_parser(
        "evaluate",
        help="add noise to clean images, denoise, print PSNR/SSIM per image and mean",
        description="Scores models per docs/protocol.md on a folder of clean images: noise "
        "clip(clean + N(0, sigma)) with one generator per image, seeded with the seed, the "
        "image's file name and sigma, images converted to each model's channels (rgb2gray, "
        "alpha dropped).",
    )
    evaluate.add_argument("--images", type=Path, required=True, help="folder of clean images")
    evaluate.add_argument("--sigma", type=float, default=0.1, help="noise std on [0, 1]")
    evaluate.add_argument("--seed", type=int, default=0, help="noise seed, per image")
    evaluate.add_argument(
        "--models",
        nargs="+",
        metavar="MODEL",
        help="models to score, each as for `denoise --model` (default: champion, and "
        "champion_rgb when the registry has it; without a champion, each of cae, unet, "
        "unet_tuned, unet_rgb that exists)",
    )
    evaluate.add_argument(
        "--classical",
        nargs="+",
        default=[],
        choices=CLASSICAL_METHODS,
        metavar="METHOD",
        help="also score classical methods on the same noisy pixels: tv, wavelet, nl_means, "
        "bm3d (evaluation only; needs the eval extra)",
    )
    evaluate.add_argument("--json", type=Path, help="also write the scores to this JSON file")
    evaluate.add_argument("--tile-size", type=_positive_int, default=512, help=argparse.SUPPRESS)
    _add_settings_arguments(evaluate)
    evaluate.set_defaults(handler=_evaluate)

    worker = commands.add_parser(
        "tune-worker",
        help="run trials of the tune_unet search from another process or machine",
        description="Joins the tune_unet Optuna study in a shared storage and runs trials of "
        "it; the tune_unet stage then takes the best trial of the whole study. The study is "
        "the one the stage uses for the same params, data and code (its name gets their "
        "fingerprint appended), so a worker never mixes trials of another configuration.",
    )
    worker.add_argument(
        "--storage",
        help="Optuna storage: sqlite:///optuna.db (the default, at the repository root), "
        "postgresql://user:password@host/db for several machines, or a journal file *.log "
        "(default: tune_unet.storage)",
    )
    worker.add_argument("--study", help="study name (default: tune_unet.study_name)")
    worker.add_argument("--params", default="params.yaml")
    # The folders dvc.yaml passes to the tune_unet stage.
    worker.add_argument("--prepared", type=Path, default=paths.prepared_folder("gray"))
    worker.add_argument("--noisy", type=Path, default=paths.noisy_folder("gray"))
    worker.add_argument(
        "--n-trials",
        type=_positive_int,
        help="run at most this many trials (default: until the study holds "
        "tune_unet.n_trials finished trials)",
    )
    worker.set_defaults(handler=_tune_worker)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
