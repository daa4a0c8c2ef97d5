"""The exception types a command turns into one line and an exit status.

`main.py` and `python -m dllab_jax.lab` print a `UserError` as a single line (no traceback)
and exit with status 2, so every message must say what is wrong and what to do about it; a
`Stopped` (a run interrupted by a signal, a sweep whose run failed) prints its message and
exits with its own status (128 + signal for a signal, as a shell reports a kill).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator


class UserError(Exception):
    """Bad input from the user: a config key, a path, a checkpoint that does not fit."""


class Stopped(Exception):
    """Stopped on purpose, after saving what there was; `exit_code` is the process's status."""

    exit_code: int = 1


@contextlib.contextmanager
def one_line_errors() -> Iterator[None]:
    """Exits with 'error: <message>' and status 2 on a UserError, with the message and the
    stop's status on a `Stopped`; anything else is a bug and keeps its traceback."""
    try:
        yield
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except Stopped as stop:
        print(stop, file=sys.stderr)
        sys.exit(stop.exit_code)
