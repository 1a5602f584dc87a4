"""dockerd restarted (SIGTERM, then started again the way tfship starts it) while 3 replicas serve: the replicas
come back on their own (the kubelet restarts their containers) and the smoke test passes.

DISRUPTIVE: every container on this engine stops, the local cluster's pods included. The faults conftest orders
this test last, and its `finally` brings the engine and the cluster back idempotently (engine.ensure_engine,
cluster.up) whatever happened.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tfship import artifacts as tfartifacts
from tfship import cluster as tfcluster
from tfship import docker_client, engine, smoke
from tfship.errors import TfshipError

pytestmark = pytest.mark.e2e

READY_TIMEOUT = 420  # three python-runtime pods import TensorFlow again at once on a 2-core node
STOP_TIMEOUT = 90


def dockerd_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "dockerd":
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def restart_counts(cluster, namespace: str) -> dict[str, int]:
    pods = tfcluster.target(cluster.config).items("get", "pods", "-n", namespace)
    return {pod["metadata"]["name"]: sum(s.get("restartCount", 0) for s in pod["status"].get("containerStatuses", []))
            for pod in pods}


def restarted_and_ready(cluster, shipped, config) -> tuple[list[str], dict[str, int]]:
    """The Ready pods and their restart counts once every pod's container was restarted and is Ready again (bounded).
    Right after the engine comes back the API still shows the pods Ready (the kubelet has not noticed yet): readiness
    alone would be read too early."""
    deadline = time.monotonic() + READY_TIMEOUT
    ready: list[str] = []
    restarts: dict[str, int] = {}
    while time.monotonic() < deadline:
        restarts = restart_counts(cluster, config.kubernetes.namespace)
        if len(restarts) == 3 and min(restarts.values()) >= 1:
            ready = shipped.wait_ready(config, 3, max(1.0, deadline - time.monotonic()))
            if len(ready) == 3:
                break
        time.sleep(3)
    return ready, restarts


def test_dockerd_restart_with_3_replicas_serving(cluster, deployed, shipped, fault_row):
    config = deployed("faults-dockerd", 3)
    before = shipped.wait_ready(config, 3, READY_TIMEOUT)
    assert len(before) == 3, before
    image_id = tfartifacts.load(config.artifacts_path).image("serving").image_id
    [old_pid] = dockerd_pids()
    started = time.monotonic()
    try:
        os.kill(old_pid, signal.SIGTERM)  # dockerd stops its containers (no live-restore here), then exits
        deadline = time.monotonic() + STOP_TIMEOUT
        while old_pid in dockerd_pids() and time.monotonic() < deadline:
            time.sleep(0.5)
        stopped_in = time.monotonic() - started
        assert old_pid not in dockerd_pids(), f"dockerd {old_pid} did not stop within {STOP_TIMEOUT}s"
    finally:
        # Whatever happened above: start the engine again as tfship's engine.up does, and the cluster every other
        # test on this machine needs. A failure here is reported by the assertion below, not raised over it.
        recovery = bring_back(cluster)
    assert dockerd_pids() and dockerd_pids() != [old_pid], recovery
    after, restarts = restarted_and_ready(cluster, shipped, config)
    recovered_in = time.monotonic() - started
    results = smoke.smoke_test(config) if len(after) == 3 else []
    # Reported, not asserted: both are Docker's and the kubelet's doing (dockerd keeps its data root; the kubelet
    # restarts containers in place), and no tfship code could break them for a mutant to show the check red.
    image_kept = docker_client.image_id(image_id) is not None
    same_pods = set(after) == set(before)
    fault_row("dockerd restarted while 3 replicas serve", "replicas come back; smoke test passes",
              f"dockerd stopped in {stopped_in:.0f}s, 3 Ready again after {recovered_in:.0f}s: {len(after) == 3}, "
              f"same pods: {same_pods}, container restarts {sorted(restarts.values())}, "
              f"smoke {sum(r.ok for r in results)}/3 ok",
              "none" if image_kept and len(results) == 3 and all(r.ok for r in results) else "LOST")
    assert len(after) == 3, after
    assert len(results) == 3 and all(r.ok for r in results), smoke.format_table(results)


def bring_back(cluster) -> str:
    """Start the engine and the cluster again (idempotent); "" or what failed, in one line."""
    try:
        engine.ensure_engine()
        tfcluster.up(cluster.config)
    except TfshipError as exc:
        return exc.one_line()
    return ""
