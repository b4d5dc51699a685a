"""The ``denoiselab`` command."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path

from denoiselab.config import CLASSICAL_METHODS
from denoiselab.errors import UserError

DENOISE_DESCRIPTION = """\
Denoises images (Gaussian noise, sigma about 0.1 on [0, 1]) and writes each as
OUTDIR/<name>.png with the input's size, colour mode and bit depth: grayscale stays
grayscale, RGB stays RGB, RGBA keeps its alpha unchanged, 16-bit stays 16-bit.
A grayscale model denoises each colour channel on its own; a colour model gets a
grayscale image repeated to 3 channels and its output converted back to grayscale.
Palette and CMYK images come out as RGB. The ICC profile and EXIF orientation carry over.
Large images are denoised in overlapping tiles, so memory stays bounded.
Exit status: 0 when every image was written, 1 when any input could not be read or
written (each named on stderr), 2 for a usage or model error."""

MODEL_HELP = (
    "champion (default; the registered model best on validation, else models/unet_tuned), "
    "champion_rgb (the colour champion), cae, unet, "
    "unet_tuned (registry alias, else models/<name>), a model folder or .keras file, or an "
    "MLflow model URI such as models:/denoiselab@champion or runs:/RUN_ID/model"
)


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


def _load(spec: str, aliases: dict[str, str] | None = None):
    """Resolves and loads one ``--model``; asks the registry only for an alias name."""
    from denoiselab import model_store, registry, tracking

    if aliases is None:
        aliases = registry.registered_aliases() if spec in model_store.ALIASES else {}
    source = model_store.locate_model(spec, tracking.repo_root(), aliases)
    if not model_store.runs_without_keras(source):
        _import_keras()
    # MLflow's download bar would sit above ours; a model loads from a local store in a blink.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if source.note:
        print(f"denoiselab: {source.note}", file=sys.stderr)
    return model_store.load_denoiser(source)


def _denoise(args: argparse.Namespace) -> int:
    from denoiselab import denoise, files, images

    jobs, problems = images.plan_jobs(args.inputs, args.output_dir)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if not jobs:
        return 1
    denoiser = _load(args.model)

    from tqdm import tqdm

    failures = len(problems)
    progress = tqdm(jobs, unit="image", file=sys.stderr, disable=len(jobs) < 2)
    for job in progress:
        try:
            image = images.read_image(job.source)
            if image.note:
                progress.write(f"warning: {job.source}: {image.note}", file=sys.stderr)
            pixels = denoise.denoise_pixels(denoiser, image.pixels, args.tile_size)
            images.write_png(job.target, dataclasses.replace(image, pixels=pixels))
        except files.ImageReadError as error:
            progress.write(f"error: {error}", file=sys.stderr)
            failures += 1
        except OSError as error:
            progress.write(f"error: {job.target}: cannot write ({error})", file=sys.stderr)
            failures += 1
    return 1 if failures else 0


def _evaluate(args: argparse.Namespace) -> int:
    _import_keras()
    from denoiselab import evaluation, files, images, model_store, registry, tracking

    paths = files.list_images(args.images) if args.images.is_dir() else []
    if not paths:
        raise UserError(f"{args.images}: not a folder of PNG, JPEG, TIFF or BMP images")
    clean, failures = {}, 0
    for path in paths:
        try:
            clean[path.name] = files.to_float(images.read_image(path).pixels)
        except files.ImageReadError as error:
            print(f"error: {error}", file=sys.stderr)
            failures += 1
    if not clean:
        return 1
    specs = args.models or []
    aliases = None
    if not specs or any(spec in model_store.ALIASES for spec in specs):
        aliases = registry.registered_aliases()
    if not specs:
        specs = model_store.default_evaluation_models(tracking.repo_root(), aliases)
    denoisers = {spec: _load(spec, aliases or {}) for spec in dict.fromkeys(specs)}
    results = evaluation.score_models(
        clean, denoisers, args.sigma, args.seed, args.tile_size, tuple(args.classical)
    )
    print(evaluation.format_scores(results))
    if args.json:
        report = {
            "sigma": args.sigma,
            "seed": args.seed,
            "models": {spec: denoiser.location for spec, denoiser in denoisers.items()},
            "scores": results,
        }
        files.write_json(args.json, report)
    return 1 if failures else 0


def _tune_worker(args: argparse.Namespace) -> int:
    from denoiselab.config import STORAGE_RULE, is_storage, load_params

    if args.storage is not None and not is_storage(args.storage):
        raise UserError(f"--storage {STORAGE_RULE}, got {args.storage!r}")
    _import_keras()
    from denoiselab import runner, studies, tracking, tuning

    params = load_params(args.params)
    tune, base = params.tune_unet, params.base
    data = runner.load_training_data(args.prepared, args.noisy)
    root = tracking.repo_root()
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
    denoise.add_argument("--model", default="champion", help=MODEL_HELP)
    denoise.add_argument(
        "--tile-size",
        type=_positive_int,
        default=512,
        help="side of the tiles large images are split into; lower it to save memory",
    )
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
        help="models to score, each as for `denoise --model` (default: champion, or each of "
        "cae, unet, unet_tuned that exists)",
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
    worker.add_argument("--prepared", type=Path, default=Path("data/prepared"))
    worker.add_argument("--noisy", type=Path, default=Path("data/noisy"))
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
