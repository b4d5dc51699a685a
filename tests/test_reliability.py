"""Crash safety, fail-fast checks and tracking hygiene, tested with real processes."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import TRAIN_STAGE, train_unet_args

from denoiselab import files, models, tracking

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def stage_repo(tmp_path):
    """A folder laid out like the repo, with tiny prepared and noisy data and tiny params."""
    (tmp_path / ".dvc").mkdir()
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["prepare"]["patch_size"] = 16
    params["train"]["crop_size"] = None
    params["train_unet"].update(
        base_filters=4, depth=2, epochs=30, steps_per_epoch=4, batch_size=8, crop_size=None
    )
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    rng = np.random.default_rng(0)
    clean = rng.random((64, 16, 16, 1)).astype(np.float32)
    noisy = np.clip(clean + rng.normal(0, 0.1, clean.shape), 0, 1).astype(np.float32)
    for folder, arrays in (("prepared", clean), ("noisy", noisy)):
        files.save_arrays(tmp_path / f"data/gray/{folder}/train.npz", {"patches": arrays})
        files.save_arrays(tmp_path / f"data/gray/{folder}/val.npz", {"patches": arrays[:16]})
    files.write_json(
        tmp_path / "data/gray/prepared/manifest.json", {"data_hash": "test", "channels": 1}
    )
    return tmp_path


def stage_command():
    return [sys.executable, TRAIN_STAGE, *train_unet_args("reports/history/unet.json")]


def stage_env(uri: str) -> dict:
    env = {key: value for key, value in os.environ.items() if not key.startswith("DVC_")}
    env["MLFLOW_TRACKING_URI"] = uri
    return env


def test_unreachable_tracking_server_stops_the_stage_before_training(stage_repo):
    uri = f"http://alice:s3cret@127.0.0.1:{free_port()}"
    result = subprocess.run(
        stage_command(),
        cwd=stage_repo,
        env=stage_env(uri),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1
    assert "127.0.0.1" in lines[0] and "unreachable" in lines[0]
    assert "s3cret" not in result.stderr + result.stdout
    assert not (stage_repo / "models").exists()
    assert not (stage_repo / "checkpoints").exists()


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [("base", "noise_sigma", -1), ("train_unet", "loss", "huber"), ("train_unet", "epochz", 3)],
)
def test_bad_params_stop_the_stage_naming_the_key(stage_repo, section, key, value):
    params = yaml.safe_load((stage_repo / "params.yaml").read_text())
    params[section][key] = value
    (stage_repo / "params.yaml").write_text(yaml.safe_dump(params))
    before = sorted(path.name for path in stage_repo.rglob("*"))
    uri = f"sqlite:///{stage_repo / 'mlflow.db'}"
    result = subprocess.run(
        stage_command(),
        cwd=stage_repo,
        env=stage_env(uri),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert f"{section}.{key}" in result.stderr
    assert sorted(path.name for path in stage_repo.rglob("*")) == before


def test_killed_training_leaves_no_output_and_resumes(stage_repo):
    uri = f"sqlite:///{stage_repo / 'mlflow.db'}"
    process = subprocess.Popen(
        stage_command(),
        cwd=stage_repo,
        env=stage_env(uri),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 240
    history = None
    while time.time() < deadline and process.poll() is None:
        found = list(stage_repo.glob("checkpoints/*/history.json"))
        if found and len(json.loads(found[0].read_text() or "[]")) >= 3:
            history = found[0]
            break
        time.sleep(0.2)
    assert history is not None, "training never reached epoch 3"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (stage_repo / "models/unet/config.json").exists()
    assert not (stage_repo / "reports/history/unet.json").exists()

    result = subprocess.run(
        stage_command(),
        cwd=stage_repo,
        env=stage_env(uri),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming unet" in result.stderr
    rows = json.loads((stage_repo / "reports/history/unet.json").read_text())
    assert [row["epoch"] for row in rows] == list(range(1, 31))
    # The resumed run printed fewer than 30 epochs: it started after the last finished one.
    assert result.stdout.count("/4 - ") < 30
    import mlflow

    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient()
    info = json.loads((stage_repo / "models/unet/config.json").read_text())
    run = client.get_run(info["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    steps = {point.step for point in client.get_metric_history(run.info.run_id, "val_loss")}
    assert steps >= set(range(4, 31))
    assert not list(stage_repo.glob("checkpoints/*"))


def test_a_run_killed_mid_epoch_and_resumed_ends_as_an_uninterrupted_run(stage_repo, tmp_path):
    # Op determinism makes two uninterrupted runs agree bit for bit, so any difference left is
    # the resume's: the input stream, the optimizer's state and step, the learning rate.
    params = yaml.safe_load((stage_repo / "params.yaml").read_text())
    params["base"]["deterministic"] = True
    params["train_unet"].update(epochs=5, steps_per_epoch=20, precision="float32")
    (stage_repo / "params.yaml").write_text(yaml.safe_dump(params))
    uninterrupted = tmp_path / "uninterrupted"
    shutil.copytree(stage_repo, uninterrupted)
    runs = {}
    for repo in (uninterrupted, stage_repo):
        uri = f"sqlite:///{repo / 'mlflow.db'}"
        runs[repo] = subprocess.Popen(
            stage_command(),
            cwd=repo,
            env=stage_env(uri),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE if repo == uninterrupted else subprocess.DEVNULL,
        )
    killed = runs[stage_repo]
    deadline = time.time() + 240
    while time.time() < deadline and killed.poll() is None:
        found = list(stage_repo.glob("checkpoints/*/history.json"))
        if found and len(json.loads(found[0].read_text() or "[]")) >= 2:
            break
        time.sleep(0.05)
    assert killed.poll() is None, "training ended before it could be killed"
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    assert not (stage_repo / "models/unet/config.json").exists()
    resumed = subprocess.run(
        stage_command(),
        cwd=stage_repo,
        env=stage_env(f"sqlite:///{stage_repo / 'mlflow.db'}"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming unet" in resumed.stderr
    assert "Epoch 1/5" not in resumed.stdout, "the rerun started again from the first epoch"
    _, stderr = runs[uninterrupted].communicate(timeout=300)
    assert runs[uninterrupted].returncode == 0, stderr.decode()[-3000:]

    def outcome(repo):
        model, _ = models.load_model_dir(repo / "models/unet")
        history = json.loads((repo / "reports/history/unet.json").read_text())
        return model.get_weights(), [row["val_loss"] for row in history]

    weights, val_losses = outcome(stage_repo)
    expected_weights, expected_val_losses = outcome(uninterrupted)
    assert val_losses == expected_val_losses
    for array, expected in zip(weights, expected_weights, strict=True):
        np.testing.assert_array_equal(array, expected)


def test_runs_left_running_by_a_dead_process_are_marked_failed(mlflow_store):
    import mlflow

    tracking.setup()
    dead = subprocess.Popen(["true"])
    dead.wait()
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(tracking.EXPERIMENT_NAME)
    tags = {"dvc.stage": "train_unet", "host": socket.gethostname(), "pid": str(dead.pid)}
    crashed = client.create_run(experiment.experiment_id, tags=tags, run_name="unet")
    alive_tags = {**tags, "pid": str(os.getpid())}
    alive = client.create_run(experiment.experiment_id, tags=alive_tags, run_name="unet")
    assert tracking.fail_stale_runs("train_unet") == [crashed.info.run_id]
    assert client.get_run(crashed.info.run_id).info.status == "FAILED"
    assert client.get_run(alive.info.run_id).info.status == "RUNNING"


def test_a_failing_run_is_marked_failed_with_the_error(mlflow_store):
    import mlflow

    tracking.setup()
    with pytest.raises(RuntimeError, match="boom"):
        with tracking.model_run("unet", "train_unet", {"a": 1}):
            raise RuntimeError("boom")
    run = mlflow.search_runs(output_format="list")[0]
    assert run.info.status == "FAILED"
    assert "boom" in run.data.tags["error"]


def test_a_process_that_loses_the_race_to_create_the_experiment_joins_it(
    mlflow_store, monkeypatch
):
    """Two tune-workers start on a fresh store: both miss the experiment, one creates it, and
    the other must take that one rather than crash on the store's unique name."""
    import mlflow

    first = tracking.setup()
    lookup = mlflow.get_experiment_by_name
    missed = []

    def lookup_before_the_other_process_commits(name):
        if not missed:
            missed.append(name)
            return None
        return lookup(name)

    monkeypatch.setattr(mlflow, "get_experiment_by_name", lookup_before_the_other_process_commits)
    assert tracking.setup() == first
    assert missed == [tracking.EXPERIMENT_NAME]
    named = f"name = '{tracking.EXPERIMENT_NAME}'"
    assert len(mlflow.search_experiments(filter_string=named)) == 1


def test_credentials_are_redacted():
    assert tracking.redact("https://bob:pw@host:5000/x") == "https://***@host:5000/x"
    assert tracking.redact("sqlite:///tmp/mlflow.db") == "sqlite:///tmp/mlflow.db"


# Op determinism cannot be switched off again through TensorFlow's public API, so it is turned
# on in a process of its own, leaving the other tests to run as training normally does.
DETERMINISM_SCRIPT = """
import keras, numpy as np
from denoiselab import models, training
from denoiselab.config import TrainConfig

training.enable_op_determinism(True)
rng = np.random.default_rng(0)
clean = rng.random((32, 16, 16, 1)).astype(np.float32)
config = TrainConfig(base_filters=4, depth=2, epochs=1, steps_per_epoch=4, batch_size=8)
weights = []
for _ in range(2):
    keras.utils.set_random_seed(0)
    model = models.build_model(config.architecture(1))
    dataset = training.make_train_dataset(clean, None, config, 0.1, seed=0)
    training.fit(model, dataset, (clean[:8], clean[:8]), config, verbose=0)
    weights.append(model.get_weights())
for first, second in zip(*weights, strict=True):
    np.testing.assert_array_equal(first, second)
print("identical")
"""


def test_deterministic_training_repeats_exactly():
    result = subprocess.run(
        [sys.executable, "-c", DETERMINISM_SCRIPT], capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("identical")


def test_arrays_are_never_unpickled(tmp_path):
    path = tmp_path / "objects.npz"
    np.savez(path, patches=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="allow_pickle"):
        files.load_arrays(path)


def test_a_pruned_trial_run_is_marked_killed_not_failed(mlflow_store):
    import mlflow
    import optuna

    tracking.setup()
    with pytest.raises(optuna.TrialPruned):
        with tracking.model_run(
            "trial-0", "tune_unet", {"a": 1}, stopped_by=(optuna.TrialPruned,)
        ):
            raise optuna.TrialPruned("val_psnr 20.00 dB at epoch 1")
    run = mlflow.search_runs(output_format="list")[0]
    assert run.info.status == "KILLED"
    assert "val_psnr 20.00 dB" in run.data.tags["stopped"]
    assert "error" not in run.data.tags
