"""The Docker engine: find a working one, or install and start one on Debian (LAB.md §1).

A working engine is never touched. Where none answers, tfship installs Debian's docker.io, and starts dockerd
with a runtime wrapper as the default runtime: this kind of machine refuses negative oom_score_adj, which the
kubelet asks for (-998 for pod sandboxes), and runc then fails with "can't get final child's PID from pipe".
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from tfship import proc
from tfship.config import Config, state_dir
from tfship.errors import DockerError
from tfship.progress import step

RUNTIME_NAME = "tfship-runc"
START_TIMEOUT = 60.0

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


def engine_answers() -> str | None:
    """The engine's version if `docker info` would work, else None."""
    try:
        import docker

        client = docker.from_env(timeout=5)
        try:
            return client.version().get("Version", "unknown")
        finally:
            client.close()
    except Exception:
        return None


def describe() -> str:
    version = engine_answers()
    if version is None:
        return "no Docker engine answers (run: invoke engine.up)"
    return f"Docker engine {version} answers at {os.environ.get('DOCKER_HOST', 'unix:///var/run/docker.sock')}"


def ensure_engine(config: Config | None = None) -> str:
    """Return a line describing the engine, starting one first if none answers."""
    version = engine_answers()
    if version is not None:
        return f"Docker engine {version} already answers; left as it is"
    if os.environ.get("DOCKER_HOST"):
        raise DockerError(
            f"no Docker engine answers at DOCKER_HOST={os.environ['DOCKER_HOST']}",
            "start that engine, or unset DOCKER_HOST to let tfship start a local one",
        )
    with step("Starting a Docker engine") as progress:
        if shutil.which("dockerd") is None:
            install_docker_io(progress)
        start_dockerd()
        version = engine_answers()
        progress.done(f"Docker engine {version}")
    return f"Docker engine {version} started (log: {dockerd_log()})"


def install_docker_io(progress) -> None:
    if shutil.which("apt-get") is None:
        raise DockerError(
            "no Docker engine answers and this is not a Debian-like machine tfship can install one on",
            "install and start Docker, then run again",
        )
    progress.update("installing Debian's docker.io")
    apt_install(["docker.io"], error=DockerError)


def apt_install(packages: list[str], *, error=DockerError) -> None:
    """Install Debian packages that are missing (one `apt-get update` first, as a fresh machine needs)."""
    missing = [p for p in packages if subprocess.run(["dpkg", "-s", p], capture_output=True).returncode != 0]
    if not missing:
        return
    if os.geteuid() != 0:
        raise error(f"Debian packages {', '.join(missing)} are missing", f"run: sudo apt-get install -y {' '.join(missing)}")
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    proc.run(["apt-get", "update", "-qq"], env=env, timeout=600, error=error, hint="check the apt sources")
    proc.run(["apt-get", "install", "-y", "-qq", *missing], env=env, timeout=1200, error=error,
             hint=f"install them by hand: apt-get install -y {' '.join(missing)}")


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
