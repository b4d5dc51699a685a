"""The evaluate stage on tiny synthetic data: validation PSNR per model, through the loader
and denoising `denoiselab denoise` uses, in the metrics and MLflow; the champion is the best
on validation, whatever the test scores say."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import shift_model

from denoiselab import (
    catalogue,
    classical,
    denoise,
    evaluation,
    files,
    models,
    noise,
    registry,
    selection,
    serving,
    tracking,
)

ROOT = Path(__file__).resolve().parents[1]
PARAMS = ROOT / "params.yaml"
# Each trained model subtracts a constant: the smaller, the closer to the clean images.
SHIFTS = {"cae": 0.0, "unet": 0.04, "unet_tuned": 0.08, "unet_rgb": 0.02}


LEVELS = {"gray": (0.05, 0.1, 0.2), "colour": (0.1, 0.2)}
CHANNELS = {"gray": 1, "colour": 3}


def write_repo(root: Path) -> None:
    """Both datasets with noise at every level, classical reports, params and four trained
    models (three gray, one colour), each with its finished MLflow run."""
    rng = np.random.default_rng(0)
    for dataset, levels in LEVELS.items():
        shape = (1, CHANNELS[dataset])

        def images(names, size, shape=shape):
            return {
                name: rng.uniform(0.3, 0.7, (*size, shape[1])).astype(np.float32) for name in names
            }

        test, val = images(["a", "b"], (24, 20)), images(["c", "d"], (37, 29))
        data = root / "data" / dataset
        files.save_arrays(data / "prepared/test.npz", test)
        files.save_arrays(data / "prepared/val_images.npz", val)
        files.write_json(
            data / "prepared/manifest.json", {"data_hash": f"tiny-{dataset}", "channels": shape[1]}
        )
        report = {"dataset": dataset, "images_sha256": {}, "levels": {}}
        for level in levels:
            folder = data / "noisy" / noise.LEVELS_FOLDER / noise.level_key(level)
            noisy_test, noisy_val = (
                noise.noisy_images(test, level, 0),
                noise.noisy_images(val, level, 0),
            )
            files.save_arrays(folder / "test.npz", noisy_test)
            files.save_arrays(folder / "val_images.npz", noisy_val)
            report["images_sha256"][noise.level_key(level)] = classical.images_digest(
                val, noisy_val, test, noisy_test
            )
            row = {"psnr": 30.0 - 10 * level, "ssim": 0.8, "seconds_per_megapixel": 1.0}
            row.update(per_image={"a": row.copy(), "b": row.copy()})
            row.update(params={"sigma_scale": 1.0}, val_psnr=31.0 - 10 * level)
            report["levels"][noise.level_key(level)] = {"bm3d": row}
        files.write_json(root / f"reports/classical/{dataset}.json", report)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["add_noise"]["sweep"] = {dataset: list(levels) for dataset, levels in LEVELS.items()}
    params["evaluate"]["register_models"] = True
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    tracking.setup()
    for name, shift in SHIFTS.items():
        dataset = catalogue.MODELS[name].dataset
        model, config = shift_model((shift,) * CHANNELS[dataset])
        folder = root / "models" / name
        # As a training stage leaves it: the folder saved, the run finished without a model.
        with tracking.model_run(name, "test", {}) as run:
            info = {"data_hash": f"tiny-{dataset}", "mlflow_run_id": run.info.run_id}
            models.save_model_dir(model, config, folder, info)


def run_evaluate(root: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """The evaluate stage's command in ``root``, with ``env`` added to the environment."""
    command = [
        sys.executable,
        str(ROOT / "stages/evaluate.py"),
        *["--data", "data", "--models", "models", "--classical", "reports/classical"],
        *["--metrics", "reports/metrics.json", "--per-image", "reports/per_image.json"],
        *["--denoised", "data/denoised"],
    ]
    result = subprocess.run(
        command,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def refused_evaluate(root: Path) -> subprocess.CompletedProcess:
    """The evaluate stage's command in ``root``, expected to stop on bad input (exit status 2)
    without writing its metrics."""
    command = [sys.executable, str(ROOT / "stages/evaluate.py")]
    command += ["--data", "data", "--models", "models", "--classical", "reports/classical"]
    command += ["--metrics", "m.json", "--per-image", "p.json", "--denoised", "d"]
    result = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert not (root / "m.json").exists()
    return result


@pytest.fixture
def repo(repo_root):
    write_repo(repo_root)
    return repo_root


def test_evaluate_chooses_on_validation_across_the_levels_and_crowns_each_dataset(repo):
    import mlflow

    result = run_evaluate(repo)
    summary = files.read_json(repo / "reports/metrics.json")
    gray_val = summary["sweep"]["validation"]["gray"]
    colour_val = summary["sweep"]["validation"]["colour"]
    assert gray_val["cae"] > gray_val["unet"] > gray_val["unet_tuned"]
    tags = registry.version_tags(registry.CHAMPION)
    assert tags["model_name"] == "cae"
    assert tags["champion.val_psnr"] == f"{gray_val['cae']:.4f}"
    assert tags["champion.val_levels"] == "0.05,0.1,0.2"
    assert tags["champion.data_hash"] == "tiny-gray" and tags["channels"] == "1"
    # It competed with the denoise settings of params.yaml, which the logged model serves with.
    settings = yaml.safe_load((repo / "params.yaml").read_text())["denoise"]
    assert tags["champion.denoise"] == registry.settings_tag(
        denoise.Settings.from_mapping(settings).in_effect()
    )
    # The test scores tagged are the reference level's, as in the first table.
    assert float(tags["psnr"]) == summary["cae"]["psnr"]
    # Every model competes for the colour champion on the colour validation images: the gray
    # CAE, run on each channel as `denoiselab denoise` runs it, beats the colour model there.
    assert colour_val["cae"] > colour_val["unet_rgb"] > colour_val["unet"]
    rgb_tags = registry.version_tags(registry.CHAMPION_RGB)
    assert rgb_tags["model_name"] == "cae" and rgb_tags["channels"] == "1"
    assert rgb_tags["champion_rgb.val_levels"] == "0.1,0.2"
    assert rgb_tags["champion_rgb.data_hash"] == "tiny-colour"
    assert rgb_tags["champion_rgb.val_psnr"] == f"{colour_val['cae']:.4f}"
    assert registry.version_tags("unet_rgb")["champion_rgb.val_psnr"] == (
        f"{colour_val['unet_rgb']:.4f}"
    )
    run = mlflow.MlflowClient().get_run(tags["run_id"])
    assert run.data.metrics["val_image_psnr"] == pytest.approx(gray_val["cae"], abs=1e-4)
    assert run.data.metrics["sweep_gray_psnr_0.2"] == pytest.approx(
        summary["sweep"]["gray"]["0.2"]["cae"]["psnr"], abs=1e-4
    )
    assert run.data.metrics["sweep_colour_psnr_0.2"] == pytest.approx(
        summary["sweep"]["colour"]["0.2"]["cae"]["psnr"], abs=1e-4
    )
    # The validation PSNR per level, whose mean over the levels chose the champion.
    per_level = [
        summary["sweep"]["gray"][level]["cae"]["val_psnr"] for level in ("0.05", "0.1", "0.2")
    ]
    assert sum(per_level) / 3 == pytest.approx(gray_val["cae"], abs=1e-3)
    assert run.data.metrics["val_gray_psnr_0.05"] == pytest.approx(per_level[0], abs=1e-4)
    assert "champion now cae" in result.stdout
    assert "champion_rgb now cae" in result.stdout


def test_the_sweep_holds_every_method_per_dataset_and_level_with_the_champion(repo):
    result = run_evaluate(repo)
    summary = files.read_json(repo / "reports/metrics.json")
    # The first table: the reference level, gray models and the classical baselines.
    assert {"noisy", "cae", "unet", "unet_tuned", "bm3d"} <= set(summary)
    assert "unet_rgb" not in summary
    sweep = summary["sweep"]
    assert sweep["champions"] == {"gray": "cae", "colour": "cae"}
    for dataset, levels in LEVELS.items():
        assert list(sweep[dataset]) == [noise.level_key(level) for level in levels]
        for level in levels:
            rows = sweep[dataset][noise.level_key(level)]
            # Test scores, and the validation PSNR at every level of the sweep.
            assert set(rows["champion"]) == {"psnr", "ssim", "val_psnr"}
            champion = sweep["champions"][dataset]
            assert rows["champion"] == rows[champion]
            assert rows["bm3d"]["psnr"] == pytest.approx(30.0 - 10 * level)
            assert rows["bm3d"]["val_psnr"] == pytest.approx(31.0 - 10 * level)
            # The stage's table gives the champion's margin over BM3D on the test images and
            # on the validation images, which settings are chosen by.
            line = next(
                line
                for line in result.stdout.splitlines()
                if line.split()[:2] == [dataset, noise.level_key(level)]
            )
            test_margin = rows["champion"]["psnr"] - rows["bm3d"]["psnr"]
            val_margin = rows["champion"]["val_psnr"] - rows["bm3d"]["val_psnr"]
            assert line.split()[-4:] == [f"{test_margin:+.2f}", "dB", f"{val_margin:+.2f}", "dB"]
            # Scores of the stored noisy pixels: a model that subtracts 0.12 loses to one
            # that subtracts nothing at every level.
            if dataset == "gray":
                assert rows["cae"]["psnr"] > rows["unet_tuned"]["psnr"]
    # The noisy input's PSNR falls as the noise rises.
    noisy = [sweep["gray"][key]["noisy"]["psnr"] for key in ("0.05", "0.1", "0.2")]
    assert noisy == sorted(noisy, reverse=True)
    per_image = files.read_json(repo / "reports/per_image.json")
    assert set(per_image["sweep"]["colour"]["0.2"]["unet_rgb"]) == {"a", "b"}


def test_a_model_trained_on_other_data_is_refused_naming_its_folder(repo):
    config = files.read_json(repo / "models/unet_rgb/config.json")
    files.write_json(repo / "models/unet_rgb/config.json", {**config, "data_hash": "tiny-gray"})
    result = refused_evaluate(repo)
    assert "models/unet_rgb: trained on data tiny-gray" in result.stderr


def test_classical_scores_of_other_images_are_refused_naming_the_report_and_level(repo):
    # As if the classical stage had scored other noisy validation images at 0.2.
    report = files.read_json(repo / "reports/classical/colour.json")
    report["images_sha256"]["0.2"] = "0" * 16
    files.write_json(repo / "reports/classical/colour.json", report)
    result = refused_evaluate(repo)
    line = result.stderr.strip().splitlines()[-1]
    assert "reports/classical/colour.json: not scored on the images of" in line
    assert "at sigma 0.2; run `dvc repro`" in line


def logged_models(client, run_id: str) -> list:
    experiment = client.get_run(run_id).info.experiment_id
    return client.search_logged_models(
        experiment_ids=[experiment], filter_string=f"source_run_id = '{run_id}'"
    )


def test_each_model_is_logged_into_its_training_run_once(repo):
    import mlflow

    run_evaluate(repo)
    client = mlflow.MlflowClient()
    run_id = files.read_json(repo / "models/unet/config.json")["mlflow_run_id"]
    [logged] = logged_models(client, run_id)
    tags = client.get_run(run_id).data.tags
    assert tags[serving.MODEL_URI_TAG] == f"models:/{logged.model_id}"
    # The tag digests the folder with the denoise settings it was logged with (params.yaml's).
    settings = denoise.Settings.from_mapping(yaml.safe_load(PARAMS.read_text())["denoise"])
    digest = serving.model_digest(repo / "models/unet", settings)
    assert tags[serving.MODEL_DIGEST_TAG] == digest
    assert digest != serving.model_digest(repo / "models/unet", denoise.Settings(self_ensemble=8))
    # The training run stays finished, and the registered version is this logged model.
    assert client.get_run(run_id).info.status == "FINISHED"
    assert registry.version_tags("unet")["run_id"] == run_id
    version = client.get_model_version_by_alias(registry.REGISTERED_MODEL, "unet")
    assert version.source == f"models:/{logged.model_id}"
    outputs = client.get_run(run_id).outputs.model_outputs
    assert [output.model_id for output in outputs] == [logged.model_id]

    run_evaluate(repo)
    assert len(logged_models(client, run_id)) == 1


def test_an_experiment_that_only_rescores_the_models_logs_runs_of_its_own(repo):
    # `dvc exp run -S denoise.<key>=...` takes every model from the run cache: its scores must
    # not overwrite those the training runs hold from the pipeline that trained them.
    import mlflow

    run_evaluate(repo)
    client = mlflow.MlflowClient()
    unet_run = files.read_json(repo / "models/unet/config.json")["mlflow_run_id"]
    cae_run = files.read_json(repo / "models/cae/config.json")["mlflow_run_id"]
    kept = client.get_run(unet_run).data.metrics["val_image_psnr"]
    # The CAE, though, was trained in this experiment: its own run gets the scores.
    client.set_tag(cae_run, evaluation.DVC_EXPERIMENT_TAG, "rescore-a")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["denoise"]["self_ensemble"] = 1
    params["evaluate"]["register_models"] = False
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    run_evaluate(repo, env={evaluation.DVC_EXPERIMENT_ENV: "rescore-a"})

    assert len(client.get_metric_history(unet_run, "val_image_psnr")) == 1
    assert client.get_run(unet_run).data.metrics["val_image_psnr"] == kept
    assert len(client.get_metric_history(cae_run, "val_image_psnr")) == 2
    rescored = mlflow.search_runs(
        search_all_experiments=True,
        filter_string="tags.`dvc.experiment` = 'rescore-a'",
        output_format="list",
    )
    # The experiment's runs: the CAE's training run and one run of scores for each other model.
    names = sorted(run.info.run_name for run in rescored)
    assert names == ["cae", "unet-rescored", "unet_rgb-rescored", "unet_tuned-rescored"]
    [unet] = [run for run in rescored if run.info.run_name == "unet-rescored"]
    assert unet.data.tags[evaluation.TRAINED_IN_TAG] == unet_run
    assert unet.data.params["denoise.self_ensemble"] == "1"
    summary = files.read_json(repo / "reports/metrics.json")
    assert unet.data.metrics["val_image_psnr"] == pytest.approx(
        summary["sweep"]["validation"]["gray"]["unet"], abs=1e-4
    )
    assert unet.info.status == "FINISHED"


def test_a_model_whose_training_run_the_store_lacks_is_logged_into_a_run_standing_in(repo):
    # Model folders brought from another checkout (`dvc pull`) name runs of another store.
    import mlflow

    client = mlflow.MlflowClient()
    lost = "0123456789abcdef0123456789abcdef"
    config = files.read_json(repo / "models/unet/config.json")
    files.write_json(repo / "models/unet/config.json", {**config, "mlflow_run_id": lost})
    first = run_evaluate(repo)
    [line] = [line for line in first.stdout.splitlines() if lost in line]
    assert line.startswith(f"models/unet: its training run {lost} is not in the MLflow store")
    stand_in = mlflow.search_runs(
        search_all_experiments=True,
        filter_string=f"tags.`{evaluation.STANDS_IN_FOR_TAG}` = '{lost}'",
        output_format="list",
    )
    [run] = stand_in
    assert run.info.run_name == "unet-imported" and run.info.status == "FINISHED"
    assert run.info.run_id in line
    # Its model, scores and registry version are there, and the model is logged once.
    assert "val_image_psnr" in run.data.metrics
    assert registry.version_tags("unet")["run_id"] == run.info.run_id
    assert len(logged_models(client, run.info.run_id)) == 1
    # The alias names the run the folder names, so `denoiselab denoise --model unet` loads the
    # folder in the workspace, not a copy from the MLflow store.
    aliases = registry.registered_aliases()
    assert aliases["unet"] == lost
    source = selection.locate_model("unet", repo, aliases)
    assert (source.location, source.is_mlflow) == (str(repo / "models/unet"), False)
    # The next evaluation of the same weights finds it again: no second stand-in.
    run_evaluate(repo)
    again = mlflow.search_runs(
        search_all_experiments=True,
        filter_string=f"tags.`{evaluation.STANDS_IN_FOR_TAG}` = '{lost}'",
        output_format="list",
    )
    assert [found.info.run_id for found in again] == [run.info.run_id]
    assert len(client.get_metric_history(run.info.run_id, "val_image_psnr")) == 2
