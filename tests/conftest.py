"""What every layer of the suite shares: a marker per layer, from the folder a test lives in, so a developer runs
one layer with `-m unit` (no Docker), `-m server`, `-m web`, `-m integration`, `-m e2e`, or `-m "not e2e"`."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

LAYERS = {
    "unit": "no Docker, no network: pure library code (fakes at most)",
    "server": "the real model server on 127.0.0.1",
    "integration": "the real Docker engine and registries on loopback",
    "web": "the web page on loopback, in headless Chromium",
    "faults": "faults and hostile input against real components",
    "e2e": "the real Kubernetes cluster",
}
TESTS = Path(__file__).resolve().parent
# The helpers every layer imports by name (cluster_fixtures, model_fixtures, registry_fixtures, ...).
sys.path.insert(0, str(TESTS / "fixtures"))


def pytest_configure(config: pytest.Config) -> None:
    for layer, meaning in LAYERS.items():
        config.addinivalue_line("markers", f"{layer}: {meaning}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        try:
            layer = Path(item.path).resolve().relative_to(TESTS).parts[0]
        except ValueError:
            continue
        if layer in LAYERS:
            item.add_marker(layer)
