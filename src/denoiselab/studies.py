"""Optuna studies that several processes share: where the storage lives, how a study is named
after everything that shapes its trials, and opening one whichever process comes first."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path

import optuna
import sqlalchemy.exc
from optuna.trial import TrialState

from denoiselab import tracking
from denoiselab.config import BaseConfig, TuneConfig, to_dict
from denoiselab.errors import StoreUnreachableError, UserError

DEFAULT_STORAGE = "sqlite:///optuna.db"
CREATE_ATTEMPTS = 4
FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
# tune_unet keys that do not change what a trial trains, so they stay out of the study name:
# raising n_trials extends a finished search instead of starting a new one.
NOT_SEARCH_KEYS = (
    "n_trials", "final_epochs", "final_budget_tflop", "warm_start", "storage", "study_name",
)  # fmt: skip


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


def open_storage(location: str) -> optuna.storages.BaseStorage:
    """The Optuna storage at ``location`` (from :func:`storage_location`)."""
    if "://" not in location:
        Path(location).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(location))
    engine_kwargs = {}
    if location.startswith("sqlite:///"):
        Path(location[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        # Processes sharing one sqlite file wait for its lock instead of failing at once.
        engine_kwargs = {"connect_args": {"timeout": 60}}
    for attempt in range(CREATE_ATTEMPTS):
        try:
            return _rdb_storage(location, engine_kwargs)
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


def _rdb_storage(location: str, engine_kwargs: dict) -> optuna.storages.RDBStorage:
    shown = tracking.redact(location)
    try:
        return optuna.storages.RDBStorage(location, engine_kwargs=engine_kwargs)
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
    payload = {
        "search": search,
        "base": dataclasses.asdict(base),
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
    """Creates the study, or joins it when another process created it first."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(
        study_name=name,
        storage=storage,
        load_if_exists=True,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(4, tune.n_trials)),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
    )


def count_finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED_STATES))
