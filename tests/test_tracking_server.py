"""The smoke pipeline against a real `mlflow server` on 127.0.0.1, over HTTP."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import SMOKE_EXPERIMENT, run_command

from denoiselab import catalogue

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def tracking_server(tmp_path):
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    command = [
        str(Path(sys.executable).parent / "mlflow"),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{tmp_path / 'server.db'}",
        "--artifacts-destination",
        str(tmp_path / "server-artifacts"),
    ]
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen(command, env=env, stdout=log, stderr=log, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2):
                break
        except OSError:
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-2000:]
            time.sleep(0.5)
    else:
        pytest.fail("mlflow server did not start")
    yield uri, tmp_path
    os.killpg(server.pid, signal.SIGTERM)
    server.wait(timeout=30)
    log.close()


def test_smoke_pipeline_tracks_to_a_real_server(tracking_server, smoke_repo):
    uri, server_dir = tracking_server
    repo, env = smoke_repo
    env["MLFLOW_TRACKING_URI"] = uri
    run_command(["dvc", "repro"], repo, env)
    assert not (repo / "mlflow.db").exists()

    import mlflow

    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(SMOKE_EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id])
    names = {found.info.run_name for found in runs}
    assert {*catalogue.MODEL_NAMES, "unet_tune"} <= names
    metrics = json.loads((repo / "reports/metrics.json").read_text())
    for found in runs:
        if found.info.run_name in catalogue.GRAY_MODELS:
            assert found.data.metrics["psnr"] == pytest.approx(
                metrics[found.info.run_name]["psnr"], abs=1e-3
            )
            assert len(client.get_metric_history(found.info.run_id, "loss")) == 2
    # The champion is the pyfunc that runs what evaluate scored, on an image of any size.
    model = mlflow.pyfunc.load_model("models:/denoiselab@champion")
    noisy = np.random.default_rng(0).uniform(0, 1, (1, 21, 19, 1)).astype(np.float32)
    assert model.predict(noisy).shape == noisy.shape
    champion = client.get_model_version_by_alias("denoiselab", "champion")
    assert {"champion.val_psnr", "champion.data_hash", "channels", "psnr"} <= set(champion.tags)
    validation = metrics["sweep"]["validation"]["gray"][champion.tags["model_name"]]
    assert champion.tags["champion.val_psnr"] == f"{validation:.4f}"
    # Artifacts went through the server into its own artifact store.
    assert any((server_dir / "server-artifacts").rglob("*.png"))
