"""`invoke deploy` interrupted while it watches a rollout, on the real cluster: SIGINT (Ctrl-C) or SIGTERM lands
while a new revision (a changed server flag) is rolling over 2 serving replicas. The run exits 130 / 143 with one
line, the Deployment is back on the revision it had before the run, every replica Ready on it, and nothing of the
run (kubectl watching the rollout) is left running.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from invoke_runs import run_until

from tfship import cluster as tfcluster
from tfship import config as tfconfig

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
REPLICAS = 2
WATCHING = "updated, "  # deploy's progress line while it watches the rollout ("1 updated, 0 ready of 2")
STAGE_TIMEOUT = 300
READY_TIMEOUT = 300


def project_for(config: tfconfig.Config, folder: Path, extra_args: list[str]) -> Path:
    """A project folder whose tfship.yaml is the repository's with the shipped build and this namespace."""
    settings = yaml.safe_load((REPO / tfconfig.CONFIG_FILE_NAME).read_text())
    settings.update(build_dir=str(config.build_path), models_dir=str(config.models_path),
                    models=[{"name": "half_plus_two", "exporter": "half_plus_two"}])
    settings.setdefault("kubernetes", {}).update(
        namespace=config.kubernetes.namespace, replicas=REPLICAS,
        resources={"cpu_request": "50m", "memory_request": "256Mi", "memory_limit": "1Gi"})
    settings.setdefault("serving", {})["extra_args"] = extra_args
    (folder / tfconfig.CONFIG_FILE_NAME).write_text(yaml.safe_dump(settings))
    return folder


def deployment(config: tfconfig.Config) -> dict:
    return tfcluster.target(config).json("get", "deployment", config.kubernetes.app, "-n", config.kubernetes.namespace)


def revision(state: dict) -> str:
    return state["metadata"]["annotations"]["deployment.kubernetes.io/revision"]


def args_of(state: dict) -> list[str]:
    return state["spec"]["template"]["spec"]["containers"][0].get("args", [])


def settled(config: tfconfig.Config) -> dict:
    """The Deployment once every replica is updated, Ready and the old ReplicaSet is gone (bounded)."""
    state: dict = {}
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        state = deployment(config)
        status = state.get("status", {})
        if (status.get("updatedReplicas") == status.get("readyReplicas") == status.get("replicas") == REPLICAS
                and status.get("observedGeneration") == state["metadata"]["generation"]):
            return state
        time.sleep(3)
    return state


def watching_processes(namespace: str) -> list[str]:
    """kubectl processes of a run against this namespace (rollout status, port-forward) still alive."""
    found = subprocess.run(["pgrep", "-af", f"kubectl.*-n {namespace}"], capture_output=True, text=True, timeout=10)
    return [line for line in found.stdout.splitlines() if "pgrep" not in line]


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_rollout_is_rolled_back(deployed, tmp_path, sig, code, fault_row):
    namespace = f"faults-deploy-{sig.name.lower()}"
    config = deployed(namespace, REPLICAS)
    before = settled(config)
    project = project_for(config, tmp_path, [f"--rest_api_timeout_in_ms={31000 + code}"])
    run, seen = run_until(["deploy"], project, WATCHING, STAGE_TIMEOUT)
    mid_rollout = deployment(config)
    run.send_signal(sig)
    rest, _ = run.communicate(timeout=READY_TIMEOUT + 60)
    output = "\n".join(seen) + "\n" + rest
    after = settled(config)
    left = watching_processes(namespace)
    restored = args_of(after) == args_of(before)
    fault_row(f"{sig.name} while deploy watches a rollout", f"exit {code}, rolled back to the revision before, "
              "all Ready, nothing left running",
              f"exit {run.returncode}, revision {revision(before)} -> {revision(mid_rollout)} -> {revision(after)}, "
              f"template restored: {restored}, ready {after['status'].get('readyReplicas')}/{REPLICAS}, "
              f"kubectl left: {len(left)}",
              "none" if restored else "HALF-APPLIED ROLLOUT LEFT")
    assert args_of(mid_rollout) != args_of(before), "the run had not changed the Deployment yet"
    assert run.returncode == code, output
    last = output.strip().splitlines()[-1]
    assert last.startswith("Error: ") and "rolled back to revision" in output, output
    assert restored, json.dumps(args_of(after))
    assert after["status"].get("readyReplicas") == REPLICAS
    assert not left, left
