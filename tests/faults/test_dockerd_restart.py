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
        engine.ensure_engine()  # starts it again, as tfship's engine.up does
    finally:
        # Whatever happened above: the engine and the cluster every other test on this machine needs.
        engine.ensure_engine()
        tfcluster.up(cluster.config)
    after, restarts = restarted_and_ready(cluster, shipped, config)
    recovered_in = time.monotonic() - started
    results = smoke.smoke_test(config) if len(after) == 3 else []
    image_kept = docker_client.image_id(image_id) is not None
    fault_row("dockerd restarted while 3 replicas serve", "replicas come back; smoke test passes",
              f"dockerd stopped in {stopped_in:.0f}s, 3 Ready again after {recovered_in:.0f}s: {len(after) == 3}, "
              f"container restarts {sorted(restarts.values())}, smoke {sum(r.ok for r in results)}/3 ok",
              "none" if image_kept and len(results) == 3 and all(r.ok for r in results) else "LOST")
    assert dockerd_pids() and dockerd_pids() != [old_pid]
    assert len(after) == 3, after
    assert set(after) == set(before), "the same pods should come back (their containers restarted), not new ones"
    assert image_kept
    assert len(results) == 3 and all(r.ok for r in results), smoke.format_table(results)
