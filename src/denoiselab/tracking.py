"""MLflow tracking: where the store is, one run per model, its params, metrics, tags and
artifacts, the per-epoch callback, and the reaping of runs whose process died.

It knows runs only: packaging a model for MLflow is :mod:`denoiselab.serving`'s job and the
model registry :mod:`denoiselab.registry`'s, so the training stages, which import this module,
never depend on how models are chosen or served.

The default store is the embedded sqlite ``mlflow.db`` at the repository root, with artifacts
in ``mlartifacts/`` beside it, resolved from the repository root also when DVC runs a stage in
a temporary copy (``dvc exp run --temp`` / ``--queue``). ``MLFLOW_TRACKING_URI`` points it at a
team server instead.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from denoiselab import paths
from denoiselab.errors import StoreUnreachableError

log = logging.getLogger(__name__)

# `make smoke` and the end-to-end test set DENOISELAB_EXPERIMENT so that their tiny runs land
# in an experiment of their own, apart from the real runs.
EXPERIMENT_NAME = os.environ.get("DENOISELAB_EXPERIMENT") or "denoiselab"
_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]+@")


def redact(uri: str) -> str:
    """A tracking URI with any ``user:password@`` removed, safe to print or log."""
    return _CREDENTIALS.sub("***@", uri)


def tracking_uri() -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{paths.repo_root() / paths.MLFLOW_STORE_FILE}"


def artifact_location() -> str | None:
    """Artifacts beside the default sqlite store; a server chooses its own."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return None
    return (paths.repo_root() / paths.MLFLOW_ARTIFACTS_FOLDER).as_uri()


def check_store(uri: str | None = None, timeout: float = 5.0) -> None:
    """Fails within ``timeout`` seconds, naming the URI, when the store cannot be reached."""
    uri = uri or tracking_uri()
    shown = redact(uri)
    if uri.startswith(("http://", "https://")):
        # Imported here: with http.client and ssl it is a tenth of a second's imports that
        # `denoiselab denoise`, which reads the registry through this module, does without.
        import urllib.error
        import urllib.parse
        import urllib.request

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
        try:
            experiment_id = mlflow.create_experiment(
                experiment, artifact_location=artifact_location()
            )
        except mlflow.exceptions.MlflowException:
            # Another process (a second tune-worker, a parallel stage) created it since the
            # lookup: take theirs. Anything else wrong with the store fails the lookup too.
            existing = mlflow.get_experiment_by_name(experiment)
            if existing is None:
                raise
            experiment_id = existing.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def git_commit() -> str | None:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=paths.repo_root(),
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


def setup_uri() -> None:
    """Points MLflow at the store, without choosing an experiment."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())


def set_tags(tags: dict[str, str], run_id: str | None = None) -> None:
    """Tags on run ``run_id``, or on the active run."""
    import mlflow

    if run_id is None:
        mlflow.set_tags(tags)
        return
    client = mlflow.MlflowClient()
    for key, value in tags.items():
        client.set_tag(run_id, key, value)


def get_tags(run_id: str) -> dict[str, str]:
    """The tags of run ``run_id``."""
    import mlflow

    return dict(mlflow.MlflowClient().get_run(run_id).data.tags)


def log_metrics(
    metrics: dict[str, float], step: int | None = None, run_id: str | None = None
) -> None:
    """Metrics on run ``run_id`` (a finished run stays finished), or on the active run."""
    import mlflow

    if run_id is None:
        mlflow.log_metrics({key: float(value) for key, value in metrics.items()}, step=step)
        return
    client = mlflow.MlflowClient()
    for key, value in metrics.items():
        client.log_metric(run_id, key, float(value), step=step or 0)


def log_artifact(path: str | Path, artifact_path: str, run_id: str | None = None) -> None:
    """A file as an artifact of run ``run_id``, or of the active run."""
    import mlflow

    if run_id is None:
        mlflow.log_artifact(str(path), artifact_path=artifact_path)
    else:
        mlflow.MlflowClient().log_artifact(run_id, str(path), artifact_path=artifact_path)


def run_exists(run_id: str) -> bool:
    """Whether the store holds run ``run_id``."""
    import mlflow

    try:
        mlflow.MlflowClient().get_run(run_id)
    except mlflow.exceptions.MlflowException:
        return False
    return True


def find_run(tags: dict[str, str]) -> str | None:
    """The id of the newest run of the experiment :func:`setup` chose that carries every tag in
    ``tags`` (values without quotes, such as ids and digests); None when there is none."""
    import mlflow

    if any("'" in value for value in tags.values()):
        raise ValueError(f"tag values with quotes cannot be searched for: {tags}")
    clauses = " and ".join(f"tags.`{key}` = '{value}'" for key, value in tags.items())
    runs = mlflow.search_runs(
        filter_string=clauses,
        order_by=["attributes.start_time DESC"],
        max_results=1,
        output_format="list",
    )
    return runs[0].info.run_id if runs else None


def download_run_artifact(run_id: str, artifact_path: str) -> Path | None:
    """A run's artifact, downloaded; None (with a logged line) when the run lacks it."""
    import mlflow

    try:
        return Path(
            mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact_path)
        )
    except (mlflow.exceptions.MlflowException, OSError) as error:
        log.info("%s not in MLflow run %s: %s", artifact_path, run_id, error)
        return None


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
