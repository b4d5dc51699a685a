"""MLflow tracking: where the store is, one run per model, tags that link runs to DVC and git.

The default store is the embedded sqlite ``mlflow.db`` at the repository root, with artifacts
in ``mlartifacts/`` beside it, resolved from the repository root also when DVC runs a stage in
a temporary copy (``dvc exp run --temp`` / ``--queue``). ``MLFLOW_TRACKING_URI`` points it at a
team server instead.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import socket
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from denoiselab.errors import StoreUnreachableError

EXPERIMENT_NAME = "denoiselab"
_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]+@")


def redact(uri: str) -> str:
    """A tracking URI with any ``user:password@`` removed, safe to print or log."""
    return _CREDENTIALS.sub("***@", uri)


def repo_root(start: str | Path | None = None) -> Path:
    """The DVC repository the user works in, also from inside DVC's temporary copies."""
    candidates = []
    if os.environ.get("DVC_ROOT"):
        candidates.append(Path(os.environ["DVC_ROOT"]))
    candidates.append(Path(start or Path.cwd()).resolve())
    for candidate in candidates:
        text = str(candidate)
        marker = f"{os.sep}.dvc{os.sep}tmp{os.sep}"
        if marker in text:
            return Path(text.split(marker)[0])
        for folder in [candidate, *candidate.parents]:
            if (folder / ".dvc").is_dir():
                return folder
    return Path.cwd().resolve()


def tracking_uri() -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{repo_root() / 'mlflow.db'}"


def artifact_location() -> str | None:
    """Artifacts beside the default sqlite store; a server chooses its own."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return None
    return (repo_root() / "mlartifacts").as_uri()


def check_store(uri: str | None = None, timeout: float = 5.0) -> None:
    """Fails within ``timeout`` seconds, naming the URI, when the store cannot be reached."""
    uri = uri or tracking_uri()
    shown = redact(uri)
    if uri.startswith(("http://", "https://")):
        parts = urllib.parse.urlsplit(uri)
        netloc = parts.hostname or ""
        if parts.port:
            netloc = f"{netloc}:{parts.port}"
        url = urllib.parse.urlunsplit(
            (parts.scheme, netloc, parts.path.rstrip("/") + "/health", "", "")
        )
        request = urllib.request.Request(url)
        if parts.username:
            token = base64.b64encode(f"{parts.username}:{parts.password or ''}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
                response.read()
        except (urllib.error.URLError, OSError, ValueError) as error:
            reason = redact(str(getattr(error, "reason", error)))
            raise StoreUnreachableError(
                f"MLflow tracking server {shown} is unreachable ({reason}); start it, or unset "
                f"MLFLOW_TRACKING_URI to use the local sqlite store"
            ) from None
    elif uri.startswith("sqlite:///"):
        folder = Path(uri[len("sqlite:///") :]).parent
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise StoreUnreachableError(
                f"MLflow store {shown}: folder {folder} is missing or read-only"
            )


def setup(experiment: str = EXPERIMENT_NAME) -> str:
    """Points MLflow at the store and experiment; returns the experiment id."""
    import mlflow

    uri = tracking_uri()
    check_store(uri)
    mlflow.set_tracking_uri(uri)
    existing = mlflow.get_experiment_by_name(experiment)
    if existing is not None:
        experiment_id = existing.experiment_id
    else:
        experiment_id = mlflow.create_experiment(experiment, artifact_location=artifact_location())
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def git_commit() -> str | None:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=repo_root(),
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None


def run_tags(stage: str) -> dict[str, str]:
    """Tags linking a run to its git commit, DVC stage and DVC experiment, and to the process
    that owns it (so a crashed run can be told from a live one)."""
    tags = {
        "dvc.stage": os.environ.get("DVC_STAGE", stage),
        "host": socket.gethostname(),
        "pid": str(os.getpid()),
    }
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
        tags["git_commit"] = commit
    experiment = os.environ.get("DVC_EXP_NAME")
    if experiment:
        tags["dvc.experiment"] = experiment
    return tags


@contextlib.contextmanager
def model_run(
    name: str,
    stage: str,
    params: dict[str, Any],
    run_id: str | None = None,
    nested: bool = False,
    stopped_by: tuple[type[BaseException], ...] = (),
) -> Iterator[Any]:
    """Starts (or resumes) one MLflow run; marks it FAILED with the error if the body raises,
    or KILLED (stopped on purpose, such as a pruned trial) for the exceptions in ``stopped_by``.
    """
    import mlflow

    with mlflow.start_run(run_id=run_id, run_name=None if run_id else name, nested=nested) as run:
        if run_id is None:
            mlflow.set_tags(run_tags(stage))
            log_params(params)
        else:
            mlflow.set_tags(
                {"pid": str(os.getpid()), "host": socket.gethostname(), "resumed": "true"}
            )
        try:
            yield run
        except BaseException as error:
            stopped = isinstance(error, stopped_by)
            mlflow.set_tag(
                "stopped" if stopped else "error", f"{type(error).__name__}: {error}"[:4000]
            )
            mlflow.end_run(status="KILLED" if stopped else "FAILED")
            raise


def log_params(params: dict[str, Any]) -> None:
    import mlflow

    flat = {key: _param_value(value) for key, value in params.items()}
    mlflow.log_params(flat)


def _param_value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(item) for item in value)
    return str(value)


def epoch_logger():
    """A Keras callback that logs every epoch's metrics to the active MLflow run."""
    import keras
    import mlflow

    # Keras calls the training-batch metrics psnr and ssim_tf; in MLflow those names belong to
    # the final test scores, so the per-epoch training values get a train_ prefix.
    renamed = {"psnr": "train_psnr", "ssim_tf": "train_ssim_tf"}

    class MlflowEpochLogger(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            metrics = {renamed.get(key, key): float(value) for key, value in (logs or {}).items()}
            mlflow.log_metrics(metrics, step=epoch + 1)

    return MlflowEpochLogger()


def log_keras_model(model, channels: int, name: str = "model") -> Any:
    """Logs a Keras model with an explicit tensor signature (NHWC float32, any size)."""
    import mlflow.keras
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    spec = Schema([TensorSpec(np.dtype("float32"), (-1, -1, -1, channels), "noisy")])
    signature = ModelSignature(
        inputs=spec, outputs=Schema([TensorSpec(np.dtype("float32"), (-1, -1, -1, channels))])
    )
    return mlflow.keras.log_model(
        model, name=name, signature=signature, pip_requirements=serving_requirements()
    )


def serving_requirements() -> list[str]:
    """The pinned packages a logged model needs, read from this environment (MLflow adds
    itself). Given explicitly, so MLflow does not load the model in a subprocess to infer
    them, which took about 7 s per model here."""
    from importlib import metadata

    pins = []
    for package in ("tensorflow-cpu", "tensorflow", "keras", "numpy"):
        try:
            pins.append(f"{package}=={metadata.version(package)}")
        except metadata.PackageNotFoundError:
            continue
    return pins


def find_run(name: str, run_id: str | None = None):
    """The run to report on for a model: by id when known, else the newest with that name."""
    import mlflow

    client = mlflow.MlflowClient()
    if run_id:
        return client.get_run(run_id)
    experiment = mlflow.get_experiment_by_name(EXPERIMENT_NAME)
    if experiment is None:
        return None
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"attributes.run_name = '{name}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0] if runs else None


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fail_stale_runs(stage: str, keep: str | None = None) -> list[str]:
    """Marks FAILED the runs of ``stage`` left RUNNING by a process on this host that is gone
    (a crash or a kill), so no interrupted run looks finished or alive. Returns their ids."""
    import mlflow

    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(EXPERIMENT_NAME)
    if experiment is None:
        return []
    stale = []
    host = socket.gethostname()
    for found in client.search_runs(
        [experiment.experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=500
    ):
        tags = found.data.tags
        if found.info.run_id == keep or tags.get("dvc.stage") != stage or tags.get("host") != host:
            continue
        pid = tags.get("pid", "")
        if pid.isdigit() and not _process_alive(int(pid)):
            client.set_tag(found.info.run_id, "error", "the process running this stage was killed")
            client.set_terminated(found.info.run_id, status="FAILED")
            stale.append(found.info.run_id)
    return stale
