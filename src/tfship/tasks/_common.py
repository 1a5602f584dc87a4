"""What every task shares: config loading with flag overrides, the one place TfshipError becomes an exit, SIGTERM
unwinding like Ctrl-C, and the run lock for tasks that change something."""

from __future__ import annotations

import functools
from typing import Any, Callable

from invoke import Exit

from tfship import config as tfconfig
from tfship import runs
from tfship.errors import TfshipError


def load_config(**overrides: Any) -> tfconfig.Config:
    """Config from every layer; `overrides` are dotted keys from flags (None = flag not given)."""
    return tfconfig.load(overrides=overrides)


def handles_errors(body: Callable) -> Callable:
    """Turn a TfshipError into one `Error: ... (hint: ...)` line and a non-zero exit, with no traceback; Ctrl-C
    and SIGTERM unwind through every `finally` first, then exit 130 / 143 with one line."""

    @functools.wraps(body)
    def wrapper(*args, **kwargs):
        try:
            with runs.sigterm_unwinds():
                return body(*args, **kwargs)
        except TfshipError as error:
            raise Exit(error.one_line(), code=error.exit_code)
        except runs.Terminated:
            raise Exit("Error: terminated (SIGTERM); what was under way was undone or left as the line above says",
                       code=143)
        except KeyboardInterrupt:
            raise Exit("Error: interrupted (Ctrl-C); what was under way was undone or left as the line above says",
                       code=130)

    return wrapper


def exclusive(body: Callable) -> Callable:
    """For tasks that change something (images, registry, cluster, artifacts): one such run per project at a time."""

    @functools.wraps(body)
    def wrapper(*args, **kwargs):
        with runs.exclusive(load_config(), body.__name__):
            return body(*args, **kwargs)

    return wrapper
