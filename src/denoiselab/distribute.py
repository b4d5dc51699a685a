"""tf.distribute strategies for the training stages (``distribution`` in params.yaml).

- ``none``: TensorFlow's default strategy: the first GPU if there is one, else the CPU.
- ``mirrored``: ``MirroredStrategy`` with one replica per GPU present, all of them; without a
  GPU, one per logical CPU device (one, unless the process split the CPU, as the tests do).
- ``multi_worker``: ``MultiWorkerMirroredStrategy`` over the machines listed in ``TF_CONFIG``.
  Every machine runs the same stage command with its own ``TF_CONFIG``; only the chief (worker
  0, or the task of type ``chief``) tracks the run in MLflow and writes the outputs.

``batch_size`` stays the global batch: each of N replicas takes ``batch_size / N`` of it, and the
gradients are summed across replicas, so the same params train the same model whatever the
strategy, up to the order of floating-point sums.
"""

from __future__ import annotations

import json
import logging
import os

import tensorflow as tf

from denoiselab.errors import UserError

log = logging.getLogger(__name__)

TF_CONFIG_EXAMPLE = (
    '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
    '"task": {"type": "worker", "index": 0}}'
)


def parse_tf_config(text: str | None) -> dict:
    """Checks a ``TF_CONFIG`` value; returns it parsed.

    Raises ``ValueError`` naming what is wrong, so a typo on one machine fails at once instead
    of leaving the others waiting for it.
    """
    if not text:
        raise UserError(
            "distribution: multi_worker needs the TF_CONFIG environment variable on every "
            f"machine, e.g. TF_CONFIG='{TF_CONFIG_EXAMPLE}' (each with its own task index)"
        )
    try:
        tf_config = json.loads(text)
    except json.JSONDecodeError as error:
        raise UserError(f"TF_CONFIG is not valid JSON ({error.msg}): {text!r}") from None
    cluster = tf_config.get("cluster") if isinstance(tf_config, dict) else None
    task = tf_config.get("task") if isinstance(tf_config, dict) else None
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise UserError(f"TF_CONFIG needs 'cluster' and 'task' mappings, e.g. {TF_CONFIG_EXAMPLE}")
    task_type, index = task.get("type"), task.get("index")
    members = cluster.get(task_type)
    if not isinstance(members, list) or not isinstance(index, int):
        raise UserError(
            f"TF_CONFIG task {task!r} must name a type listed in cluster "
            f"({', '.join(cluster) or 'none'}) and an integer index"
        )
    if not 0 <= index < len(members):
        raise UserError(
            f"TF_CONFIG task index {index} is out of range: cluster.{task_type} lists "
            f"{len(members)} addresses"
        )
    return tf_config


def is_chief(distribution: str, tf_config: dict | None) -> bool:
    """Whether this process tracks and writes outputs: always, except on the other workers of
    a multi-worker run."""
    if distribution != "multi_worker":
        return True
    task = tf_config["task"]
    if "chief" in tf_config["cluster"]:
        return task["type"] == "chief"
    return task["type"] == "worker" and task["index"] == 0


def cluster_config(distribution: str) -> dict | None:
    """This process's parsed ``TF_CONFIG`` for a multi-worker run, else ``None``."""
    if distribution != "multi_worker":
        return None
    return parse_tf_config(os.environ.get("TF_CONFIG"))


def task_label(tf_config: dict) -> str:
    return f"{tf_config['task']['type']} {tf_config['task']['index']}"


def mirrored_devices(gpus: list[str], cpus: list[str]) -> list[str]:
    """The devices MirroredStrategy mirrors over: every GPU, or else every logical CPU."""
    return list(gpus) if gpus else list(cpus)


def make_strategy(distribution: str) -> tf.distribute.Strategy:
    """The strategy for ``distribution``. Call it before any other TensorFlow work: the
    multi-worker strategy must configure the runtime before it starts."""
    if distribution == "none":
        return tf.distribute.get_strategy()
    if distribution == "mirrored":
        devices = mirrored_devices(
            [device.name for device in tf.config.list_logical_devices("GPU")],
            [device.name for device in tf.config.list_logical_devices("CPU")],
        )
        log.info("mirrored strategy over %s", ", ".join(devices))
        return tf.distribute.MirroredStrategy(devices=devices)
    if distribution == "multi_worker":
        tf_config = cluster_config(distribution)
        log.info("multi-worker strategy: %s of %s", task_label(tf_config), tf_config["cluster"])
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise UserError(f"distribution must be none, mirrored or multi_worker, got {distribution!r}")
