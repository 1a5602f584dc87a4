"""Fixtures of the model server tests; the helpers live in server_harness (a unique module name)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # server_harness, tiny_models

from server_harness import ServerProcess  # noqa: E402


@pytest.fixture
def start_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """start_server(*flags) -> a ServerProcess ready to serve; every one is stopped after the test."""
    started: list[ServerProcess] = []

    def start(*flags: str, wait: bool = True) -> ServerProcess:
        server = ServerProcess(list(flags), tmp_path_factory.mktemp("server") / "server.log")
        started.append(server)
        return server.wait_ready() if wait else server

    yield start
    for server in started:
        server.stop()
