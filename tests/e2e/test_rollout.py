"""Zero-downtime rollout: a new model version goes out through build, push and deploy while a load generator
inside the cluster sends Predict requests to the Service, the way real clients reach the app.

The load runs in a pod from the devel image (it has tensorflow-serving-api), against the Service's ClusterIP taken
from the environment variables Kubernetes injects (the lab cluster has no DNS). It sends gRPC Predict on one
long-lived channel and REST :predict on a new connection each time, with no retries of its own: graceful shutdown
(readiness dropping, preStop, SIGTERM drain) is what must make this pass. The test asserts zero failed requests,
that both versions answered during the rollout, and that every replica ends on the new version.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import pytest
from cluster_fixtures import load_pod
from model_fixtures import export_models

from tfship import artifacts as tfartifacts
from tfship import config as tfconfig
from tfship import deploy, images, push, registry, smoke

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "tfship-e2e-rollout"
MODEL = "half_plus_two"
LOAD_POD = "tfship-load"
LOAD_MAX_SECONDS = 420  # hard cap of the load loop; it normally stops once the new version answered for a while
LOAD_SETTLE_SECONDS = 15  # keep going this long after the new version first answered
LOAD_INTERVAL_SECONDS = 0.02

# Runs inside the cluster. Bounded in time; prints one JSON line at the end. No retries: a failure is counted.
LOAD_SCRIPT = r"""
import json, os, sys, time, urllib.request
import grpc
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

service = os.environ["SERVICE"].upper().replace("-", "_")
host = os.environ[service + "_SERVICE_HOST"]
grpc_port = os.environ[service + "_SERVICE_PORT_GRPC"]
rest_port = os.environ[service + "_SERVICE_PORT_HTTP"]
new_version, max_seconds, settle, interval = (int(os.environ["NEW_VERSION"]), float(os.environ["MAX_SECONDS"]),
                                              float(os.environ["SETTLE_SECONDS"]), float(os.environ["INTERVAL"]))
stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(f"{host}:{grpc_port}"))
request = predict_pb2.PredictRequest()
request.model_spec.name = os.environ["MODEL"]
request.inputs["x"].CopyFrom(tf.make_tensor_proto([[1.0], [2.0], [5.0]], dtype=tf.float32))
body = json.dumps({"instances": [[1.0], [2.0], [5.0]]}).encode()
url = f"http://{host}:{rest_port}/v1/models/{os.environ['MODEL']}:predict"
expected = [[2.5], [3.0], [4.5]]
counts = {"grpc_sent": 0, "grpc_failed": 0, "rest_sent": 0, "rest_failed": 0}
versions, errors, first_new = {}, [], None
print("load started", flush=True)
started = time.monotonic()
while time.monotonic() - started < max_seconds:
    if first_new is not None and time.monotonic() - first_new > settle:
        break
    counts["grpc_sent"] += 1
    try:
        reply = stub.Predict(request, timeout=10)
        assert tf.make_ndarray(reply.outputs["y"]).tolist() == expected, "wrong answer"
        version = reply.model_spec.version.value
        versions[version] = versions.get(version, 0) + 1
        if version == new_version and first_new is None:
            first_new = time.monotonic()
    except Exception as exc:
        counts["grpc_failed"] += 1
        errors.append(f"grpc: {exc}"[:200])
    counts["rest_sent"] += 1
    try:
        http_request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(http_request, timeout=10) as response:
            assert json.load(response)["predictions"] == expected, "wrong answer"
    except Exception as exc:
        counts["rest_failed"] += 1
        errors.append(f"rest: {exc}"[:200])
    time.sleep(interval)
counts.update(seconds=round(time.monotonic() - started, 1), versions={str(k): v for k, v in versions.items()},
              errors=errors[:10])
print("RESULT " + json.dumps(counts), flush=True)
"""


def rollout_config(root: Path) -> tfconfig.Config:
    overrides = {
        "build_dir": str(root / "build"),
        "models_dir": str(root / "models"),
        "models": [{"name": MODEL, "exporter": MODEL}],
        "kubernetes.namespace": NAMESPACE,
        "kubernetes.resources.cpu_request": "100m",  # the 2-core node also runs the load pod and a surge pod
    }
    return tfconfig.load(REPO / tfconfig.CONFIG_FILE_NAME, overrides=overrides)


def ship(config: tfconfig.Config) -> None:
    images.build(config)
    push.push(config)


@pytest.fixture(scope="module")
def workdir():
    with tempfile.TemporaryDirectory(prefix="tfship-e2e-rollout-") as folder:
        yield Path(folder)


@pytest.fixture(scope="module", autouse=True)
def remove_namespace_afterwards(cluster):
    yield
    cluster.kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=false", check=False)


def test_new_model_version_rolls_out_under_load_with_zero_failed_requests(cluster, workdir):
    config = rollout_config(workdir)
    [first] = export_models(config)
    registry.up(config)
    ship(config)
    deploy.deploy(config, 3)
    recorded = tfartifacts.load(config.artifacts_path)
    new_version = first.version + 1
    cluster.kubectl("delete", "pod", LOAD_POD, "-n", NAMESPACE, "--ignore-not-found", "--wait=true", check=False)
    env = {"SERVICE": config.kubernetes.app, "MODEL": MODEL, "NEW_VERSION": str(new_version),
           "MAX_SECONDS": str(LOAD_MAX_SECONDS), "SETTLE_SECONDS": str(LOAD_SETTLE_SECONDS),
           "INTERVAL": str(LOAD_INTERVAL_SECONDS)}
    cluster.kubectl("apply", "-f", "-", input=load_pod(LOAD_POD, NAMESPACE, recorded.image("devel").pinned_ref,
                                                       LOAD_SCRIPT, env, {"cpu": "100m", "memory": "256Mi"}))
    cluster.pod_log_containing(LOAD_POD, NAMESPACE, "load started", timeout=300)

    [second] = export_models(config)
    assert second.version == new_version
    started = time.monotonic()
    ship(config)
    result = deploy.deploy(config, 3)
    rollout_seconds = time.monotonic() - started

    logs = cluster.pod_log_containing(LOAD_POD, NAMESPACE, "RESULT ", timeout=LOAD_MAX_SECONDS + 60)
    load = json.loads(logs.split("RESULT ", 1)[1].splitlines()[0])
    print(f"\nrollout under load: {json.dumps(load)}; build+push+deploy took {rollout_seconds:.1f}s")

    assert load["grpc_sent"] > 100 and load["rest_sent"] > 100
    assert (load["grpc_failed"], load["rest_failed"]) == (0, 0), load["errors"]
    assert set(load["versions"]) == {str(first.version), str(new_version)}
    assert result.ready == 3
    replicas = smoke.smoke_test(config)
    assert len(replicas) == 3
    assert all(r.ok for r in replicas), smoke.format_table(replicas)  # each one AVAILABLE at the new version
