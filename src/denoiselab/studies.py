"""Optuna studies that several processes share: where the storage lives, how a study is named
after everything that shapes its trials, and opening one whichever process comes first."""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from pathlib import Path

import optuna
import sqlalchemy.exc
from optuna.trial import TrialState

from denoiselab import tracking
from denoiselab.config import TRIAL_SET_KEYS, BaseConfig, TuneConfig, to_dict
from denoiselab.errors import StoreUnreachableError, UserError

DEFAULT_STORAGE = "sqlite:///optuna.db"
CREATE_ATTEMPTS = 4
# A running trial records a heartbeat in an RDB storage every HEARTBEAT_INTERVAL seconds. A
# trial whose process died (killed, out of memory, machine lost) stops beating; after
# GRACE_PERIOD seconds the next process that starts a trial marks it FAIL and enqueues the same
# parameters again, at most MAX_RETRY times, so a dead worker never leaves a trial RUNNING.
HEARTBEAT_INTERVAL = 30
GRACE_PERIOD = 120
MAX_RETRY = 2
FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
# tune_unet keys that do not change what a trial trains, so they stay out of the study name:
# raising n_trials extends a finished search instead of starting a new one.
NOT_SEARCH_KEYS = (
    "n_trials",
    "final_epochs",
    "final_budget_s",
    "warm_start",
    "storage",
    "study_name",
)


def storage_location(storage: str | None, root: Path) -> str:
    """``tune_unet.storage`` made absolute: an RDB URL, or the path of a journal file.

    Relative sqlite files and journal paths are taken from the repository root, so the stage
    (also inside ``dvc exp run --temp``) and a worker started in the repository share one file.
    """
    storage = storage or DEFAULT_STORAGE
    if storage.startswith("sqlite:///"):
        path = Path(storage[len("sqlite:///") :])
        return storage if path.is_absolute() else f"sqlite:///{root / path}"
    if storage.startswith("postgresql://"):
        # SQLAlchemy's default PostgreSQL driver is psycopg 3; the team extra installs psycopg2.
        return "postgresql+psycopg2://" + storage[len("postgresql://") :]
    if "://" in storage:
        return storage
    path = Path(storage)
    return str(path if path.is_absolute() else root / path)


def open_storage(
    location: str, heartbeat_interval: int = HEARTBEAT_INTERVAL, grace_period: int = GRACE_PERIOD
) -> optuna.storages.BaseStorage:
    """The Optuna storage at ``location`` (from :func:`storage_location`).

    RDB storages (sqlite, PostgreSQL) watch running trials with a heartbeat and retry those
    whose process died. Optuna's journal storage has no heartbeat: there a killed worker's
    trial stays RUNNING (it is not counted as finished, so the search still completes).
    """
    if "://" not in location:
        Path(location).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(location))
    heartbeat = {"heartbeat_interval": heartbeat_interval, "grace_period": grace_period}
    engine_kwargs = {}
    if location.startswith("sqlite:///"):
        Path(location[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        # Processes sharing one sqlite file wait for its lock instead of failing at once.
        engine_kwargs = {"connect_args": {"timeout": 60}}
    for attempt in range(CREATE_ATTEMPTS):
        try:
            return _rdb_storage(location, engine_kwargs, heartbeat)
        except sqlalchemy.exc.DatabaseError as error:
            # Workers started together race to create the tables of a new database ("table
            # ... already exists", a duplicate row); the loser finds them made by the winner
            # on its next try. Anything else (no server, bad credentials) fails at once.
            if attempt == CREATE_ATTEMPTS - 1 or not _lost_creation_race(error):
                raise _unreachable(location, error) from None
            time.sleep(1 + attempt)
    raise AssertionError("unreachable: the last attempt returns or raises")


def _lost_creation_race(error: sqlalchemy.exc.DatabaseError) -> bool:
    message = str(error.orig or error).lower()
    return isinstance(error, sqlalchemy.exc.IntegrityError) or "already exists" in message


def _unreachable(location: str, error: sqlalchemy.exc.DatabaseError) -> StoreUnreachableError:
    reason = tracking.redact(str(error.orig or error)).splitlines()[0]
    return StoreUnreachableError(
        f"Optuna storage {tracking.redact(location)} is unreachable ({reason})"
    )


def _rdb_storage(
    location: str, engine_kwargs: dict, heartbeat: dict
) -> optuna.storages.RDBStorage:
    shown = tracking.redact(location)
    try:
        with warnings.catch_warnings():
            # Optuna marks the retry callback experimental; its behaviour is what we test.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
            return optuna.storages.RDBStorage(
                location,
                engine_kwargs=engine_kwargs,
                heartbeat_stale_trial_callback=retry,
                **heartbeat,
            )
    except ImportError:
        raise UserError(
            f"Optuna storage {shown} needs its database driver (psycopg2 for PostgreSQL); "
            f"install the team extra: pip install -e '.[team]'"
        ) from None


def code_digest(paths: tuple[str, ...]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()


def study_fingerprint(tune: TuneConfig, base: BaseConfig, data_hash: str, code: str) -> str:
    """A short hash of everything that shapes a trial: search space and budget, base params,
    data and code. Studies are named with it, so a rerun after any of these changed never
    reuses trials of the old configuration, and workers join only a matching search."""
    search = {key: value for key, value in to_dict(tune).items() if key not in NOT_SEARCH_KEYS}
    # Each trial sets these itself, so the shared values do not shape it.
    search["train"] = {
        key: value for key, value in search["train"].items() if key not in TRIAL_SET_KEYS
    }
    payload = {
        "search": search,
        "base": base.model_dump(),
        "data_hash": data_hash,
        "code": code,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def full_study_name(name: str, fingerprint: str) -> str:
    """``name-fingerprint``; a name that already ends with the fingerprint is kept as it is."""
    suffix = f"-{fingerprint}"
    return name if name.endswith(suffix) else f"{name}{suffix}"


def open_study(
    storage: optuna.storages.BaseStorage, name: str, tune: TuneConfig, seed: int | None
) -> optuna.Study:
    """Creates the study, or joins it when another process created it first.

    Trials of dead processes (no heartbeat for the grace period) are failed and re-enqueued
    at once, so they neither show as RUNNING nor wait for this process's first trial.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        load_if_exists=True,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(4, tune.n_trials)),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
    )
    if isinstance(storage, optuna.storages.RDBStorage) and storage.get_heartbeat_interval():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
    return study


def count_finished(study: optuna.Study) -> int:
    """Finished trials, not counting a trial of a dead process that was retried: its retry
    takes its place, so a killed worker does not shorten the search."""
    trials = study.get_trials(deepcopy=False)
    retried = {
        number for trial in trials for number in trial.system_attrs.get("retry_history", ())
    }
    return sum(
        trial.state in FINISHED_STATES
        and not (trial.state == TrialState.FAIL and trial.number in retried)
        for trial in trials
    )
