"""Fixtures and helpers shared by the tests: a user's repository with its MLflow store, the
smoke copy of this repository that runs the real pipeline, and tiny models of known output."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from denoiselab import profiles

ROOT = Path(__file__).resolve().parents[1]
TRAIN_STAGE = str(ROOT / "stages/train.py")
# The MLflow experiment of the smoke runs, as `make smoke` sets it, apart from the real runs.
SMOKE_EXPERIMENT = "denoiselab-smoke"


def sqlite_uri(folder: Path) -> str:
    """The tracking URI of a sqlite MLflow store in ``folder``."""
    return f"sqlite:///{folder / 'mlflow.db'}"


def enter_repo(monkeypatch: pytest.MonkeyPatch, root: Path, store: Path | None = None) -> Path:
    """Works in ``root`` as a user of that DVC repository does, from its root, with the MLflow
    store in the folder ``store`` or, without one, the default store, root/mlflow.db."""
    (root / ".dvc").mkdir(parents=True, exist_ok=True)
    monkeypatch.chdir(root)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    if store is None:
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    else:
        store.mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_uri(store))
    return root


@pytest.fixture(autouse=True)
def _forget_tracking_uri():
    """After each test MLflow points back at its default, so that no test tracks into the
    store an earlier test chose."""
    yield
    if "mlflow" in sys.modules:
        sys.modules["mlflow"].set_tracking_uri(None)


@pytest.fixture
def repo_root(tmp_path, monkeypatch) -> Path:
    """tmp_path as a user's DVC repository, the working directory, with the default MLflow
    store at its root (not created until something tracks)."""
    return enter_repo(monkeypatch, tmp_path)


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch) -> str:
    """A fresh sqlite MLflow store in tmp_path/store, named by MLFLOW_TRACKING_URI for this
    test and the processes it starts. Returns its URI."""
    store = tmp_path / "store"
    store.mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_uri(store))
    return sqlite_uri(store)


def train_unet_args(history: str) -> list[str]:
    """The train_unet stage's arguments as dvc.yaml passes them, with ``history`` for its
    history file."""
    paths = ["--prepared", "data/gray/prepared", "--noisy", "data/gray/noisy"]
    return [
        *["--section", "train_unet", "--name", "unet", *paths],
        *["--model-dir", "models/unet", "--history", history],
    ]


def run_command(args, cwd, env, timeout=900):
    result = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{output[-4000:]}"
    return output


def smoke_copy(repo: Path) -> dict:
    """Copies the repository's tracked files into ``repo``, applies the smoke profile to
    params.yaml, commits it, and returns the environment to run DVC in: its own sqlite store
    at the copy's root and, as with `make smoke`, the smoke experiment."""
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
    # The tests check the registry too, which `make smoke` leaves alone.
    smoke["evaluate"]["register_models"] = True
    (repo / "params.yaml").write_text(yaml.safe_dump(smoke, sort_keys=False))
    env = {
        key: value for key, value in os.environ.items() if not key.startswith(("MLFLOW_", "DVC_"))
    }
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["DENOISELAB_EXPERIMENT"] = SMOKE_EXPERIMENT
    identity = {"NAME": "denoiselab test", "EMAIL": "test@example.com"}
    for role in ("AUTHOR", "COMMITTER"):
        for field, value in identity.items():
            env[f"GIT_{role}_{field}"] = value
    run_command(["git", "init", "-q"], repo, env)
    run_command(["git", "add", "-A"], repo, env)
    run_command(["git", "commit", "-qm", "smoke"], repo, env)
    return env


@pytest.fixture(scope="module")
def smoke_repo(tmp_path_factory) -> tuple[Path, dict]:
    """A committed copy of the repository on the smoke profile, before any `dvc repro`, and
    the environment to run DVC in (see smoke_copy)."""
    repo = tmp_path_factory.mktemp("smoke-repo")
    return repo, smoke_copy(repo)


def shift_model(shifts: tuple[float, ...], depth: int = 2):
    """A residual U-Net whose weights are all zero except the bias of its noise layer, so it
    returns ``clip(input - shifts)``, one shift per channel: every output pixel is known
    exactly, and tells which model made it. Returns the model and its config."""
    from denoiselab import models
    from denoiselab.config import ModelConfig

    config = ModelConfig(model="unet", base_filters=2, depth=depth, channels=len(shifts))
    model = models.build_model(config)
    for layer in model.layers:
        layer.set_weights([np.zeros_like(weight) for weight in layer.get_weights()])
    kernel, _ = model.get_layer("noise").get_weights()
    model.get_layer("noise").set_weights([kernel, np.array(shifts, np.float32)])
    return model, config


def save_shift_model(folder: Path, shifts: tuple[float, ...]) -> Path:
    """A shift model saved into ``folder`` as `dvc repro` saves a trained model."""
    from denoiselab import models

    model, config = shift_model(shifts)
    models.save_model_dir(model, config, folder, {})
    return folder


def blur_model(architecture: str, depth: int, base_filters: int = 2, pixel_unshuffle=False):
    """A model whose every convolution averages its inputs, so each output pixel depends on
    its whole receptive field, as in a trained denoiser: a tile margin too small for it, or
    padding of the wrong kind, shows in the output. Returns the model and its config."""
    import keras

    from denoiselab import models
    from denoiselab.config import ModelConfig

    config = ModelConfig(
        model=architecture, base_filters=base_filters, depth=depth, pixel_unshuffle=pixel_unshuffle
    )
    model = models.build_model(config)
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2DTranspose):
            fan_in = layer.kernel.shape[3]
        elif isinstance(layer, keras.layers.Conv2D):
            fan_in = np.prod(layer.kernel.shape[:3])
        else:
            continue
        weight = (0.5 if layer.name == "noise" else 1.0) / fan_in
        layer.set_weights([np.full(layer.kernel.shape, weight), np.zeros(layer.bias.shape)])
    return model, config


def register_champion(model, config, folder: Path, name: str = "unet_tuned") -> None:
    """Saves ``model`` into ``folder`` as `dvc repro` does, logs it to the MLflow store in
    MLFLOW_TRACKING_URI and crowns it champion, as the evaluate stage does."""
    from denoiselab import models, registry, serving, tracking

    models.save_model_dir(model, config, folder, {})
    tracking.setup()
    with tracking.model_run(name, "test", {}) as run:
        info = serving.log_denoiser_model(folder, config.channels)
    candidate = registry.Candidate(
        name=name,
        run_id=run.info.run_id,
        model_uri=info.model_uri,
        val_psnr=30.0,
        test_scores={"psnr": 30.0, "ssim": 0.8},
        data_hash="test",
        channels=config.channels,
        val_levels="0.1",
    )
    registry.register_and_crown([candidate])
