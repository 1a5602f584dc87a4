"""The one process runner: argv only (no shell), output captured or streamed, failures as TfshipError.

Every command runs in its own process group, so a timeout (or Ctrl-C) stops the whole tree it started: a hung
`make` leaves no compiler behind, and a streamed command is timed out like a captured one.
"""

from __future__ import annotations

import codecs
import contextlib
import os
import re
import selectors
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

from tfship.errors import TfshipError

# After SIGTERM, how long a timed-out command's process group gets before SIGKILL.
KILL_GRACE = 2.0


def run(
    argv: Sequence[str | os.PathLike],
    *,
    cwd: Path | str | None = None,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    timeout: float | None = None,
    check: bool = True,
    on_line: Callable[[str], None] | None = None,
    error: type[TfshipError] = TfshipError,
    hint: str | None = None,
) -> subprocess.CompletedProcess:
    """Run argv and return its CompletedProcess (stdout and stderr as text).

    With `on_line`, stdout and stderr are merged and each line is handed over as it comes (live progress).
    `timeout` bounds the whole command, streamed or not; when it passes, the command's process group is stopped.
    A non-zero exit raises `error` with the command, the last lines of its output, and `hint`.
    Never pass a secret in argv: use `input` or `env`.
    """
    args = [str(a) for a in argv]
    try:
        process = subprocess.Popen(
            args,
            cwd=cwd,
            env={**os.environ, **env} if env is not None else None,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if on_line is not None else subprocess.PIPE,
            start_new_session=True,  # its own process group: a timeout stops everything it started
        )
    except FileNotFoundError:
        raise error(f"command not found: {args[0]}", hint or f"install {Path(args[0]).name}") from None
    data = input.encode() if input is not None else None
    try:
        if on_line is None:
            out, err = process.communicate(data, timeout=timeout)
            stdout, stderr = _text(out), _text(err)
        else:
            stdout = stderr = _stream(process, data, on_line, timeout)
    except subprocess.TimeoutExpired:
        stop_group(process)
        raise error(f"'{' '.join(args[:3])}' did not finish within {timeout:.0f}s", hint) from None
    except BaseException:  # Ctrl-C, or on_line raised: leave nothing running
        stop_group(process)
        raise
    finally:
        for pipe in (process.stdin, process.stdout, process.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
    result = subprocess.CompletedProcess(args, process.returncode, stdout, stderr)
    if check and result.returncode != 0:
        tail = (result.stderr or result.stdout or "").strip().splitlines()[-5:]
        detail = " | ".join(line.strip() for line in tail if line.strip())
        raise error(f"'{' '.join(args[:4])}' failed with exit code {result.returncode}: {detail}", hint)
    return result


def _text(data: bytes | None) -> str:
    return (data or b"").decode(errors="replace").replace("\r\n", "\n")


def _stream(process: subprocess.Popen, data: bytes | None, on_line: Callable[[str], None],
            timeout: float | None) -> str:
    """Hand each output line to on_line as it comes, until EOF and exit, or raise TimeoutExpired at the deadline."""
    deadline = None if timeout is None else time.monotonic() + timeout

    def remaining() -> float | None:
        if deadline is None:
            return None
        left = deadline - time.monotonic()
        if left <= 0:
            raise subprocess.TimeoutExpired(process.args, timeout)
        return left

    if data is not None:
        threading.Thread(target=_feed, args=(process.stdin, data), daemon=True).start()
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    output: list[str] = []
    pending = ""
    fd = process.stdout.fileno()
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while True:
            if not selector.select(remaining()):
                continue
            chunk = os.read(fd, 65536)
            text = decoder.decode(chunk, final=not chunk)
            output.append(text)
            lines, pending = split_lines(pending + text, final=not chunk)
            for line in lines:
                on_line(line)
            if not chunk:
                break
    process.wait(timeout=remaining())
    return "".join(output).replace("\r\n", "\n")


def split_lines(text: str, *, final: bool) -> tuple[list[str], str]:
    """The complete lines in `text` (ended by \\n, \\r\\n or a lone \\r, as progress bars print) and the rest.
    A trailing \\r waits for the next chunk: it may be half of a \\r\\n."""
    held = ""
    if not final and text.endswith("\r"):
        text, held = text[:-1], "\r"
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    rest = lines.pop()
    if final and rest:
        lines.append(rest)
        rest = ""
    return lines, rest + held


def _feed(stdin, data: bytes) -> None:
    with contextlib.suppress(BrokenPipeError, OSError):
        stdin.write(data)
        stdin.close()


def stop_group(process: subprocess.Popen) -> None:
    """SIGTERM the process group `process` leads, SIGKILL what is left after KILL_GRACE, and reap the leader."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=KILL_GRACE)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)  # members that ignored SIGTERM or outlived the leader
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=KILL_GRACE)


def start_detached(
    argv: Sequence[str | os.PathLike],
    log_path: Path,
    *,
    cwd: Path | str | None = None,
    env: Mapping[str, str] | None = None,
    truncate_log: bool = False,
) -> subprocess.Popen:
    """Start a long-lived service (dockerd, a registry, the cluster) in its own session, so it outlives this
    command like a service would; its output goes to log_path (appended unless truncate_log, mode 0600).
    The service gets this environment without its secrets: /proc/PID/environ stays readable for as long as a
    daemon lives, and no daemon tfship starts needs a password from it."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(log_path, os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if truncate_log else os.O_APPEND), 0o600)
    with os.fdopen(descriptor, "wb") as log:
        return subprocess.Popen(
            [str(a) for a in argv],
            cwd=cwd,
            env=without_secrets({**os.environ, **(env or {})}),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|CREDENTIAL|API_KEY|ACCESS_KEY|PRIVATE_KEY", re.IGNORECASE)


def without_secrets(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment minus every variable whose name says it holds a secret (TFSHIP_REGISTRY_PASSWORD, ...)."""
    return {name: value for name, value in environ.items() if not SECRET_NAME.search(name)}


def which(name: str) -> str | None:
    from shutil import which as _which

    return _which(name)
