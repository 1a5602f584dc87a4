"""The local cluster: up, node Ready, a pod from a locally built image runs, status, idempotent up, kubectl errors."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import docker
import pytest

from tfship import cluster as tfcluster
from tfship.errors import KubernetesError

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
GREETING = "hello from a FROM-scratch image on tfship's cluster"
HELLO_C = f'#include <stdio.h>\nint main(void) {{ puts("{GREETING}"); return 0; }}\n'


@pytest.fixture
def hello_image():
    """A FROM scratch image holding one static binary, built on the engine the node uses; removed afterwards."""
    tag = f"tfship-e2e-cluster-hello:{uuid.uuid4().hex[:8]}"
    client = docker.from_env(timeout=120)
    with tempfile.TemporaryDirectory() as context:
        subprocess.run(["gcc", "-Os", "-static", "-x", "c", "-o", f"{context}/hello", "-"],
                       input=HELLO_C, text=True, check=True, timeout=120)
        Path(context, "Dockerfile").write_text('FROM scratch\nCOPY hello /hello\nUSER 65534\nENTRYPOINT ["/hello"]\n')
        client.images.build(path=context, tag=tag, rm=True, forcerm=True)
    yield tag
    client.images.remove(tag, force=True)
    client.close()


@pytest.fixture
def namespace(cluster):
    name = f"tfship-e2e-cluster-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false")


def test_node_is_ready_and_serves_1_20(cluster):
    status = tfcluster.status(cluster.config)
    assert status.ready, status.describe()
    if tfcluster.provider_for(cluster.config).name == "local":  # auto picks local where no other context answers
        assert [node.version for node in status.nodes] == [f"v{tfcluster.KUBERNETES_VERSION}"]
        assert status.context == "tfship-local"


def test_a_pod_from_a_locally_built_image_runs(cluster, hello_image, namespace):
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "hello", "namespace": namespace},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            # Never pulled: the node's runtime is the engine the image was just built on.
            "containers": [{"name": "hello", "image": hello_image, "imagePullPolicy": "Never"}],
        },
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(pod))
    phase = ""
    deadline = time.monotonic() + 120
    for _ in range(120):
        phase = cluster.kubectl("get", "pod", "hello", "-n", namespace, "-o", "jsonpath={.status.phase}").stdout
        if phase in ("Succeeded", "Failed") or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert phase == "Succeeded", cluster.kubectl("describe", "pod", "hello", "-n", namespace).stdout
    assert cluster.kubectl("logs", "hello", "-n", namespace).stdout.strip() == GREETING


def test_cluster_status_task_reports_ready(cluster):
    # The invoke of the interpreter running the tests (the venv's), in this checkout.
    result = subprocess.run([str(Path(sys.executable).parent / "invoke"), "cluster.status"], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert ": Ready, kubelet v" in result.stdout
    assert f"kubectl context {cluster.context}" in result.stderr  # the context in use is named


def test_second_up_is_a_quick_no_op(cluster):
    again = tfcluster.up(cluster.config)
    assert "already Ready" in again or tfcluster.provider_for(cluster.config).name != "local"
    assert tfcluster.status(cluster.config).ready


def test_kubectl_failure_is_a_one_line_error_with_a_hint(cluster):
    with pytest.raises(KubernetesError) as raised:
        cluster.kubectl("get", "pod", "no-such-pod", "-n", "default")
    assert "NotFound" in raised.value.message or "not found" in raised.value.message
    assert raised.value.one_line().startswith("Error: ") and "\n" not in raised.value.one_line()
    assert "cluster.status" in raised.value.hint
