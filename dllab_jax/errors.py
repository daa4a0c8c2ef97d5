"""The one exception type for bad user input.

`main.py` prints a `UserError` as a single line (no traceback) and exits with status 2, so
every message must say what is wrong and what to do about it.
"""


class UserError(Exception):
    """Bad input from the user: a config key, a path, a checkpoint that does not fit."""
