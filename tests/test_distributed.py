"""Distributed training: the `distribution` param of the training stages trains the same model
under tf.distribute's mirrored and multi-worker strategies as in a single process."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import yaml
from conftest import TRAIN_STAGE, train_unet_args
from test_parallel_tuning import tiny_params, write_data

from denoiselab import config, distribute, models, training

ROOT = Path(__file__).resolve().parents[1]
STAGE_ARGS = ["--params", "params.yaml", *train_unet_args("history.json")]
# Runs the stage with the CPU split into two logical devices, as a machine with two GPUs.
TWO_CPU_DEVICES = (
    "import runpy, sys, tensorflow as tf; "
    "cpu = tf.config.list_physical_devices('CPU')[0]; "
    "two = [tf.config.LogicalDeviceConfiguration()] * 2; "
    "tf.config.set_logical_device_configuration(cpu, two); "
    "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_project(folder: Path, distribution: str) -> dict:
    """A folder with tiny data and params that train a small U-Net deterministically."""
    params = tiny_params()
    params["base"]["deterministic"] = True
    params["train_unet"].update(
        base_filters=4,
        depth=2,
        batch_size=8,
        epochs=3,
        steps_per_epoch=6,
        crop_size=None,
        precision="float32",
        distribution=distribution,
        # Each patch's loss weighted by its level: the weights travel with the batches and
        # reach the loss under every strategy.
        loss_level_power=0.75,
    )
    folder.mkdir()
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    write_data(folder)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_", "TF_"))}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder / 'mlflow.db'}"
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return env


def start(command: list[str], folder: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        command, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finished(process: subprocess.Popen) -> str:
    try:
        output, _ = process.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        pytest.fail(f"timed out:\n{output[-4000:]}")
    assert process.returncode == 0, output[-4000:]
    return output


def trained(folder: Path) -> tuple[list[np.ndarray], list[dict], dict]:
    model, info = models.load_model_dir(folder / "models/unet")
    return model.get_weights(), json.loads((folder / "history.json").read_text()), info


def run_params(folder: Path, run_id: str) -> dict:
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    return client.get_run(run_id).data.params


@pytest.mark.slow
def test_mirrored_and_two_workers_train_the_model_of_a_single_process(tmp_path):
    single, mirrored, workers = tmp_path / "single", tmp_path / "mirrored", tmp_path / "workers"
    processes = {
        "single": start(
            [sys.executable, TRAIN_STAGE, *STAGE_ARGS], single, make_project(single, "none")
        ),
        "mirrored": start(
            [sys.executable, "-c", TWO_CPU_DEVICES, TRAIN_STAGE, *STAGE_ARGS],
            mirrored,
            make_project(mirrored, "mirrored"),
        ),
    }
    env = make_project(workers, "multi_worker")
    cluster = {"worker": [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]}
    for index in (0, 1):
        tf_config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        worker_env = {**env, "TF_CONFIG": json.dumps(tf_config)}
        # Both workers share one folder, as machines sharing a disk would.
        processes[f"worker{index}"] = start(
            [sys.executable, TRAIN_STAGE, *STAGE_ARGS], workers, worker_env
        )
    outputs = {name: finished(process) for name, process in processes.items()}

    reference, reference_rows, _ = trained(single)
    losses = [row["loss"] for row in reference_rows]
    assert losses[-1] < losses[0], losses
    for folder, replicas in ((mirrored, 2), (workers, 2)):
        weights, rows, info = trained(folder)
        for got, expected in zip(weights, reference, strict=True):
            np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
        assert [row["epoch"] for row in rows] == [1, 2, 3]
        np.testing.assert_allclose([row["loss"] for row in rows], losses, rtol=1e-4)
        np.testing.assert_allclose(
            [row["val_psnr"] for row in rows],
            [row["val_psnr"] for row in reference_rows],
            rtol=1e-4,
        )
        assert run_params(folder, info["mlflow_run_id"])["replicas"] == str(replicas)
    # Only the chief tracked the run and wrote the outputs.
    assert "worker 1: trained unet; the chief tracks the run" in outputs["worker1"]
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{workers / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("denoiselab")
    runs = client.search_runs([experiment.experiment_id])
    assert [found.info.run_name for found in runs] == ["unet"]


def test_multi_worker_without_tf_config_says_how_to_set_it():
    with pytest.raises(ValueError, match="needs the TF_CONFIG environment variable") as error:
        distribute.parse_tf_config(None)
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="not valid JSON"):
        distribute.parse_tf_config("{cluster")
    with pytest.raises(ValueError, match="index 2 is out of range"):
        distribute.parse_tf_config(
            json.dumps(
                {"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 2}}
            )
        )
    with pytest.raises(ValueError, match="must name a type listed in cluster"):
        distribute.parse_tf_config(
            json.dumps({"cluster": {"worker": ["a:1"]}, "task": {"type": "ps", "index": 0}})
        )


def test_the_chief_is_worker_zero_unless_a_chief_task_is_named():
    workers = {"worker": ["a:1", "b:1"]}
    assert distribute.is_chief("none", None)
    assert distribute.is_chief("mirrored", None)
    assert distribute.is_chief(
        "multi_worker", {"cluster": workers, "task": {"type": "worker", "index": 0}}
    )
    assert not distribute.is_chief(
        "multi_worker", {"cluster": workers, "task": {"type": "worker", "index": 1}}
    )
    with_chief = {**workers, "chief": ["c:1"]}
    assert not distribute.is_chief(
        "multi_worker", {"cluster": with_chief, "task": {"type": "worker", "index": 0}}
    )
    assert distribute.is_chief(
        "multi_worker", {"cluster": with_chief, "task": {"type": "chief", "index": 0}}
    )


def test_mirrored_uses_every_gpu_and_falls_back_to_the_cpu_devices():
    gpus = ["/device:GPU:0", "/device:GPU:1"]
    assert distribute.mirrored_devices(gpus, ["/device:CPU:0"]) == gpus
    assert distribute.mirrored_devices([], ["/device:CPU:0"]) == ["/device:CPU:0"]


def test_a_model_built_outside_the_strategy_scope_is_refused():
    train = config.TrainConfig(base_filters=4, depth=2, batch_size=4, epochs=1, steps_per_epoch=1)
    model = models.build_model(train.architecture(1))
    strategy = tf.distribute.MirroredStrategy(devices=["/cpu:0"])
    patches = np.zeros((4, 16, 16, 1), np.float32)
    dataset = training.make_train_dataset(patches, None, train, 0.1, 0)
    with pytest.raises(ValueError, match="built outside the distribution strategy's scope"):
        training.fit(model, dataset, (patches, patches), train, strategy=strategy, verbose=0)


def test_the_draw_order_is_a_fresh_permutation_per_pass_from_the_seed():
    order = training.draw_order(5, 12, seed=3)
    assert len(order) == 12
    assert sorted(order[:5]) == sorted(order[5:10]) == [0, 1, 2, 3, 4]
    assert list(order[:5]) != list(order[5:10])
    np.testing.assert_array_equal(order, training.draw_order(5, 12, seed=3))
    assert list(training.draw_order(5, 12, seed=4)) != list(order)


def test_an_unknown_distribution_names_the_key():
    raw = tiny_params()
    raw["train_cae"]["distribution"] = "horovod"
    with pytest.raises(ValueError, match=r"train_cae\.distribution must be one of"):
        config.parse_params(raw)
