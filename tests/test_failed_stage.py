"""A training stage that failed costs no retraining: with the tracking server down the stage
stops, and once it is back `dvc repro` restores the last good outputs from DVC's cache."""

import subprocess

import pytest
from conftest import SMOKE_EXPERIMENT, run_command, sqlite_uri

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# Nothing listens on the discard port: a tracking server that is down.
DOWN = "http://127.0.0.1:9"


def run_ids(repo) -> set[str]:
    import mlflow

    client = mlflow.MlflowClient(sqlite_uri(repo))
    experiment = client.get_experiment_by_name(SMOKE_EXPERIMENT)
    return {found.info.run_id for found in client.search_runs([experiment.experiment_id])}


def outputs(repo) -> dict[str, bytes]:
    """Every file of the train@cae stage's outputs, by path."""
    paths = [*(repo / "models/cae").rglob("*"), repo / "reports/history/cae.json"]
    return {str(path.relative_to(repo)): path.read_bytes() for path in paths if path.is_file()}


def test_a_failed_training_stage_is_restored_without_training(smoke_repo):
    repo, env = smoke_repo
    run_command(["dvc", "repro", "train@cae"], repo, env)
    trained, runs = outputs(repo), run_ids(repo)
    assert "reports/history/cae.json" in trained and "models/cae/config.json" in trained

    failed = subprocess.run(
        ["dvc", "repro", "-f", "-s", "train@cae"],
        cwd=repo,
        env={**env, "MLFLOW_TRACKING_URI": DOWN},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert failed.returncode != 0
    assert "127.0.0.1:9" in failed.stderr
    # DVC deleted the outputs before it ran the stage.
    assert not (repo / "reports/history/cae.json").exists()

    output = run_command(["dvc", "repro", "train@cae"], repo, env)
    assert "Running stage 'train@cae'" not in output
    assert "Stage 'train@cae' is cached - skipping run, checking out outputs" in output
    assert outputs(repo) == trained
    assert run_ids(repo) == runs
    assert "up to date" in run_command(["dvc", "status", "train@cae"], repo, env)
