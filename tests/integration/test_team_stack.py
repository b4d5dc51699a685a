"""The team stack for real: services/start.sh starts PostgreSQL, SeaweedFS (S3) and an MLflow
server on 127.0.0.1; the smoke pipeline tracks to it and pushes its data to the S3 DVC remote,
and a fresh clone pulls every output back. Run by `make test-integration`, not by `pytest`."""

import json
import os
import shutil
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import ROOT, SMOKE_EXPERIMENT, run_command

from denoiselab import catalogue

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MODEL_NAMES = catalogue.MODEL_NAMES


def free_port() -> int:
    """A free port whose SeaweedFS gRPC twin (port + 10000) is free too."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port + 10000 > 65535:
            continue
        with socket.socket() as twin:
            try:
                twin.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


def read_env_file(path: Path) -> dict:
    variables = {}
    for line in path.read_text().splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export ") :].partition("=")
            variables[key] = value
    return variables


@pytest.fixture(scope="module")
def stack():
    """A private copy of the stack (own folder under .services/, free ports), stopped after."""
    services_dir = ROOT / ".services" / f"integration-{uuid.uuid4().hex[:8]}"
    env = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_")}
    env.update(
        SERVICES_DIR=str(services_dir),
        BIN=str(Path(sys.executable).parent),
        **{
            name: str(free_port())
            for name in (
                "POSTGRES_PORT",
                "S3_PORT",
                "WEED_MASTER_PORT",
                "WEED_VOLUME_PORT",
                "WEED_FILER_PORT",
                "MLFLOW_PORT",
            )
        },
    )
    try:
        run_command([str(ROOT / "services/start.sh")], ROOT, env, timeout=600)
        yield read_env_file(services_dir / "env"), env
    finally:
        subprocess.run([str(ROOT / "services/stop.sh")], cwd=ROOT, env=env, timeout=180)
        shutil.rmtree(services_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def tracked_repo(stack, smoke_repo):
    """The smoke pipeline run against the stack, its data pushed to the S3 remote."""
    variables, _ = stack
    repo, env = smoke_repo
    env.update(variables)
    s3_url = variables["MLFLOW_S3_ENDPOINT_URL"]
    run_command(["dvc", "remote", "add", "-d", "team", variables["DVC_REMOTE_URL"]], repo, env)
    run_command(["dvc", "remote", "modify", "team", "endpointurl", s3_url], repo, env)
    output = run_command(["dvc", "repro"], repo, env)
    run_command(["git", "add", "-A"], repo, env)
    run_command(["git", "commit", "-qm", "repro against the team stack"], repo, env)
    output += run_command(["dvc", "push"], repo, env)
    return repo, env, output


def s3_keys(variables: dict, bucket: str) -> list[str]:
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=variables["MLFLOW_S3_ENDPOINT_URL"],
        aws_access_key_id=variables["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=variables["AWS_SECRET_ACCESS_KEY"],
        region_name=variables["AWS_DEFAULT_REGION"],
    )
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def test_runs_metrics_and_models_live_in_the_postgresql_backed_server(stack, tracked_repo):
    variables, _ = stack
    repo, _, _ = tracked_repo
    assert not (repo / "mlflow.db").exists()
    import mlflow

    client = mlflow.MlflowClient(variables["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name(SMOKE_EXPERIMENT)
    runs = {found.info.run_name: found for found in client.search_runs([experiment.experiment_id])}
    assert {*MODEL_NAMES, "unet_tune"} <= set(runs)
    metrics = json.loads((repo / "reports/metrics.json").read_text())
    for name in MODEL_NAMES:
        assert runs[name].info.status == "FINISHED"
        # The first table holds the gray models at the reference level; every model has its row
        # in the sweep at that level, on its own kind of images.
        dataset = catalogue.MODELS[name].dataset
        assert runs[name].data.metrics["psnr"] == pytest.approx(
            metrics["sweep"][dataset]["0.1"][name]["psnr"], abs=1e-3
        )
    champion = client.get_model_version_by_alias("denoiselab", "champion")
    assert champion.tags["model_name"] in MODEL_NAMES

    # The server keeps them in PostgreSQL, not in a file of its own.
    import psycopg2

    url = variables["OPTUNA_STORAGE"].replace("+psycopg2", "").rsplit("/", 1)[0] + "/mlflow"
    with psycopg2.connect(url) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT name FROM runs WHERE status = 'FINISHED'")
        stored = {row[0] for row in cursor.fetchall()}
        cursor.execute("SELECT name FROM registered_models")
        registered = {row[0] for row in cursor.fetchall()}
    assert set(MODEL_NAMES) <= stored
    assert "denoiselab" in registered


def test_artifacts_live_in_the_object_store(stack, tracked_repo):
    variables, _ = stack
    keys = s3_keys(variables, "mlflow")
    assert any(key.endswith("/MLmodel") for key in keys)
    assert any(key.endswith("figures/sample_comparison.png") for key in keys)
    import mlflow

    mlflow.set_tracking_uri(variables["MLFLOW_TRACKING_URI"])
    model = mlflow.pyfunc.load_model("models:/denoiselab@champion")
    denoised = model.predict(np.full((1, 21, 19, 1), 0.5, np.float32))
    assert denoised.shape == (1, 21, 19, 1)


def test_a_fresh_clone_pulls_every_output_from_the_remote(stack, tracked_repo, tmp_path):
    variables, _ = stack
    repo, env, _ = tracked_repo
    assert s3_keys(variables, "dvc")
    clone = tmp_path / "clone"
    run_command(["git", "clone", "-q", str(repo), str(clone)], tmp_path, env)
    run_command(["dvc", "pull"], clone, env)
    # dvc.lock names every output with foreach items resolved (data/gray/prepared, ...).
    stages = yaml.safe_load((clone / "dvc.lock").read_text())["stages"]
    assert {"prepare@gray", "prepare@colour", "train@unet_rgb"} <= set(stages)
    for stage in stages.values():
        for out in stage.get("outs", []):
            path = out["path"]
            target = clone / path
            assert target.exists(), f"{path} missing after dvc pull"
            if target.is_dir():
                assert any(target.iterdir()), f"{path} is empty after dvc pull"
    status = run_command(["dvc", "status"], clone, env)
    assert "up to date" in status


def test_workers_share_a_study_in_the_postgresql_storage(stack, tracked_repo):
    variables, _ = stack
    repo, env, _ = tracked_repo
    storage = variables["OPTUNA_STORAGE"]
    output = run_command(
        ["denoiselab", "tune-worker", "--storage", storage, "--n-trials", "1"], repo, env
    )
    assert "ran trials" in output
    import optuna

    (name,) = optuna.get_all_study_names(storage)
    assert len(optuna.load_study(study_name=name, storage=storage).trials) >= 1
