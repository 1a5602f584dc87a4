"""The process table: every process this user can see (read from /proc), and stopping a set of them."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

# After SIGKILL, how long terminate() waits for the processes to go.
KILL_WAIT = 10.0


@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    session: int
    exe: str
    argv: tuple[str, ...]
    parent: int = 0


def list_processes() -> list[ProcessInfo]:
    """Every process this user can see, read from /proc (vanishing ones are skipped)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            # Fields 4 (parent) and 6 (session) come after the command name, which may hold spaces: split after ')'.
            fields = stat[stat.rindex(")") + 2:].split()
            parent, session = int(fields[1]), int(fields[3])
            argv = tuple(a for a in (entry / "cmdline").read_bytes().decode(errors="replace").split("\0") if a)
            try:
                exe = os.readlink(entry / "exe")
            except OSError:
                exe = ""
        except (OSError, ValueError, IndexError):
            continue
        found.append(ProcessInfo(int(entry.name), session, exe, argv, parent))
    return found


def flag_value(argv: tuple[str, ...], flag: str) -> str | None:
    """The value of `--flag VALUE` or `--flag=VALUE` in argv."""
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(flag + "="):
            return arg[len(flag) + 1:]
    return None


def is_gone(pid: int) -> bool:
    """True when pid no longer runs: absent, a zombie, or our own child that we just reaped."""
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def signal_all(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def terminate(pids: Iterable[int], timeout: float, *,
              still_running: Callable[[], list[int]] | None = None) -> list[int]:
    """SIGTERM `pids`, SIGKILL what is left after `timeout`, and return the pids that survived even that.

    `still_running` re-reads the set from the process table (a service may start helpers while it stops);
    by default the set is the given pids that are not gone yet.
    """
    pids = list(pids)
    left_now = still_running or (lambda: [pid for pid in pids if not is_gone(pid)])
    signal_all(pids, signal.SIGTERM)
    left = _wait_gone(left_now, time.monotonic() + timeout)
    if left:
        signal_all(left, signal.SIGKILL)
        left = _wait_gone(left_now, time.monotonic() + KILL_WAIT)
    return left


def _wait_gone(left_now: Callable[[], list[int]], deadline: float) -> list[int]:
    while True:
        left = left_now()
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.1)
