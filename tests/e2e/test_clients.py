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

from tfship import clients, deploy, export, images, models, push, registry, service, smoke
from tfship import cluster as tfcluster
from tfship import config as tfconfig
from tfship.exporters import mnist

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "e2e-clients"
REST_NODE_PORT, GRPC_NODE_PORT = 31851, 31850


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
        })
        export.export(config, in_devel=False)
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
    total = sum(int(part.rsplit(" ", 1)[1]) for part in counts[len("Requests per replica: "):].split(", "))
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
