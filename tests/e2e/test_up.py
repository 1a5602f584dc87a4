"""The main job as a user runs it: `invoke up` to a green smoke test on 3 replicas and the web page, `invoke
smoke-test --json`, and a second `invoke up` that rebuilds and pushes nothing.

It runs the real commands from the repository with the project's own tfship.yaml; only the build and model folders
and the namespace are moved aside (TFSHIP_* environment) so the test never touches a user's deployed app.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "tfship-e2e-up"
INVOKE = Path(sys.executable).parent / "invoke"
COMMAND_TIMEOUT = 3000


@pytest.fixture(scope="module")
def env(cluster):
    with tempfile.TemporaryDirectory(prefix="tfship-e2e-up-") as folder:
        yield {**os.environ, "TFSHIP_BUILD_DIR": f"{folder}/build", "TFSHIP_MODELS_DIR": f"{folder}/models",
               "TFSHIP_KUBERNETES_NAMESPACE": NAMESPACE}
    cluster.kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=false", check=False)


def invoke(env: dict, *args: str) -> subprocess.CompletedProcess:
    started = time.monotonic()
    result = subprocess.run([str(INVOKE), *args], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=COMMAND_TIMEOUT)
    print(f"\n$ invoke {' '.join(args)}  ({time.monotonic() - started:.1f}s, exit {result.returncode})")
    print(result.stdout[-4000:], result.stderr[-4000:], sep="\n")
    return result


def test_up_reaches_a_green_smoke_test_on_three_replicas_and_a_second_up_does_nothing(env):
    first = invoke(env, "up")
    assert first.returncode == 0
    assert "3/3 replicas ready" in first.stdout
    assert "web: deployment/tfship-web ready" in first.stderr  # the page comes up beside the model server
    table = first.stdout.split("smoke test:", 1)[1]
    assert table.count(" ok ") == 4 and "FAILED" not in table  # 3 replicas and the page

    smoke = invoke(env, "smoke-test", "--json")
    assert smoke.returncode == 0
    rows = json.loads(smoke.stdout)
    replicas = [r for r in rows if not r["pod"].startswith("svc/")]
    assert len(replicas) == 3 and all(r["ok"] for r in replicas)
    assert all(r["checks"] == r["checks_passed"] == 8 for r in replicas)  # 2 models x (status, metadata, 2 predicts)
    assert all(r["error_rate"] <= 0.05 for r in replicas)
    [page] = [r for r in rows if r["pod"] == "svc/tfship-web"]
    assert page["ok"] and page["checks_passed"] == 1  # held-out digits uploaded through the page

    second = invoke(env, "up")
    assert second.returncode == 0
    assert second.stderr.count("up to date") >= 3  # devel, serving and web images
    assert second.stderr.count(": already in the registry") == 3  # nothing pushed
    assert "Building" not in second.stderr and "Exporting" not in second.stderr
    assert "3/3 ready" in second.stderr and "4 of 4 passed the smoke test" in second.stderr
