"""MLflow tracking: where the store is, one run per model, tags that link runs to DVC and git.

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
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from denoiselab.errors import StoreUnreachableError, UserError

log = logging.getLogger(__name__)

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


def setup_uri() -> None:
    """Points MLflow at the store, without choosing an experiment."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())


def set_tags(tags: dict[str, str]) -> None:
    """Tags on the active run."""
    import mlflow

    mlflow.set_tags(tags)


def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    """Metrics on the active run."""
    import mlflow

    mlflow.log_metrics({key: float(value) for key, value in metrics.items()}, step=step)


def log_artifact(path: str | Path, artifact_path: str, run_id: str | None = None) -> None:
    """A file as an artifact of run ``run_id``, or of the active run."""
    import mlflow

    if run_id is None:
        mlflow.log_artifact(str(path), artifact_path=artifact_path)
    else:
        mlflow.MlflowClient().log_artifact(run_id, str(path), artifact_path=artifact_path)


def run_exists(run_id: str) -> bool:
    import mlflow

    try:
        mlflow.MlflowClient().get_run(run_id)
    except mlflow.exceptions.MlflowException:
        return False
    return True


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


def log_scores(
    run_id: str,
    scores: dict,
    val_psnr: float | None = None,
    sweep: dict[str, dict[str, dict]] | None = None,
) -> None:
    """Final test PSNR/SSIM (and per image) on a model's own run, beside its training curves.

    The validation PSNR on whole images is logged as ``val_image_psnr``: ``val_psnr`` on the
    run is already the per-epoch curve on validation patches, and one more point would join
    that curve. ``sweep`` (mode -> noise level key -> scores) adds
    ``sweep_<mode>_psnr_<level>`` and ``sweep_<mode>_ssim_<level>``, so runs compare level by
    level in the UI.
    """
    import mlflow

    client = mlflow.MlflowClient()
    metrics = {"psnr": scores["psnr"], "ssim": scores["ssim"]}
    metrics["seconds_per_megapixel"] = scores["seconds_per_megapixel"]
    for image, values in scores["per_image"].items():
        metrics[f"psnr_{image}"] = values["psnr"]
        metrics[f"ssim_{image}"] = values["ssim"]
    if val_psnr is not None:
        metrics["val_image_psnr"] = val_psnr
    for mode, levels in (sweep or {}).items():
        for level, level_scores in levels.items():
            metrics[f"sweep_{mode}_psnr_{level}"] = level_scores["psnr"]
            metrics[f"sweep_{mode}_ssim_{level}"] = level_scores["ssim"]
    for key, value in metrics.items():
        client.log_metric(run_id, key, float(value))


def log_denoiser_model(model_dir: str | Path, channels: int, name: str = "model") -> Any:
    """Logs a saved model folder (model.onnx, config.json, weights) as an MLflow pyfunc that
    runs the folder's ONNX graph through the code ``denoiselab denoise`` runs, so what MLflow
    serves is what the evaluate stage scored: float32, padded, tiled, cropped and clipped as
    the command does, for images of any size (signature: NHWC float32, any batch and size).
    """
    import mlflow.pyfunc
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    from denoiselab import model_store, serving

    spec = Schema([TensorSpec(np.dtype("float32"), (-1, -1, -1, channels), serving.INPUT_NAME)])
    output = Schema([TensorSpec(np.dtype("float32"), (-1, -1, -1, channels))])
    pyfunc_log = logging.getLogger("mlflow.pyfunc")
    level = pyfunc_log.level
    with warnings.catch_warnings():
        # MLflow suggests an input example; the explicit tensor signature already says what
        # the model takes, and log_model with an input example fails here. Its note on pickled
        # models does not apply either: the class pickles as a reference to the installed
        # denoiselab.serving module.
        warnings.filterwarnings("ignore", ".*input_example", UserWarning)
        pyfunc_log.setLevel(logging.ERROR)
        try:
            return mlflow.pyfunc.log_model(
                name=name,
                python_model=serving.OnnxDenoiserModel(),
                artifacts={model_store.PYFUNC_ARTIFACT: str(model_dir)},
                signature=ModelSignature(inputs=spec, outputs=output),
                pip_requirements=serving_requirements(),
            )
        finally:
            pyfunc_log.setLevel(level)


def download_model(uri: str, destination: str | Path) -> Path:
    """Downloads an MLflow model (models:/NAME@ALIAS, runs:/RUN_ID/PATH, ...) into
    ``destination``; returns the local folder holding its MLmodel file."""
    import mlflow

    setup_uri()
    try:
        return Path(
            mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(destination))
        )
    except mlflow.exceptions.MlflowException as error:
        raise UserError(f"{uri}: cannot load the MLflow model ({error.message})") from None
    except OSError as error:
        raise UserError(f"{uri}: cannot load the MLflow model ({error})") from None


def serving_requirements() -> list[str]:
    """The pinned packages a logged model needs, read from this environment (MLflow adds
    itself; the denoiselab package itself must be installed where the model is served).
    Given explicitly, so MLflow does not load the model in a subprocess to infer them, which
    took about 7 s per model here."""
    from importlib import metadata

    pins = []
    for package in ("onnxruntime", "numpy", "scikit-image", "cloudpickle"):
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
