"""Finding the Docker engine: only an absent engine (no socket, or nothing listening) makes tfship start one."""

from __future__ import annotations

import os
import socket
import subprocess
import threading

import docker
import docker.errors
import pytest
import requests
import urllib3

from tfship import engine
from tfship.errors import DockerError
from tfship.host import processes
from tfship.host.processes import ProcessInfo


@pytest.fixture
def starts(monkeypatch):
    """Record every attempt to install or start a dockerd instead of doing it."""
    started: list[str] = []
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.setattr(engine, "start_dockerd", lambda *a, **k: started.append("start_dockerd"))
    monkeypatch.setattr(engine, "install_docker_io", lambda *a, **k: started.append("install_docker_io"))
    monkeypatch.setattr(engine, "end_half_started_containers", lambda *a, **k: started.append("end_half_started") or 0)
    return started


def client_at(monkeypatch, url: str) -> None:
    """docker.from_env, as tfship calls it, opens `url` instead of the real engine's socket."""
    monkeypatch.setattr(docker, "from_env", lambda **kwargs: docker.DockerClient(base_url=url, version="auto",
                                                                                   timeout=kwargs.get("timeout", 5)))


def test_permission_denied_on_the_socket_is_one_line_and_starts_no_second_engine(monkeypatch, starts):
    def denied(**kwargs):
        # What docker-py raises for a socket this user may not open (the chain docker-py and requests build).
        try:
            try:
                raise PermissionError(13, "Permission denied")
            except PermissionError as err:
                raise requests.exceptions.ConnectionError(urllib3.exceptions.ProtocolError("Connection aborted.", err))
        except requests.exceptions.ConnectionError as exc:
            raise docker.errors.DockerException(f"Error while fetching server API version: {exc}") from exc

    monkeypatch.setattr(docker, "from_env", denied)
    with pytest.raises(DockerError) as raised:
        engine.ensure_engine()
    assert starts == []
    assert "permission denied" in raised.value.message.lower()
    assert "docker group" in raised.value.hint
    assert "\n" not in raised.value.one_line()


def test_something_that_is_not_an_engine_on_the_socket_starts_nothing(tmp_path, monkeypatch, starts):
    path = tmp_path / "docker.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen(4)

    def hang_up():  # accepts and closes at once, as a wrong or dying service would
        for _ in range(4):
            try:
                connection, _ = server.accept()
            except OSError:
                return
            connection.close()

    threading.Thread(target=hang_up, daemon=True).start()
    client_at(monkeypatch, f"unix://{path}")
    try:
        with pytest.raises(DockerError, match="does not answer as a Docker engine"):
            engine.ensure_engine()
    finally:
        server.close()
    assert starts == []


def test_no_socket_at_all_starts_an_engine(tmp_path, monkeypatch, starts):
    client_at(monkeypatch, f"unix://{tmp_path / 'missing.sock'}")
    monkeypatch.setattr(engine.apt, "is_root", lambda: True)
    with pytest.raises(DockerError):  # the recorded start makes nothing answer afterwards
        engine.ensure_engine()
    assert starts == ["end_half_started", "start_dockerd"]  # the last engine's leftovers go before a new one starts


def test_a_stale_socket_nobody_listens_on_counts_as_no_engine(tmp_path, monkeypatch, starts):
    path = tmp_path / "docker.sock"
    with socket.socket(socket.AF_UNIX) as stale:
        stale.bind(str(path))  # the file stays; nothing listens
    client_at(monkeypatch, f"unix://{path}")
    assert engine.probe().absent


SHIM = "/usr/bin/containerd-shim-runc-v2"


def process(pid: int, parent: int, *argv: str) -> ProcessInfo:
    return ProcessInfo(pid, 1, "", argv, parent)


def test_only_shims_left_waiting_in_runc_init_are_ended():
    table = [
        process(10, 1, SHIM, "-namespace", "moby", "-id", "a" * 64, "-address", "/run/containerd.sock"),
        process(11, 10, "runc", "init"),  # a start the last dockerd never finished
        process(20, 1, SHIM, "-namespace", "moby", "-id", "b" * 64),
        process(21, 20, "python", "-m", "tfship.server"),  # a running container (live-restore): kept
        process(30, 1, SHIM, "-namespace", "k8s.io", "-id", "c" * 64),
        process(31, 30, "runc", "init"),  # another containerd's: not Docker's to end
        process(40, 1, SHIM, "-namespace", "moby", "-id", "d" * 64),  # no child at all: nothing holds an IP
        process(50, 1, SHIM, "-namespace", "moby", "-id", "e" * 64),
        process(51, 50, "/pause"),
        process(52, 50, "runc", "init"),  # a `docker exec` starting in a running container: kept
    ]
    assert engine.half_started_containers(table) == [[11, 10]]


def test_the_process_table_knows_each_parent():
    child = subprocess.Popen(["sleep", "30"])  # its parent (us) is neither its process group nor its session
    try:
        [found] = [p for p in processes.list_processes() if p.pid == child.pid]
        assert found.parent == os.getpid()
    finally:
        child.kill()
        child.wait()
