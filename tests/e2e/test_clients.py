"""The user's own models and the clients they run, on the real cluster (namespace e2e-clients).

One app, provisioned through the library into private folders: the mnist exporter's model and a Keras file imported
with model.add (generated smoke checks), built, pushed to the local registry, deployed as 3 replicas behind a
NodePort Service with Prometheus metrics on. Then: the smoke test (the generated checks) passes on every replica,
`predict` reads a PNG of a known digit through the Service, `evaluate` runs out of the cluster (through the node
port) and in it (a Job from the devel image), and the node port answers a plain REST request.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import requests
from model_fixtures import export_models

from tfship import clients, deploy, images, models, push, registry, service, smoke
from tfship import cluster as tfcluster
from tfship import config as tfconfig
from tfship.exporters import mnist

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "e2e-clients"
REST_NODE_PORT, GRPC_NODE_PORT = 31851, 31850
CONNECTION_AGE_MS = 250
SPREAD_REQUESTS, SPREAD_CHANNELS = 15000, 2  # ~30 s, ~100 reconnections per channel; 2 channels for 3 replicas:
# without reconnections one replica gets nothing


def keras_file(path: Path) -> str:
    import keras

    keras.utils.set_random_seed(3)
    inputs = keras.Input((6,), name="features")
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    keras.Model(inputs, keras.layers.Dense(2, name="logits")(hidden)).save(path)
    return str(path)


@pytest.fixture(scope="module")
def app(cluster):
    with tempfile.TemporaryDirectory(prefix="tfship-e2e-clients-") as folder:
        root = Path(folder)
        config = tfconfig.load(REPO / tfconfig.CONFIG_FILE_NAME, overrides={
            "build_dir": str(root / "build"),
            "models_dir": str(root / "models"),
            "models": [{"name": "mnist", "exporter": "mnist", "signatures": ["serving_default", "predict_images"]},
                       {"name": "imported"}],
            "kubernetes.namespace": NAMESPACE,
            "kubernetes.replicas": 3,
            "kubernetes.service_type": "NodePort",
            "kubernetes.node_port": REST_NODE_PORT,
            "kubernetes.grpc_node_port": GRPC_NODE_PORT,
            "kubernetes.resources.cpu_request": "100m",
            "serving.prometheus": True,
            # Short, so a bounded window holds many reconnections (test_load_spread...); tfship.yaml has 30 s.
            "serving.grpc_max_connection_age_ms": CONNECTION_AGE_MS,
        })
        export_models(config)
        models.add(config, keras_file(root / "imported.keras"), "imported")
        images.build(config)
        registry.up(config)
        push.push(config)
        deploy.deploy(config)
        try:
            yield config
        finally:
            tfcluster.target(config).run("delete", "namespace", NAMESPACE, "--wait=false", "--ignore-not-found",
                                         check=False)


def test_generated_checks_pass_on_every_replica(app):
    results = smoke.smoke_test(app)
    assert len(results) == 3
    assert all(r.ok for r in results), smoke.format_table(results)
    names = {c.name for r in results for c in r.checks}
    assert {"imported predict grpc", "imported predict rest", "mnist predict grpc"} <= names


def test_predict_reads_a_digit_png_through_the_service(app, tmp_path):
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    _, held_out = mnist.split_indices(0)
    index = held_out[0]
    ink = (digits.images[index] / 16.0 * 255).astype(np.uint8)
    Image.fromarray(255 - ink).resize((120, 120), Image.Resampling.BICUBIC).save(tmp_path / "digit.png")
    answer = clients.predict(app, "mnist", image=str(tmp_path / "digit.png"))
    assert answer.startswith(f"class {digits.target[index]} (top 3: "), answer


def test_evaluate_through_the_node_port_and_per_replica_counts(app):
    lines: list[str] = []
    rate = clients.evaluate(app, "mnist", num_tests=300, concurrency=6, out=lines.append)
    assert rate <= 1 - mnist.MIN_ACCURACY, lines
    assert f"at 127.0.0.1:{GRPC_NODE_PORT}" in lines[0]
    counts = lines[-1]
    assert counts.startswith("Requests per replica: "), lines
    listed = counts[len("Requests per replica: "):].split(" (", 1)[0]
    total = sum(int(part.rsplit(" ", 1)[1]) for part in listed.split(", "))
    assert total == 300


def test_evaluate_in_cluster_runs_a_job_and_cleans_it_up(app):
    lines: list[str] = []
    rate = clients.evaluate(app, "mnist", num_tests=200, concurrency=4, in_cluster=True, out=lines.append)
    assert rate <= 1 - mnist.MIN_ACCURACY, lines
    assert any(line.startswith("Inference error rate: ") for line in lines), lines
    assert lines[-1].startswith("Requests per replica: ") and "unavailable" not in lines[-1]
    jobs = tfcluster.target(app).run("get", "jobs", "-n", NAMESPACE, "-o", "name").stdout.split()
    assert not [job for job in jobs if "evaluate" in job]


def test_the_node_port_answers_rest_and_status_says_where(app):
    answer = requests.get(f"http://127.0.0.1:{REST_NODE_PORT}/v1/models/mnist", timeout=10)
    assert answer.status_code == 200
    assert answer.json()["model_version_status"][0]["state"] == "AVAILABLE"
    address = service.service_address(app)
    assert address.type == "NodePort" and address.grpc_outside == f"127.0.0.1:{GRPC_NODE_PORT}"


def spread_in_cluster(config) -> dict[str, int]:
    """Requests per replica (from each pod's Prometheus metrics) while an in-cluster Job's long-lived channels send
    SPREAD_REQUESTS predictions through the Service's cluster address."""
    before = service.replica_counts(config, "mnist")
    lines: list[str] = []
    clients.evaluate(config, "mnist", num_tests=SPREAD_REQUESTS, concurrency=SPREAD_CHANNELS, in_cluster=True,
                     out=lines.append)
    after = service.replica_counts(config, "mnist")
    print("\n".join(lines))
    assert len(after) == 3 and None not in after.values(), after
    return {pod: after[pod] - (before.get(pod) or 0) for pod in after}


def test_long_lived_channels_spread_over_every_replica_with_the_connection_age(app):
    counts = spread_in_cluster(app)
    print(f"with grpc.max_connection_age_ms={CONNECTION_AGE_MS}: {counts}")
    assert sum(counts.values()) >= 0.99 * SPREAD_REQUESTS  # every request counted once, by the pod that answered
    assert service.fair_share(counts), f"one replica took more than twice another's share: {counts}"


def test_without_the_connection_age_the_same_channels_stick_to_their_replicas(app):
    """The failing twin: the same Job against the same 3 replicas deployed without a connection age."""
    app.serving.grpc_max_connection_age_ms = 0
    deploy.deploy(app)
    counts = spread_in_cluster(app)
    print(f"without a connection age: {counts}")
    assert not service.fair_share(counts) and min(counts.values()) == 0, counts
