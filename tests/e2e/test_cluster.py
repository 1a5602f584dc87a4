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


CONNECT_C = r"""
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
int main(int argc, char **argv) {  /* connect(IP, PORT) within 5 s; print how it ended */
    struct sockaddr_in to = {0};
    to.sin_family = AF_INET;
    to.sin_port = htons(atoi(argv[2]));
    inet_pton(AF_INET, argv[1], &to.sin_addr);
    int s = socket(AF_INET, SOCK_STREAM, 0), error = 0;
    socklen_t size = sizeof error;
    fcntl(s, F_SETFL, O_NONBLOCK);
    if (connect(s, (struct sockaddr *)&to, sizeof to) != 0 && errno != EINPROGRESS) error = errno;
    else {
        struct pollfd wait = {s, POLLOUT, 0};
        if (poll(&wait, 1, 5000) == 0) { puts("timeout"); return 0; }
        getsockopt(s, SOL_SOCKET, SO_ERROR, &error, &size);
    }
    puts(error ? strerror(error) : "connected");
    return 0;
}
"""


def static_image(name: str, source: str, entrypoint: str) -> str:
    """A FROM scratch image holding one static binary, built on the engine the node uses."""
    tag = f"tfship-e2e-cluster-{name}:{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as context:
        subprocess.run(["gcc", "-Os", "-static", "-x", "c", "-o", f"{context}/{entrypoint}", "-"],
                       input=source, text=True, check=True, timeout=120)
        Path(context, "Dockerfile").write_text(
            f'FROM scratch\nCOPY {entrypoint} /{entrypoint}\nUSER 65534\nENTRYPOINT ["/{entrypoint}"]\n')
        client = docker.from_env(timeout=120)
        client.images.build(path=context, tag=tag, rm=True, forcerm=True)
        client.close()
    return tag


def remove_image(tag: str) -> None:
    client = docker.from_env(timeout=120)
    client.images.remove(tag, force=True)
    client.close()


@pytest.fixture
def hello_image():
    tag = static_image("hello", HELLO_C, "hello")
    yield tag
    remove_image(tag)


@pytest.fixture
def connect_image():
    tag = static_image("connect", CONNECT_C, "connect")
    yield tag
    remove_image(tag)


def run_pod(cluster, namespace: str, name: str, image: str, *args: str) -> str:
    """Run a pod to completion (bounded) and return its log."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            # Never pulled: the node's runtime is the engine the image was just built on.
            "containers": [{"name": name, "image": image, "imagePullPolicy": "Never", "args": list(args)}],
        },
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(pod))
    phase = ""
    deadline = time.monotonic() + 120
    for _ in range(120):
        phase = cluster.kubectl("get", "pod", name, "-n", namespace, "-o", "jsonpath={.status.phase}").stdout
        if phase in ("Succeeded", "Failed") or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert phase == "Succeeded", cluster.kubectl("describe", "pod", name, "-n", namespace).stdout
    return cluster.kubectl("logs", name, "-n", namespace).stdout.strip()


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
    assert run_pod(cluster, namespace, "hello", hello_image) == GREETING


def test_a_service_without_ready_pods_refuses_connections_on_this_node(cluster, connect_image, namespace):
    """Before its pods are Ready (a page started before its model server), a Service's IP has no kube-proxy rewrite;
    Docker's forwarding rules would send the connection out of the machine to a real 10.0.0.x host. The local
    provider's guard refuses it on the node instead."""
    if tfcluster.provider_for(cluster.config).name != "local":
        pytest.skip("the guard belongs to the local provider; other clusters route their Service IPs themselves")
    from tfship.cluster import local

    # Checked before any traffic: without the guard the connection below would leave the machine.
    assert subprocess.run(["iptables", "-w", "-C", *local.SERVICE_GUARD], capture_output=True, timeout=30).returncode == 0
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "nobody-ready", "namespace": namespace},
               "spec": {"selector": {"app": "nothing-runs-this"}, "ports": [{"port": 8500}]}}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(service))
    address = cluster.kubectl("get", "service", "nobody-ready", "-n", namespace, "-o",
                              "jsonpath={.spec.clusterIP}").stdout
    assert address.startswith("10.0.0."), address
    assert run_pod(cluster, namespace, "connect", connect_image, address, "8500") == "Connection refused"


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


@pytest.fixture
def own_context(cluster, tmp_path, monkeypatch):
    """The local cluster seen as a user's own cluster: a kubeconfig whose current context has another name."""
    import yaml

    from tfship.cluster import auto, local

    if tfcluster.provider_for(cluster.config).name != "local":
        pytest.skip("needs tfship's local cluster")
    kubeconfig = yaml.safe_load(local.local_kubeconfig().read_text())
    renamed = local.rename_kubeconfig(kubeconfig, "e2e-h9-cluster-own")
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(renamed))
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.setattr(auto, "_chosen", {})
    return "e2e-h9-cluster-own"


def test_auto_uses_a_current_context_that_answers(cluster, own_context):
    from dataclasses import replace

    config = replace(cluster.config, kubernetes=replace(cluster.config.kubernetes, provider="auto", context=""))
    chosen = tfcluster.provider_for(config)
    assert (chosen.name, chosen.context) == ("external", own_context)
    assert chosen.chosen_because.endswith(f"the current kubectl context {own_context} answers")
    status = tfcluster.status(config)
    assert status.ready and status.context == own_context, status.describe()
    # The node is this machine: a loopback registry is within its reach.
    tfcluster.check_pull(config, f"{cluster.config.registry.url}/tfship/tfship-serving:1")
