"""The registered champion serves over HTTP with `mlflow models serve`, as the README shows."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import keras
import numpy as np
import pytest

from denoiselab import models, registry, tracking
from denoiselab.config import ModelConfig

STARTUP_SECONDS = 300


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_ready(url: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"mlflow models serve exited with {server.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url + "/ping", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(1)
    pytest.fail(f"mlflow models serve not ready after {STARTUP_SECONDS} s:\n{log.read_text()}")


def stop(server: subprocess.Popen) -> None:
    """Stops the server and the workers it started: its own process group, by its PID."""
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)


@pytest.fixture
def champion(tmp_path, monkeypatch):
    """A tiny U-Net logged and registered as denoiselab@champion in a temporary sqlite store."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    (tmp_path / ".dvc").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    keras.utils.set_random_seed(0)
    model = models.build_model(ModelConfig(model="unet", base_filters=4, depth=2))
    mlflow.set_tracking_uri(uri)
    experiment_id = mlflow.create_experiment(
        "serving", artifact_location=(tmp_path / "artifacts").as_uri()
    )
    with mlflow.start_run(experiment_id=experiment_id):
        info = tracking.log_keras_model(model, channels=1)
    version = mlflow.register_model(info.model_uri, registry.REGISTERED_MODEL)
    mlflow.MlflowClient().set_registered_model_alias(
        registry.REGISTERED_MODEL, registry.CHAMPION, version.version
    )
    yield model, uri
    mlflow.set_tracking_uri(None)


@pytest.mark.slow
def test_champion_serves_denoised_tensor_over_http(champion, tmp_path):
    model, uri = champion
    port = free_port()
    log = tmp_path / "server.log"
    command = [
        str(Path(sys.executable).with_name("mlflow")),
        "models", "serve",
        "-m", f"models:/{registry.REGISTERED_MODEL}@{registry.CHAMPION}",
        "--env-manager", "local",
        "--host", "127.0.0.1",
        "--port", str(port),
    ]  # fmt: skip
    with open(log, "w") as log_file:
        server = subprocess.Popen(
            command,
            cwd=tmp_path,
            # The server runs `uvicorn` from PATH: the project's environment, as when activated.
            env={
                **os.environ,
                "MLFLOW_TRACKING_URI": uri,
                "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
            },
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_ready(url, server, log)
        noisy = np.random.default_rng(0).uniform(0, 1, (1, 16, 12, 1)).astype(np.float32)
        request = urllib.request.Request(
            url + "/invocations",
            data=json.dumps({"inputs": noisy.tolist()}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.loads(response.read())
    finally:
        stop(server)

    denoised = np.asarray(answer["predictions"], np.float32)
    assert denoised.shape == (1, 16, 12, 1)
    expected = np.asarray(model(noisy, training=False))
    np.testing.assert_allclose(denoised, expected, atol=1e-5)
    assert np.abs(denoised - noisy).max() > 1e-3  # the served model did something
    assert server.returncode is not None
