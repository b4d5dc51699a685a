"""The evaluate stage's work: every trained model scored on both datasets at every noise level
(through :mod:`denoiselab.scoring`), logged into its own training run as the pyfunc MLflow
serves, registered, the champions settled on validation, and the reports built from the scores.

The reference level is ``base.noise_sigma`` (0.1, the level of the original notebook this
project grew from): the first comparison table, gray models against the classical baselines,
is taken there.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from denoiselab import (
    catalogue,
    classical,
    denoise,
    files,
    model_store,
    noise,
    paths,
    registry,
    scoring,
    selection,
    serving,
    tracking,
)
from denoiselab.errors import UserError

# The DVC experiment a process runs in (`dvc exp run` sets it) and the tag tracking.run_tags
# gives each run from it.
DVC_EXPERIMENT_ENV = "DVC_EXP_NAME"
DVC_EXPERIMENT_TAG = "dvc.experiment"
# On a run of scores alone: the id of the training run of the model it scored.
TRAINED_IN_TAG = "denoiselab.trained_in"
# On a run standing in for a training run the MLflow store lacks: that run's id (or "unknown"
# for a model folder that names none) and the digest of the model's weights (the registry's
# versions carry the digest under a tag of their own, registry.WEIGHTS_TAG).
STANDS_IN_FOR_TAG = "denoiselab.stands_in_for"
STAND_IN_WEIGHTS_TAG = "denoiselab.weights_sha256"
# The key of a model's info (its config.json, as read) that keeps that run's id once
# ``mlflow_run_id`` names the run standing in for it.
STANDS_IN_FOR_KEY = "stands_in_for_run"


@dataclasses.dataclass(frozen=True)
class Champion:
    """The model `denoiselab denoise` uses for one dataset's kind of image: one of this run's
    models (``source`` None) or a registered version from an earlier run, loaded from
    ``source``."""

    label: str
    source: selection.ModelSource | None = None


@dataclasses.dataclass(frozen=True)
class ModelRun:
    """What one model's training run gets from the evaluation: its test scores at the
    reference level and its validation PSNR, both on its own dataset, and its test scores per
    dataset and level of the sweep."""

    run_id: str
    test_scores: dict
    val_psnr: float | None
    sweep: dict[str, dict[str, dict]]


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """The evaluate stage's outputs: reports/metrics.json, reports/per_image.json, the
    denoised gray test images at the reference level (``data/denoised/<name>.npz``) and what
    each model's run gets."""

    metrics: dict
    per_image: dict
    denoised: dict[str, dict[str, np.ndarray]]
    runs: dict[str, ModelRun]


def read_baselines(folder: Path, datasets: dict[str, scoring.Dataset]) -> dict[str, dict]:
    """The classical stage's ``<dataset>.json`` reports, each checked to be scored on the very
    images (clean and noisy, validation and test) of every level it is read at."""
    baselines = {dataset: files.read_json(folder / f"{dataset}.json") for dataset in datasets}
    for dataset, report in baselines.items():
        images = datasets[dataset]
        scored = report.get("images_sha256") or {}
        for key in images.noisy_test:
            digest = classical.images_digest(
                images.val, images.noisy_val[key], images.test, images.noisy_test[key]
            )
            if scored.get(key) != digest:
                raise UserError(
                    f"{folder / f'{dataset}.json'}: not scored on the images of "
                    f"{images.folder} at sigma {key}; run `dvc repro`"
                )
    return baselines


def read_model_infos(models_folder: Path, datasets: dict[str, scoring.Dataset]) -> dict:
    """Each catalogue model's config.json, checked to be trained on the data being scored."""
    infos = {}
    for name, entry in catalogue.MODELS.items():
        folder = models_folder / name
        infos[name] = files.read_json(folder / model_store.CONFIG_FILE)
        images = datasets[entry.dataset]
        if infos[name].get("data_hash") != images.data_hash:
            raise UserError(
                f"{folder}: trained on data {infos[name].get('data_hash')}, not on "
                f"{images.folder} ({images.data_hash}); run `dvc repro`"
            )
    return infos


def with_runs_in_store(models_folder: Path, infos: dict[str, dict]) -> dict[str, dict]:
    """``infos`` with each model's run checked against the MLflow store. A model whose training
    run the store lacks (its folder came from another checkout's store, as after `dvc pull`
    into a checkout with a local store of its own) gets a run of this store standing in for it,
    with its training config as params, found again on the next evaluation of the same
    weights: its logged model, scores and registry versions go there, and nothing is lost.
    One line says so for each such model."""
    resolved = {}
    for name, info in infos.items():
        run_id = info.get("mlflow_run_id")
        if run_id and tracking.run_exists(run_id):
            resolved[name] = info
            continue
        folder = models_folder / name
        tags = {
            STANDS_IN_FOR_TAG: run_id or "unknown",
            STAND_IN_WEIGHTS_TAG: model_store.weights_digest(folder),
        }
        stand_in = tracking.find_run(tags)
        if stand_in is None:
            with tracking.model_run(
                f"{name}-imported", "evaluate", info.get("train_config", {})
            ) as run:
                tracking.set_tags(tags)
            stand_in = run.info.run_id
        store = tracking.redact(tracking.tracking_uri())
        missing = (
            f"its training run {run_id} is not in the MLflow store {store}"
            if run_id
            else f"its {model_store.CONFIG_FILE} names no MLflow run"
        )
        print(
            f"{folder}: {missing}; its model and scores go to run {stand_in} instead (set "
            f"MLFLOW_TRACKING_URI to the store that holds the training run to keep them together)",
            flush=True,
        )
        resolved[name] = {**info, "mlflow_run_id": stand_in, STANDS_IN_FOR_KEY: run_id or ""}
    return resolved


def evaluate(
    datasets: dict[str, scoring.Dataset],
    baselines: dict[str, dict],
    models_folder: Path,
    sweeps: dict[str, tuple[float, ...]],
    table_level: str,
    register: bool,
    settings: denoise.Settings = denoise.DEFAULT_SETTINGS,
) -> Evaluation:
    """Scores every model of the catalogue on both datasets, as `denoiselab denoise` would run
    it there, so that each competes for both champions on their validation images; logs each
    model folder into its training run, registers the models when ``register`` and settles
    the champions; rescores a champion from an earlier run, so the sweep's champion row is
    the model `denoiselab denoise` uses for each dataset's kind of image. Every model
    denoises with ``settings`` (params.yaml's ``denoise`` section) and is logged with them."""
    tracking.setup()
    infos = with_runs_in_store(models_folder, read_model_infos(models_folder, datasets))
    model_uris = {
        name: serving.log_model_folder(
            models_folder / name,
            datasets[entry.dataset].channels,
            infos[name]["mlflow_run_id"],
            settings,
        )
        for name, entry in catalogue.MODELS.items()
    }
    scores, outputs, val_psnr = {}, {}, {}
    for dataset, images in datasets.items():
        scores[f"noisy/{dataset}"], outputs[f"noisy/{dataset}"], _ = scoring.score_levels(
            lambda image: image, images, ()
        )
    for name in catalogue.MODEL_NAMES:
        # The same loader and denoising as `denoiselab denoise`, so scores are what users get.
        run = scoring.model_denoiser(
            model_store.load_folder(models_folder / name), settings=settings
        )
        for dataset, images in datasets.items():
            key = f"{name}/{dataset}"
            scores[key], outputs[key], val_psnr[key] = scoring.score_levels(
                run, images, sweeps[dataset]
            )
            levels = ", ".join(f"{level} {row['psnr']:.2f}" for level, row in scores[key].items())
            print(
                f"{name} on {dataset} images: validation PSNR {val_psnr[key]:.2f} dB (mean over "
                f"the sweep); test PSNR by sigma: {levels}",
                flush=True,
            )

    if register:
        digests = {name: model_store.weights_digest(models_folder / name) for name in model_uris}
        candidates = [
            registry.Candidate(
                name=name,
                run_id=infos[name]["mlflow_run_id"],
                model_uri=model_uris[name],
                val_psnr=val_psnr[f"{name}/{dataset}"],
                test_scores=scores[f"{name}/{entry.dataset}"][table_level],
                data_hash=images.data_hash,
                channels=datasets[entry.dataset].channels,
                val_levels=levels_tag(sweeps[dataset]),
                alias=registry.champion_alias(images.channels),
                denoise=registry.settings_tag(settings.in_effect()),
                weights_sha256=digests[name],
                trained_in=infos[name].get(STANDS_IN_FOR_KEY, ""),
            )
            for name, entry in catalogue.MODELS.items()
            for dataset, images in datasets.items()
        ]
        registry.tag_champions_weights(serving.logged_weights_digest)
        for crowning in registry.register_and_crown(candidates):
            verb = "now" if crowning.changed else "stays"
            print(
                f"{crowning.alias} {verb} {crowning.model_name} (version {crowning.version}, "
                f"validation PSNR {crowning.val_psnr:.2f} dB): {crowning.reason}"
            )

    champions_by_dataset = champions(paths.repo_root(), infos)
    for dataset, champion in champions_by_dataset.items():
        if champion.source is not None:
            run = scoring.model_denoiser(
                selection.load_denoiser(champion.source), settings=settings
            )
            key = f"{champion.label}/{dataset}"
            scores[key], _, val_psnr[key] = scoring.score_levels(
                run, datasets[dataset], sweeps[dataset]
            )

    metrics, per_image = reports(
        scores, baselines, champions_by_dataset, val_psnr, sweeps, table_level
    )
    denoised = {"noisy": outputs["noisy/gray"][table_level]}
    denoised.update({name: outputs[f"{name}/gray"][table_level] for name in catalogue.GRAY_MODELS})
    runs = {
        name: ModelRun(
            run_id=infos[name]["mlflow_run_id"],
            test_scores=scores[f"{name}/{entry.dataset}"][table_level],
            val_psnr=val_psnr[f"{name}/{entry.dataset}"],
            sweep={dataset: scores[f"{name}/{dataset}"] for dataset in datasets},
        )
        for name, entry in catalogue.MODELS.items()
    }
    return Evaluation(metrics, per_image, denoised, runs)


def levels_tag(levels: tuple[float, ...]) -> str:
    """The validation levels a score was taken over, as the registry's tags record them."""
    return ",".join(noise.level_key(level) for level in sorted(levels))


def champions(root: Path, infos: dict[str, dict]) -> dict[str, Champion]:
    """Each dataset's champion as ``denoiselab denoise`` chooses it for that kind of image (see
    :func:`denoiselab.selection.choose_champion`). ``infos`` maps this run's model names to
    their config.json: a champion of this run is named, one from an earlier run located."""
    aliases = registry.registered_aliases()
    # The aliases name the run that trained a model: a stand-in's training run included.
    by_run = {info.get("mlflow_run_id"): name for name, info in infos.items()}
    by_run.update(
        {
            info[STANDS_IN_FOR_KEY]: name
            for name, info in infos.items()
            if info.get(STANDS_IN_FOR_KEY)
        }
    )
    found = {}
    for dataset, channels in catalogue.DATASET_CHANNELS.items():
        choice = selection.choose_champion(channels, aliases, lambda name: name in infos)
        if choice.run_id is None:
            found[dataset] = Champion(choice.fallback)
        elif choice.run_id in by_run:
            found[dataset] = Champion(by_run[choice.run_id])
        else:
            source = selection.locate_model(choice.alias, root, aliases)
            found[dataset] = Champion(f"{choice.alias} (run {choice.run_id[:8]})", source)
    return found


def _row(scores: dict) -> dict:
    """A sweep row: test PSNR/SSIM and, where the method was scored on the validation images at
    that level, its validation PSNR there (what the lever table of the README compares)."""
    row = {"psnr": round(scores["psnr"], 4), "ssim": round(scores["ssim"], 4)}
    if scores.get("val_psnr") is not None:
        row["val_psnr"] = round(scores["val_psnr"], 4)
    return row


def reports(
    scores: dict[str, dict[str, dict]],
    baselines: dict[str, dict],
    champions_by_dataset: dict[str, Champion],
    val_psnr: dict[str, float | None],
    sweeps: dict[str, tuple[float, ...]],
    table_level: str,
) -> tuple[dict, dict]:
    """reports/metrics.json and reports/per_image.json from every method's scores.

    ``scores`` maps ``<model>/<dataset>`` (and ``noisy/<dataset>``) to the scores per level on
    that dataset's test images, ``val_psnr`` the same keys to the validation PSNR over the
    sweep; ``baselines`` are the classical stage's reports per dataset. The metrics hold the
    grayscale table at the reference level ``table_level`` at the top level and, under
    ``sweep``, every method per dataset and level, with ``champion`` the model ``denoiselab
    denoise`` uses for that dataset's kind of image, ``champions`` naming it and
    ``validation`` each model's validation PSNR per dataset.
    """
    gray = baselines["gray"]["levels"][table_level]
    table_scores = {"noisy": scores["noisy/gray"][table_level]}
    table_scores.update(
        {name: scores[f"{name}/gray"][table_level] for name in catalogue.GRAY_MODELS}
    )
    table_scores.update(gray)
    metrics_report = {name: scoring.summary_row(row) for name, row in table_scores.items()}
    per_image = {
        "per_image": {name: row["per_image"] for name, row in table_scores.items()},
        "classical_params": {
            method: {"params": row["params"], "val_psnr": row["val_psnr"]}
            for method, row in gray.items()
        },
        "sweep": {},
    }
    sweep: dict = {}
    for dataset, levels in sweeps.items():
        sweep[dataset], per_image["sweep"][dataset] = {}, {}
        for level in map(noise.level_key, levels):
            rows = {
                "champion": scores[f"{champions_by_dataset[dataset].label}/{dataset}"][level],
                "noisy": scores[f"noisy/{dataset}"][level],
                **{name: scores[f"{name}/{dataset}"][level] for name in catalogue.MODEL_NAMES},
                **baselines[dataset]["levels"][level],
            }
            sweep[dataset][level] = {name: _row(row) for name, row in rows.items()}
            per_image["sweep"][dataset][level] = {
                name: row["per_image"] for name, row in rows.items()
            }
    sweep["champions"] = {
        dataset: champion.label for dataset, champion in champions_by_dataset.items()
    }
    sweep["validation"] = {
        dataset: {
            name: round(val_psnr[f"{name}/{dataset}"], 4)
            for name in catalogue.MODEL_NAMES
            if val_psnr.get(f"{name}/{dataset}") is not None
        }
        for dataset in sweeps
    }
    metrics_report["sweep"] = sweep
    return metrics_report, per_image


def run_metrics(run: ModelRun) -> dict[str, float]:
    """The metrics a model's run gets: final test PSNR/SSIM (and per image), beside its
    training curves.

    The validation PSNR on whole images is logged as ``val_image_psnr``: ``val_psnr`` on the
    run is already the per-epoch curve on validation patches, and one more point would join
    that curve. The sweep adds ``sweep_<dataset>_psnr_<level>`` and
    ``sweep_<dataset>_ssim_<level>`` (test) and ``val_<dataset>_psnr_<level>`` (validation),
    so runs compare level by level in the UI.
    """
    scores = run.test_scores
    metrics = {"psnr": scores["psnr"], "ssim": scores["ssim"]}
    metrics["seconds_per_megapixel"] = scores["seconds_per_megapixel"]
    for image, values in scores["per_image"].items():
        metrics[f"psnr_{image}"] = values["psnr"]
        metrics[f"ssim_{image}"] = values["ssim"]
    if run.val_psnr is not None:
        metrics["val_image_psnr"] = run.val_psnr
    for dataset, levels in run.sweep.items():
        for level, level_scores in levels.items():
            metrics[f"sweep_{dataset}_psnr_{level}"] = level_scores["psnr"]
            metrics[f"sweep_{dataset}_ssim_{level}"] = level_scores["ssim"]
            if "val_psnr" in level_scores:
                metrics[f"val_{dataset}_psnr_{level}"] = level_scores["val_psnr"]
    return metrics


def log_to_runs(
    evaluation: Evaluation,
    metrics_file: Path,
    settings: denoise.Settings = denoise.DEFAULT_SETTINGS,
) -> None:
    """Logs each model's scores and the written ``metrics_file`` into its training run, then
    refreshes the registry's alias cache: the evaluate stage is the last to write to the store
    (the plot stage only adds artifact files), so the first `denoiselab denoise` afterwards
    need not ask MLflow.

    In a DVC experiment that did not train the model (DVC restored its folder from the run
    cache, as in an experiment of the ``denoise`` settings alone), the scores go to a run of
    their own in that experiment instead, ``<model>-rescored``, with ``settings`` as params and
    the training run's id as tag ``denoiselab.trained_in``: the training run keeps the scores
    of the pipeline that trained it, and the experiment compares in the MLflow UI as a run."""
    experiment = os.environ.get(DVC_EXPERIMENT_ENV) or None
    for name, run in evaluation.runs.items():
        scores = run_metrics(run)
        trained_here = tracking.get_tags(run.run_id).get(DVC_EXPERIMENT_TAG) == experiment
        if experiment is None or trained_here:
            tracking.log_metrics(scores, run_id=run.run_id)
            tracking.log_artifact(metrics_file, "evaluation", run_id=run.run_id)
            continue
        params = {f"denoise.{key}": value for key, value in settings.as_dict().items()}
        with tracking.model_run(f"{name}-rescored", "evaluate", params):
            tracking.set_tags({TRAINED_IN_TAG: run.run_id})
            tracking.log_metrics(scores)
            tracking.log_artifact(metrics_file, "evaluation")
    registry.write_alias_cache()


def format_sweep(sweep: dict) -> str:
    """A text table of the sweep: PSNR / SSIM of the champion, BM3D and the noisy input per
    dataset and level on the test images, and the champion's PSNR margin over BM3D on the test
    images and on the validation images (what a setting is chosen by)."""
    lines = [
        "dataset sigma  champion          BM3D              noisy             test margin  "
        "validation margin"
    ]
    for dataset in catalogue.DATASET_CHANNELS:
        for level, rows in sweep.get(dataset, {}).items():
            cells = [
                scoring.format_cell(rows[name]) if name in rows else "-"
                for name in ("champion", "bm3d")
            ]
            margins = [
                f"{rows['champion'][key] - rows['bm3d'][key]:+.2f} dB"
                if key in rows["champion"] and key in rows.get("bm3d", {})
                else "-"
                for key in ("psnr", "val_psnr")
            ]
            lines.append(
                f"{dataset:<7} {level:<6} {cells[0]:<17} {cells[1]:<17} "
                f"{scoring.format_cell(rows['noisy']):<17} {margins[0]:<12} {margins[1]}"
            )
    return "\n".join(lines)
