"""Fixtures of the web tests: the real model server (digits exported at test time, half_plus_two from TF Serving's
test data) and the real web app, both on 127.0.0.1; headless Chromium from Debian for the browser tests."""

from __future__ import annotations

import shutil
import socket
import sys
from pathlib import Path
from typing import Iterator

import pytest

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))  # web_harness
sys.path.insert(0, str(HERE.parent / "server"))  # server_harness: the model server on loopback

from server_harness import HALF_PLUS_TWO, ServerProcess  # noqa: E402
from web_harness import MAX_UPLOAD_BYTES, WebProcess  # noqa: E402

REPO = HERE.parents[1]
SCREENSHOTS = REPO / "build" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="session")
def digits_version(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """models/digits/1, exported by the real exporter (seeded: the same weights every run)."""
    from tfship.exporters import digits

    version = tmp_path_factory.mktemp("models") / "digits" / "1"
    version.parent.mkdir(parents=True)
    digits.export(version, log=lambda line: None)
    return version


@pytest.fixture(scope="session")
def model_server(digits_version: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    work = tmp_path_factory.mktemp("model-server")
    config = work / "models.config"
    config.write_text(
        "model_config_list {\n"
        f'  config {{ name: "digits" base_path: "{digits_version.parent}" model_platform: "tensorflow" }}\n'
        f'  config {{ name: "half_plus_two" base_path: "{HALF_PLUS_TWO}" model_platform: "tensorflow" }}\n'
        "}\n")
    server = ServerProcess([f"--model_config_file={config}"], work / "server.log")
    try:
        yield server.wait_ready()
    finally:
        server.stop()


@pytest.fixture(scope="session")
def web(model_server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebProcess]:
    """The page in front of that server; `absent` is a model the server does not serve."""
    app = WebProcess(model_server.grpc_address, "digits,half_plus_two,absent",
                     tmp_path_factory.mktemp("web") / "web.log", f"--max-upload-bytes={MAX_UPLOAD_BYTES}")
    try:
        yield app.wait_up()
    finally:
        app.stop()


@pytest.fixture(scope="session")
def silent_listener() -> Iterator[str]:
    """A TCP port that accepts connections and never answers: a hung model server."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"127.0.0.1:{listener.getsockname()[1]}"


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's Chromium, installed with apt when missing (Playwright's own browser download is not reachable)."""
    if shutil.which(CHROMIUM) is None:
        from tfship.host import apt

        apt.ensure_packages(["chromium"], why="the browser tests drive Debian's headless Chromium")
    return CHROMIUM


@pytest.fixture(scope="session")
def browser(chromium: str):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
