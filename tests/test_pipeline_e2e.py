"""The real pipeline: `dvc repro` on the smoke profile in a temporary copy of the repository,
with its own MLflow store, checked the way a user would check it."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from denoiselab import profiles

ROOT = Path(__file__).resolve().parents[1]
STAGES = {"prepare", "add_noise", "train_cae", "train_unet", "tune_unet", "evaluate", "plot"}

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def run(args, cwd, env):
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{output[-4000:]}"
    return output


def stages_run(output):
    return set(re.findall(r"Running stage '([a-z_]+)'", output))


@pytest.fixture(scope="module")
def smoke_repo(tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo")
    tracked = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for name in filter(None, tracked):
        source = ROOT / name
        if source.is_file() and not name.startswith(("reports/", "dvc.lock")):
            target = repo / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    smoke = profiles.apply_profile(params, profiles.load_profile(repo / "profiles/smoke.yaml"))
    (repo / "params.yaml").write_text(yaml.safe_dump(smoke, sort_keys=False))
    env = {
        key: value for key, value in os.environ.items() if not key.startswith(("MLFLOW_", "DVC_"))
    }
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.update(
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@t",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@t",
    )
    run(["git", "init", "-q"], repo, env)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "smoke"], repo, env)
    output = run(["dvc", "repro"], repo, env)
    run(["git", "add", "-A"], repo, env)
    run(["git", "commit", "-qm", "first repro"], repo, env)
    return repo, env, output


def mlflow_client(repo):
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlflow.db'}")
    return mlflow.MlflowClient()


def runs_by_name(client):
    experiment = client.get_experiment_by_name("denoiselab")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"])
    named = {}
    for found in runs:
        named.setdefault(found.info.run_name, found)
    return named, runs


def test_all_seven_stages_ran_and_wrote_their_outputs(smoke_repo):
    repo, _, output = smoke_repo
    assert stages_run(output) == STAGES
    metrics = json.loads((repo / "reports/metrics.json").read_text())
    for name in ("noisy", "cae", "unet", "unet_tuned", "tv", "wavelet", "nl_means"):
        assert 0 < metrics[name]["psnr"] < 60
        assert 0 < metrics[name]["ssim"] <= 1
    assert metrics["noisy"]["psnr"] == pytest.approx(20.3, abs=0.5)
    for figure in ("loss_comparison", "ssim_comparison", "sample_comparison"):
        assert (repo / f"reports/figures/{figure}.png").read_bytes()[:4] == b"\x89PNG"
    manifest = json.loads((repo / "data/prepared/manifest.json").read_text())
    assert {entry["split"] for entry in manifest["images"]} == {"train", "val", "test"}
    best = json.loads((repo / "reports/best_params.json").read_text())
    assert len(best["trials"]) == 2


def test_mlflow_holds_three_model_runs_with_histories_and_models(smoke_repo):
    repo, _, _ = smoke_repo
    import mlflow

    client = mlflow_client(repo)
    named, runs = runs_by_name(client)
    for name in ("cae", "unet", "unet_tuned"):
        found = named[name]
        assert found.info.status == "FINISHED"
        history = client.get_metric_history(found.info.run_id, "val_loss")
        assert [point.step for point in history] == [1, 2]
        assert {"psnr", "ssim", "val_psnr", "val_ssim_tf"} <= set(found.data.metrics)
        assert found.data.params["data_hash"]
        assert found.data.tags["dvc.stage"] in ("train_cae", "train_unet", "tune_unet")
        assert "git_commit" in found.data.tags
        config = json.loads((repo / f"models/{name}/config.json").read_text())
        assert config["mlflow_run_id"] == found.info.run_id
        model = mlflow.keras.load_model(config["mlflow_model_uri"])
        assert model.output_shape[-1] == 1
        artifacts = {item.path for item in client.list_artifacts(found.info.run_id, "figures")}
        assert "figures/sample_comparison.png" in artifacts
    parent = named["unet_tune"]
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(trials) == 2
    champion = client.get_model_version_by_alias("denoiselab", "champion")
    assert champion.tags["model_name"] in ("cae", "unet", "unet_tuned")


def test_second_repro_runs_nothing(smoke_repo):
    repo, env, _ = smoke_repo
    output = run(["dvc", "repro"], repo, env)
    assert stages_run(output) == set()
    assert "up to date" in output


def test_a_unet_param_experiment_reruns_only_what_it_touches(smoke_repo):
    repo, env, _ = smoke_repo
    output = run(
        ["dvc", "exp", "run", "-n", "lr-test", "-S", "train_unet.learning_rate=0.002"], repo, env
    )
    assert stages_run(output) == {"train_unet", "evaluate", "plot"}
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo, env))
    assert "lr-test" in json.dumps(shown)
    named, _ = runs_by_name(mlflow_client(repo))
    assert named["unet"].data.tags.get("dvc.experiment") == "lr-test"
    assert named["unet"].data.params["train.learning_rate"] == "0.002"
