"""The serving contract on the real cluster: an image built with serving.grpc_port / serving.rest_port of its own
becomes Ready (the probes look where the server listens) and passes the smoke test over both ports, and editing
tfship.yaml after the build changes neither the manifests nor the smoke test (both follow build/artifacts.json).

Its own build folder, models and namespace (h9-deploy-contract), removed afterwards.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from model_fixtures import export_models

from tfship import config as tfconfig
from tfship import deploy, images, push, registry, smoke

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "h9-deploy-contract"
MODEL = "half_plus_two"


@pytest.fixture(scope="module")
def built(cluster, tmp_path_factory) -> tfconfig.Config:
    root = tmp_path_factory.mktemp("h9-deploy-contract")
    config = tfconfig.load(REPO / tfconfig.CONFIG_FILE_NAME, overrides={
        "build_dir": str(root / "build"),
        "models_dir": str(root / "models"),
        "models": [{"name": MODEL, "exporter": MODEL, "signatures": ["serving_default", "regress_x_to_y"]}],
        "serving.grpc_port": 9500,
        "serving.rest_port": 9501,
        "kubernetes.namespace": NAMESPACE,
        "kubernetes.resources.cpu_request": "100m",  # other namespaces share the node
    })
    export_models(config)
    images.build(config, ["serving"])
    registry.up(config)
    push.push(config)
    try:
        yield config
    finally:
        # Not waited for: no other test uses this namespace, and its pods drain (preStop) for seconds.
        cluster.kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=false", check=False)


def test_own_ports_serve_and_tfship_yaml_edits_after_the_build_change_nothing(cluster, built):
    # After the build: other ports and a signature the model does not have. Both must be ignored.
    built.serving.grpc_port, built.serving.rest_port = 8500, 8501
    built.models[0].signatures = ["serving_default", "no_such_signature"]

    result = deploy.deploy(built, 1)
    assert (result.ready, result.replicas) == (1, 1)
    deployment = json.loads(cluster.kubectl("get", "deployment", built.kubernetes.app, "-n", NAMESPACE,
                                            "-o", "json").stdout)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"grpc": 9500, "http": 9501}

    results = smoke.smoke_test(built)
    assert len(results) == 1 and results[0].ok, smoke.format_table(results)
    names = [check.name for check in results[0].checks]
    assert names == [f"{MODEL} status", f"{MODEL} metadata", f"{MODEL} predict grpc", f"{MODEL} predict rest"]
