"""The Docker engine: find a working one, or install and start one on Debian (LAB.md §1).

A working engine is never touched. Where none answers, tfship installs Debian's docker.io, and starts dockerd
with a runtime wrapper as the default runtime: this kind of machine refuses negative oom_score_adj, which the
kubelet asks for (-998 for pod sandboxes), and runc then fails with "can't get final child's PID from pipe".
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from tfship.host import apt, proc, processes
from tfship.config import Config, state_dir
from tfship.errors import DockerError
from tfship.progress import step

RUNTIME_NAME = "tfship-runc"
START_TIMEOUT = 60.0
DEFAULT_HOST = "unix:///var/run/docker.sock"

# Rewrites a negative oomScoreAdj in the OCI bundle's config.json to 0, then hands over to runc unchanged.
RUNTIME_WRAPPER = """#!/bin/sh
# Written by tfship: this machine refuses negative oom_score_adj; clamp it to 0 before runc sees it.
bundle=""
prev=""
for arg in "$@"; do
    case "$prev" in --bundle|-b) bundle="$arg" ;; esac
    case "$arg" in --bundle=*) bundle="${arg#--bundle=}" ;; esac
    prev="$arg"
done
if [ -n "$bundle" ] && [ -f "$bundle/config.json" ]; then
    sed -i -E 's/"oomScoreAdj":[[:space:]]*-[0-9]+/"oomScoreAdj":0/' "$bundle/config.json"
fi
exec runc "$@"
"""


@dataclass(frozen=True)
class Probe:
    """What the engine's socket says: a version (it answers), absent (no socket, or nothing listens), or a problem."""

    version: str | None = None
    absent: bool = False
    problem: str = ""


def probe() -> Probe:
    """Ask the engine (DOCKER_HOST, else the default socket) for its version, and tell why not when it does not."""
    import docker

    try:
        client = docker.from_env(timeout=5)
        try:
            return Probe(version=client.version().get("Version", "unknown"))
        finally:
            client.close()
    except Exception as exc:  # docker-py wraps the socket's OSError in its own and requests' exceptions
        cause = _os_error_in(exc)
        if isinstance(cause, (FileNotFoundError, ConnectionRefusedError)):
            return Probe(absent=True, problem=str(cause))
        if isinstance(cause, PermissionError):
            return Probe(problem="permission denied")
        return Probe(problem=_last_words(exc))


def _os_error_in(exc: BaseException) -> OSError | None:
    """The first OSError in an exception's chain (causes, contexts and arguments), breadth first."""
    queue, seen = [exc], set()
    while queue:
        current = queue.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno is not None:
            return current
        queue += [e for e in (current.__cause__, current.__context__, *current.args) if isinstance(e, BaseException)]
    return None


def _last_words(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] or type(exc).__name__


def engine_host() -> str:
    return os.environ.get("DOCKER_HOST", DEFAULT_HOST)


def engine_answers() -> str | None:
    """The engine's version if `docker info` would work, else None."""
    return probe().version


def describe() -> str:
    found = probe()
    if found.version is not None:
        return f"Docker engine {found.version} answers at {engine_host()}"
    if found.absent:
        return f"no Docker engine answers at {engine_host()} (run: invoke engine.up)"
    return f"the Docker engine at {engine_host()} does not answer: {found.problem}"


def ensure_engine(config: Config | None = None) -> str:
    """Return a line describing the engine, starting one first only where none is there at all.

    A socket that exists but refuses this user, or answers as something else, is one clear error: starting a
    second dockerd next to a running one would fight over its state.
    """
    found = probe()
    if found.version is not None:
        return f"Docker engine {found.version} already answers; left as it is"
    if not found.absent:
        if found.problem == "permission denied":
            raise DockerError(
                f"permission denied on the Docker socket {engine_host()}",
                "add this user to the docker group (sudo usermod -aG docker $USER, then log in again), "
                "or point DOCKER_HOST at an engine you may use",
            )
        raise DockerError(f"{engine_host()} does not answer as a Docker engine: {found.problem}",
                          "check the engine (docker info), or point DOCKER_HOST at a working one")
    if os.environ.get("DOCKER_HOST"):
        raise DockerError(
            f"no Docker engine answers at DOCKER_HOST={os.environ['DOCKER_HOST']}",
            "start that engine, or unset DOCKER_HOST to let tfship start a local one",
        )
    if not apt.is_root():
        raise DockerError(f"no Docker engine answers at {engine_host()}",
                          "start Docker (e.g. sudo systemctl start docker), or set DOCKER_HOST")
    with step("Starting a Docker engine") as progress:
        if shutil.which("dockerd") is None:
            install_docker_io(progress)
        ended = end_half_started_containers()
        if ended:
            progress.update(f"ended {ended} container start(s) the last dockerd left half done")
        start_dockerd()
        version = engine_answers()
        if version is None:
            raise DockerError("dockerd started but does not answer", f"see {dockerd_log()}")
        progress.done(f"Docker engine {version}")
    return f"Docker engine {version} started (log: {dockerd_log()})"


def install_docker_io(progress) -> None:
    if shutil.which("apt-get") is None:
        raise DockerError(
            "no Docker engine answers and this is not a Debian-like machine tfship can install one on",
            "install and start Docker, then run again",
        )
    progress.update("installing Debian's docker.io")
    apt.ensure_packages(["docker.io"], error=DockerError, why="for a Docker engine")


def end_half_started_containers() -> int:
    """Ends containers that a dockerd which is gone was still starting (half_started_containers); returns how many.
    Only called while no dockerd runs, so no start can be in progress."""
    leftovers = half_started_containers(processes.list_processes())
    processes.signal_all([pid for group in leftovers for pid in group], signal.SIGKILL)
    return len(leftovers)


def half_started_containers(table: list[processes.ProcessInfo]) -> list[list[int]]:
    """The pids of each leftover container start in the process table: its `runc init` processes, then its shim.

    When dockerd stops while the kubelet starts a container, the container's shim outlives it with `runc init`
    waiting for a start that never comes, and keeps the container's network namespace, so its IP, which the next
    dockerd hands out again: a pod that gets it is never reachable (its probes land in the leftover namespace).
    A shim of Docker's ("moby") namespace whose processes are all `runc init` is such a leftover; a running
    container's shim (an engine with live-restore) has the container's own process and is left alone."""
    children: dict[int, list[processes.ProcessInfo]] = {}
    for process in table:
        children.setdefault(process.parent, []).append(process)
    leftovers = []
    for shim in table:
        if not (shim.argv and shim.argv[0].endswith("containerd-shim-runc-v2") and "moby" in shim.argv[1:]):
            continue
        inside = children.get(shim.pid, [])
        if inside and all(child.argv[:2] == ("runc", "init") for child in inside):
            leftovers.append([*(child.pid for child in inside), shim.pid])
    return leftovers


def dockerd_log() -> Path:
    return state_dir() / "dockerd.log"


def start_dockerd() -> None:
    wrapper = state_dir() / "bin" / RUNTIME_NAME
    wrapper.parent.mkdir(parents=True, exist_ok=True)
    wrapper.write_text(RUNTIME_WRAPPER)
    wrapper.chmod(0o755)
    proc.start_detached(
        ["dockerd", f"--add-runtime={RUNTIME_NAME}={wrapper}", f"--default-runtime={RUNTIME_NAME}"], dockerd_log()
    )
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if engine_answers() is not None:
            return
        time.sleep(0.5)
    tail = dockerd_log().read_text(errors="replace").strip().splitlines()[-3:]
    raise DockerError(
        f"dockerd did not answer within {START_TIMEOUT:.0f}s: {' | '.join(tail)}", f"see {dockerd_log()}"
    )
