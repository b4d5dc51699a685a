"""The registered champion serves over HTTP with `mlflow models serve`, as the README shows,
and answers with what `denoiselab denoise` writes for the same pixels, at any image size."""

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
from conftest import register_champion
from PIL import Image

from denoiselab import cli, models, registry, tracking
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


def group_alive(group: int, seconds: float = 30.0) -> bool:
    """Whether any process of the group is still there after ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return False
        time.sleep(0.2)
    return True


@pytest.fixture
def champion(repo_root):
    """A tiny U-Net saved as `dvc repro` saves it, logged and crowned denoiselab@champion in
    a temporary sqlite store, as the evaluate stage registers it."""
    keras.utils.set_random_seed(0)
    config = ModelConfig(model="unet", base_filters=4, depth=2)
    register_champion(models.build_model(config), config, repo_root / "trained", name="unet")
    return tracking.tracking_uri()


@pytest.mark.slow
def test_champion_serves_what_denoise_writes_for_any_size(champion, tmp_path):
    uri = champion
    # 37 x 53 is not a multiple of 2**depth: the served model must pad and crop as the CLI does.
    pixels = np.random.default_rng(0).integers(0, 65536, (37, 53), dtype=np.uint16)
    Image.fromarray(pixels).save(tmp_path / "noisy.png")
    noisy = (pixels / 65535).astype(np.float32)[None, ..., None]
    model_uri = f"models:/{registry.REGISTERED_MODEL}@{registry.CHAMPION}"
    assert (
        cli.main(
            [
                "denoise",
                str(tmp_path / "noisy.png"),
                "-o",
                str(tmp_path / "out"),
                "--model",
                model_uri,
            ]
        )
        == 0
    )
    written = np.asarray(Image.open(tmp_path / "out" / "noisy.png")) / 65535

    port = free_port()
    log = tmp_path / "server.log"
    command = [
        str(Path(sys.executable).with_name("mlflow")),
        "models",
        "serve",
        "-m",
        model_uri,
        "--env-manager",
        "local",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
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
        request = urllib.request.Request(
            url + "/invocations",
            data=json.dumps({"inputs": noisy.tolist()}).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as error:
            pytest.fail(f"HTTP {error.code}: {error.read().decode()[:2000]}")
    finally:
        stop(server)
    # The server's workers went with it: nothing of its process group is left running.
    assert not group_alive(server.pid)

    served = np.asarray(answer["predictions"], np.float32)
    assert served.shape == (1, 37, 53, 1)
    # 16-bit output rounds to 1/65535; 2e-4 is about 13 levels.
    np.testing.assert_allclose(served[0, ..., 0], written, atol=2e-4)
    assert np.abs(served - noisy).max() > 1e-3  # the served model did something
