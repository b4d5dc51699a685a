"""Errors a user can act on, and the wrapper that turns them into one line and an exit code."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable


class UserError(ValueError):
    """A problem the user can fix (a bad param, file, model or store), told in one line.

    Only this type becomes a one-line message with exit status 2; any other exception is a
    bug and keeps its traceback.
    """


class StoreUnreachableError(UserError, ConnectionError):
    """The MLflow or Optuna store named in the settings cannot be reached."""


class NonFiniteLossError(UserError, RuntimeError):
    """Training produced a NaN or infinite loss; no model is saved."""


def stage_main(main: Callable[[], None]) -> None:
    """Runs a stage's main; a bad param, file or store prints one line and exits 2."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        main()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
