"""How a tfship run starts and ends: one run at a time per project, and SIGTERM unwinding like Ctrl-C.

Two `invoke up` at once would race on build/artifacts.json and on the registry one of them starts; the second
run is refused with the holder's pid and start time instead. The lock is an flock on a file in the state folder,
so the kernel releases it when its holder dies: a killed run never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Iterator

from tfship.config import Config, private_dir
from tfship.errors import TfshipError


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the run is, so every `finally` (port-forwards, acceptance containers, rollbacks) runs
    as it does for Ctrl-C."""


class AnotherRunError(TfshipError):
    exit_code = 75  # EX_TEMPFAIL: try again when the other run is done


def lock_path(config: Config) -> Path:
    project = hashlib.sha256(str(config.root.resolve()).encode()).hexdigest()[:16]
    return private_dir("locks") / f"{config.project}-{project}.lock"


@contextlib.contextmanager
def exclusive(config: Config, what: str) -> Iterator[None]:
    """Hold the project's run lock for the duration; refuse at once (one line) when another run holds it."""
    path = lock_path(config)
    handle = os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT, 0o600), "r+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AnotherRunError(f"another tfship run ({_holder(handle)}) holds {path} for {config.root}",
                                  "wait for it to finish, or stop it (Ctrl-C) and run again") from None
        handle.seek(0)
        handle.truncate()
        json.dump({"pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S"), "what": what}, handle)
        handle.flush()
        yield
    finally:
        handle.close()  # closing the descriptor releases the flock


def _holder(handle) -> str:
    try:
        handle.seek(0)
        info = json.loads(handle.read())
        return f"{info['what']}, pid {info['pid']}, started at {info['started']}"
    except (ValueError, KeyError, TypeError, OSError):
        return "pid unknown"


@contextlib.contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """Turn SIGTERM into Terminated for the duration (main thread only; elsewhere signals cannot be handled)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        raise Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
