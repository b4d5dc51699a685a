"""File I/O shared by the stages: atomic writes, safe array and JSON files, file digests.

Every writer goes through :func:`atomic_path`, so a stage killed mid-write never leaves a
half-written output that DVC could cache. Image files are :mod:`denoiselab.images`'s.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from denoiselab.errors import UserError


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """Yields a new, empty temporary file beside ``path``; renames it into place on success.

    ``suffix`` ends the temporary file's name, for writers that choose the format by it
    (Keras writes weights only to a name ending in ``.weights.h5``).

    The temporary file is created with mode 0666 less the process umask, as ``open`` creates
    files, so that outputs get the usual permissions (``tempfile.mkstemp`` would make them
    0600). After an exception the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _create_temporary(path, suffix)
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _create_temporary(path: Path, suffix: str) -> Path:
    for _ in range(100):
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}{suffix}")
        try:
            os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return temporary
    raise FileExistsError(f"{path.parent}: no free name for a temporary file beside {path.name}")


def write_json(path: str | Path, data: Any) -> None:
    """Writes ``data`` as strict JSON: NaN and infinities, which JSON has no words for (and
    which strict parsers reject), become ``null``."""
    text = json.dumps(finite_or_none(data), indent=2, sort_keys=False, allow_nan=False)
    with atomic_path(path) as temporary:
        temporary.write_text(text + "\n")


def finite_or_none(data: Any) -> Any:
    """A copy of nested dicts, lists and tuples with every non-finite float replaced by None."""
    if isinstance(data, dict):
        return {key: finite_or_none(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [finite_or_none(value) for value in data]
    if isinstance(data, float | np.floating):
        return float(data) if math.isfinite(data) else None
    return data


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as error:
        raise UserError(f"{path}: file not found") from error
    except json.JSONDecodeError as error:
        raise UserError(f"{path}: not valid JSON ({error.msg})") from error


def save_arrays(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """Saves named arrays as an uncompressed .npz, atomically and byte-for-byte reproducibly."""
    with atomic_path(path) as temporary:
        with open(temporary, "wb") as handle:
            np.savez(handle, **arrays)


def load_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """Loads an .npz written by :func:`save_arrays`; never unpickles."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found; run the stage that writes it (dvc repro)")
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def sha256_of_array(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def sha256_of_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
