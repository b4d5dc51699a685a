"""Errors a user can act on, and the wrapper that turns them into one line and an exit code."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss; no model is saved."""


USER_ERRORS = (ValueError, ConnectionError, NonFiniteLossError)


def stage_main(main: Callable[[], None]) -> None:
    """Runs a stage's main; a bad param, file or store prints one line and exits 2."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        main()
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
