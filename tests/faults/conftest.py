"""The fault table: every faults test records what it did through the `fault_row` fixture, and the end of the run
prints one table (fault, expected, observed, data lost, result), the result being the test's own outcome.

Also: the dockerd-restart test runs last (it disturbs everything on the engine), whatever the order of collection.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from cluster_fixtures import cluster  # noqa: F401 (the shared cluster fixture, for the cluster faults)
from model_fixtures import export_models

REPO = Path(__file__).resolve().parents[2]

ROWS = pytest.StashKey[list]()
LAST = "test_dockerd_restart"


@dataclass
class FaultRow:
    nodeid: str
    fault: str
    expected: str
    observed: str
    lost: str


@pytest.fixture
def fault_row(request):
    """Call fault_row(fault, expected, observed, lost) once the fault's effects were observed (before asserting)."""
    rows = request.config.stash.setdefault(ROWS, [])

    def add(fault: str, expected: str, observed: str, lost: str) -> None:
        rows.append(FaultRow(request.node.nodeid, fault, expected, observed, lost))

    return add


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: LAST in item.nodeid)  # stable: only moves the disruptive test to the end


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    rows: list[FaultRow] = config.stash.get(ROWS, [])
    outcomes = {report.nodeid: key for key in ("passed", "failed", "error", "skipped")
                for report in terminalreporter.stats.get(key, []) if getattr(report, "nodeid", None)}
    recorded = {row.nodeid for row in rows}
    for nodeid, outcome in outcomes.items():  # a test that failed before it could record still shows up
        if "tests/faults/" in nodeid and nodeid not in recorded and outcome != "passed":
            rows.append(FaultRow(nodeid, nodeid.split("::")[-1], "", f"{outcome} before observing", "?"))
    if not rows:
        return
    head = ("fault", "expected", "data lost")
    widths = [max(len(title), *(len(getattr(row, name)) for row in rows))
              for title, name in zip(head, ("fault", "expected", "lost"))]
    widths = [min(width, cap) for width, cap in zip(widths, (50, 44, 12))]
    terminalreporter.section("fault table")
    terminalreporter.write_line(f"{head[0]:<{widths[0]}}  {head[1]:<{widths[1]}}  {head[2]:<{widths[2]}}  result  observed")
    for row in rows:
        result = outcomes.get(row.nodeid, "?").upper()
        terminalreporter.write_line(f"{row.fault[:widths[0]]:<{widths[0]}}  {row.expected[:widths[1]]:<{widths[1]}}  "
                                    f"{row.lost[:widths[2]]:<{widths[2]}}  {result:<6}  {row.observed}")


# --------------------------------------------------------------------------------------------------------------
# One serving image for every cluster fault: exported, built and pushed once per session


@dataclass
class Shipped:
    root: Path

    def config(self, namespace: str, replicas: int):
        from tfship import config as tfconfig

        overrides = {
            "build_dir": str(self.root / "build"),
            "models_dir": str(self.root / "models"),
            "models": [{"name": "half_plus_two", "exporter": "half_plus_two"}],
            "kubernetes.namespace": namespace,
            "kubernetes.replicas": replicas,
            # small pods: the 2-core node is shared with every other agent's tests
            "kubernetes.resources.cpu_request": "50m",
            "kubernetes.resources.memory_request": "256Mi",
            "kubernetes.resources.memory_limit": "1Gi",
        }
        return tfconfig.load(REPO / tfconfig.CONFIG_FILE_NAME, overrides=overrides)

    @staticmethod
    def wait_ready(config, count: int, timeout: float) -> list[str]:
        """The app's Ready pods once `count` are Ready (bounded); the last list seen otherwise."""
        from tfship import cluster as tfcluster
        from tfship import smoke

        deadline = time.monotonic() + timeout
        ready: list[str] = []
        while time.monotonic() < deadline:
            try:
                ready = smoke.ready_pods(config, tfcluster.target(config))
            except Exception:  # the API server or the engine may be coming back
                ready = []
            if len(ready) == count:
                return ready
            time.sleep(3)
        return ready


@pytest.fixture(scope="session")
def shipped(cluster):
    from tfship import images, push, registry

    with tempfile.TemporaryDirectory(prefix="tfship-faults-ship-") as folder:
        ship = Shipped(Path(folder))
        config = ship.config("faults-unused", 1)
        export_models(config)
        registry.up(config)
        images.build(config, images=["serving"])
        push.push(config)
        yield ship


@pytest.fixture
def deployed(cluster, shipped):
    """deployed(namespace, replicas) -> config, with that namespace deleted at the end."""
    from tfship import deploy

    made: list[str] = []

    def make(namespace: str, replicas: int):
        config = shipped.config(namespace, replicas)
        made.append(namespace)
        deploy.deploy(config, replicas)
        return config

    yield make
    for namespace in made:
        cluster.kubectl("delete", "namespace", namespace, "--ignore-not-found", "--wait=false", check=False)
