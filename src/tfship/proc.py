"""Transition shim (issue 9): the process runner moved to tfship.host.proc; the lead removes this at merge."""

from tfship.host.proc import run, split_lines, start_detached, stop_group, which  # noqa: F401
