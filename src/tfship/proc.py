"""A small process runner: argv only (no shell), output captured or streamed, failures as TfshipError."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Callable, Mapping, Sequence

from tfship.errors import TfshipError


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
    A non-zero exit raises `error` with the command, the last lines of its output, and `hint`.
    Never pass a secret in argv: use `input` or `env`.
    """
    args = [str(a) for a in argv]
    full_env = {**os.environ, **env} if env is not None else None
    try:
        if on_line is None:
            result = subprocess.run(
                args, cwd=cwd, env=full_env, input=input, timeout=timeout, capture_output=True, text=True
            )
        else:
            result = _stream(args, cwd=cwd, env=full_env, input=input, timeout=timeout, on_line=on_line)
    except FileNotFoundError:
        raise error(f"command not found: {args[0]}", hint or f"install {Path(args[0]).name}")
    except subprocess.TimeoutExpired:
        raise error(f"'{' '.join(args[:3])}' did not finish within {timeout:.0f}s", hint)
    if check and result.returncode != 0:
        tail = (result.stderr or result.stdout or "").strip().splitlines()[-5:]
        detail = " | ".join(line.strip() for line in tail if line.strip())
        raise error(f"'{' '.join(args[:4])}' failed with exit code {result.returncode}: {detail}", hint)
    return result


def _stream(args, *, cwd, env, input, timeout, on_line) -> subprocess.CompletedProcess:
    lines: list[str] = []
    with subprocess.Popen(
        args,
        cwd=cwd,
        env=env,
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as process:
        if input is not None:
            process.stdin.write(input)
            process.stdin.close()
        for line in process.stdout:
            lines.append(line)
            on_line(line.rstrip("\n"))
        returncode = process.wait(timeout=timeout)
    output = "".join(lines)
    return subprocess.CompletedProcess(args, returncode, output, output)


def start_detached(
    argv: Sequence[str | os.PathLike],
    log_path: Path,
    *,
    cwd: Path | str | None = None,
    env: Mapping[str, str] | None = None,
    truncate_log: bool = False,
) -> subprocess.Popen:
    """Start a long-lived service (dockerd, a registry, the cluster) in its own session, so it outlives this
    command like a service would; its output goes to log_path (appended unless truncate_log)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb" if truncate_log else "ab") as log:
        return subprocess.Popen(
            [str(a) for a in argv],
            cwd=cwd,
            env={**os.environ, **env} if env is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def which(name: str) -> str | None:
    from shutil import which as _which

    return _which(name)
