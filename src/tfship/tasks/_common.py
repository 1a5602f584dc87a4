"""What every task shares: config loading with flag overrides, and the one place TfshipError becomes an exit."""

from __future__ import annotations

import functools
from typing import Any, Callable

from invoke import Exit

from tfship import config as tfconfig
from tfship.errors import TfshipError


def load_config(**overrides: Any) -> tfconfig.Config:
    """Config from every layer; `overrides` are dotted keys from flags (None = flag not given)."""
    return tfconfig.load(overrides=overrides)


def handles_errors(body: Callable) -> Callable:
    """Turn a TfshipError into one `Error: ... (hint: ...)` line and a non-zero exit, with no traceback."""

    @functools.wraps(body)
    def wrapper(*args, **kwargs):
        try:
            return body(*args, **kwargs)
        except TfshipError as error:
            raise Exit(error.one_line(), code=error.exit_code)
        except KeyboardInterrupt:
            raise Exit("Error: interrupted", code=130)

    return wrapper
