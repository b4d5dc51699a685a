"""The real pipeline: `dvc repro` on the smoke profile in a temporary copy of the repository,
with its own MLflow store, checked the way a user would check it."""

import json
import re

import numpy as np
import pytest
from conftest import SMOKE_EXPERIMENT
from conftest import run_command as run

from denoiselab import catalogue, serving

DATASETS = ("gray", "colour")

STAGES = {
    *(
        f"{stage}@{dataset}"
        for stage in ("prepare", "add_noise", "classical")
        for dataset in DATASETS
    ),
    *(f"train@{name}" for name in ("cae", "unet", "unet_rgb")),
    "tune_unet",
    "evaluate",
    "plot",
}

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def stages_run(output):
    return set(re.findall(r"Running stage '([a-z_@]+)'", output))


@pytest.fixture(scope="module")
def smoke_repo(smoke_repo):
    """The smoke copy after its first `dvc repro`, committed, with that repro's output."""
    repo, env = smoke_repo
    output = run(["dvc", "repro"], repo, env)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "first repro"], repo, env)
    return repo, env, output


def mlflow_client(repo):
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlflow.db'}")
    return mlflow.MlflowClient()


def runs_by_name(client):
    experiment = client.get_experiment_by_name(SMOKE_EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"])
    named = {}
    for found in runs:
        named.setdefault(found.info.run_name, found)
    return named, runs


def test_every_stage_ran_and_wrote_its_outputs(smoke_repo):
    repo, _, output = smoke_repo
    assert stages_run(output) == STAGES
    metrics = json.loads((repo / "reports/metrics.json").read_text())
    for name in ("noisy", "cae", "unet", "unet_tuned", "tv", "wavelet", "nl_means"):
        assert 0 < metrics[name]["psnr"] < 60
        assert 0 < metrics[name]["ssim"] <= 1
    assert metrics["noisy"]["psnr"] == pytest.approx(20.3, abs=0.5)
    figures = ("loss_comparison", "ssim_comparison", "sample_comparison", "psnr_vs_sigma")
    for figure in figures:
        assert (repo / f"reports/figures/{figure}.png").read_bytes()[:4] == b"\x89PNG"
    for dataset in DATASETS:
        manifest = json.loads((repo / f"data/{dataset}/prepared/manifest.json").read_text())
        assert {entry["split"] for entry in manifest["images"]} == {"train", "val", "test"}
        assert manifest["channels"] == {"gray": 1, "colour": 3}[dataset]
    best = json.loads((repo / "reports/best_params.json").read_text())
    assert len(best["trials"]) == 2


def test_the_sweep_scores_every_method_at_every_level_of_each_dataset(smoke_repo):
    repo, _, _ = smoke_repo
    sweep = json.loads((repo / "reports/metrics.json").read_text())["sweep"]
    levels = {"gray": ["0.05", "0.1", "0.15", "0.2"], "colour": ["0.05", "0.1", "0.2"]}
    methods = {"champion", "noisy", "tv", "wavelet", "nl_means"}
    for dataset, keys in levels.items():
        assert list(sweep[dataset]) == keys
        for level in keys:
            rows = sweep[dataset][level]
            assert methods <= set(rows)
            for row in rows.values():
                assert 0 < row["psnr"] < 60 and 0 < row["ssim"] <= 1
        # The noisier the input, the lower its PSNR.
        noisy = [sweep[dataset][level]["noisy"]["psnr"] for level in keys]
        assert noisy == sorted(noisy, reverse=True)
    # Every model on both kinds of images, as `denoiselab denoise` would run it there.
    for dataset in DATASETS:
        assert set(catalogue.MODEL_NAMES) <= set(sweep[dataset]["0.1"])
        assert set(sweep["validation"][dataset]) == set(catalogue.MODEL_NAMES)
        # The champion row is the model `denoiselab denoise` uses for that dataset: the best
        # on that dataset's validation images.
        champion = sweep["champions"][dataset]
        assert sweep[dataset]["0.1"]["champion"] == sweep[dataset]["0.1"][champion]
        validation = sweep["validation"][dataset]
        assert validation[champion] == max(validation.values())
    # The classical rows come from their own stage, one report per dataset.
    for dataset in DATASETS:
        report = json.loads((repo / f"reports/classical/{dataset}.json").read_text())
        assert report["levels"]["0.2"]["tv"]["psnr"] == pytest.approx(
            sweep[dataset]["0.2"]["tv"]["psnr"], abs=1e-4
        )


def test_every_report_is_strict_json(smoke_repo):
    # NaN and Infinity are not JSON: strict parsers (and `jq`, browsers, other languages)
    # reject a report that holds them.
    repo, _, _ = smoke_repo

    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")

    reports = sorted((repo / "reports").rglob("*.json"))
    assert reports
    for path in reports:
        try:
            json.loads(path.read_text(), parse_constant=refuse)
        except ValueError as error:
            pytest.fail(f"{path.relative_to(repo)}: {error}")


def test_mlflow_holds_every_model_run_with_histories_and_models(smoke_repo):
    repo, _, _ = smoke_repo
    import mlflow

    client = mlflow_client(repo)
    named, runs = runs_by_name(client)
    metrics = json.loads((repo / "reports/metrics.json").read_text())
    for name in catalogue.MODEL_NAMES:
        found = named[name]
        assert found.info.status == "FINISHED"
        history = client.get_metric_history(found.info.run_id, "val_loss")
        assert [point.step for point in history] == [1, 2]
        assert {"psnr", "ssim", "val_psnr", "val_ssim_tf"} <= set(found.data.metrics)
        dataset = catalogue.MODELS[name].dataset
        sweep = metrics["sweep"][dataset]
        for level in sweep:
            logged = found.data.metrics[f"sweep_{dataset}_psnr_{level}"]
            assert logged == pytest.approx(sweep[level][name]["psnr"], abs=1e-3)
        channels = {"gray": 1, "colour": 3}[dataset]
        assert found.data.params["data_hash"]
        assert found.data.params["channels"] == str(channels)
        # DVC's name of the stage that trained it: train@<model> (a foreach item) or tune_unet.
        stage = "tune_unet" if name == "unet_tuned" else f"train@{name}"
        assert found.data.tags["dvc.stage"] == stage
        assert "git_commit" in found.data.tags
        config = json.loads((repo / f"models/{name}/config.json").read_text())
        assert config["mlflow_run_id"] == found.info.run_id
        # The model the evaluate stage logged into the run runs what it scored, on an image
        # of any size.
        model = mlflow.pyfunc.load_model(found.data.tags[serving.MODEL_URI_TAG])
        denoised = model.predict(np.full((1, 21, 19, channels), 0.5, np.float32))
        assert denoised.shape == (1, 21, 19, channels)
        assert 0.0 <= denoised.min() and denoised.max() <= 1.0
        artifacts = {item.path for item in client.list_artifacts(found.info.run_id, "figures")}
        assert "figures/sample_comparison.png" in artifacts
    parent = named["unet_tune"]
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(trials) == 2
    champion = client.get_model_version_by_alias("denoiselab", "champion")
    assert champion.tags["model_name"] == metrics["sweep"]["champions"]["gray"]
    assert champion.tags["champion.val_levels"] == "0.05,0.1,0.15,0.2"
    champion_rgb = client.get_model_version_by_alias("denoiselab", "champion_rgb")
    assert champion_rgb.tags["model_name"] == metrics["sweep"]["champions"]["colour"]
    assert champion_rgb.tags["champion_rgb.val_levels"] == "0.05,0.1,0.2"


def test_second_repro_runs_nothing(smoke_repo):
    repo, env, _ = smoke_repo
    output = run(["dvc", "repro"], repo, env)
    assert stages_run(output) == set()
    assert "up to date" in output


def test_prepare_and_add_noise_are_byte_reproducible(smoke_repo):
    repo, env, _ = smoke_repo
    before = (repo / "dvc.lock").read_text()
    output = run(["dvc", "repro", "-f", "-s", "prepare"], repo, env)
    output += run(["dvc", "repro", "-f", "-s", "add_noise"], repo, env)
    assert stages_run(output) == {
        f"{stage}@{dataset}" for stage in ("prepare", "add_noise") for dataset in DATASETS
    }
    assert (repo / "dvc.lock").read_text() == before


def test_a_unet_param_experiment_reruns_only_what_it_touches(smoke_repo):
    repo, env, _ = smoke_repo
    output = run(
        ["dvc", "exp", "run", "-n", "lr-test", "-S", "++train_unet.learning_rate=0.0007"],
        repo,
        env,
    )
    # The classical baselines (BM3D the slowest) depend on the data alone: never rerun here.
    assert stages_run(output) == {"train@unet", "evaluate", "plot"}
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo, env))
    assert "lr-test" in json.dumps(shown)
    named, _ = runs_by_name(mlflow_client(repo))
    assert named["unet"].data.tags.get("dvc.experiment") == "lr-test"
    assert named["unet"].data.params["train.learning_rate"] == "0.0007"


def test_a_training_data_experiment_leaves_the_classical_baselines_alone(smoke_repo):
    # Fewer training patches per image: new training data, the same whole validation and test
    # images, so BM3D, minutes at full scale, is not run again.
    repo, env, _ = smoke_repo
    output = run(
        ["dvc", "exp", "run", "-n", "cap-test", "-S", "prepare.max_patches_per_image=20"],
        repo,
        env,
    )
    ran = stages_run(output)
    assert {"prepare@gray", "add_noise@gray", "train@unet", "tune_unet", "evaluate"} <= ran
    assert not {"classical@gray", "classical@colour"} & ran
    manifest = json.loads((repo / "data/gray/prepared/manifest.json").read_text())
    assert manifest["counts"]["train_patches_over_image_cap"] > 0
