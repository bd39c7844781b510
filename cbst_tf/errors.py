"""User-facing errors.

Anything raised as a :class:`CbstError` is an *expected* failure (bad input, missing
file, corrupt image): the CLI prints its message as one line and exits with its
``exit_code`` instead of showing a traceback.
"""

from __future__ import annotations


class CbstError(Exception):
    """An expected failure with a one-line message for the user (exit code 1)."""

    exit_code = 1

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class ConfigError(CbstError):
    """A bad configuration key, type or value (exit code 2, like a usage error)."""

    exit_code = 2


class GateError(CbstError):
    """A quality gate (``--min-miou``) failed (exit code 3)."""

    exit_code = 3
