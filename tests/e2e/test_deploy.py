"""deploy on the real cluster with the real serving image: 3 replicas Ready from the local registry, a model that
cannot load fails the deploy with the server's own error while the previous version keeps serving, keep-failed +
rollback, scale 3 -> 1 -> 3, and `kubectl apply --dry-run=server` of the rendered manifests.

Everything is provisioned through the library (export on the host, build, registry, push) into a private build
folder and its own namespace, so the project's build/artifacts.json and deployed app are never touched.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest
import requests

from tfship import artifacts as tfartifacts
from tfship import config as tfconfig
from tfship import deploy, export, images, push, registry, render
from tfship.artifacts import Artifacts, ImageArtifact
from tfship.errors import KubernetesError
from tfship.smoke import PortForward

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "tfship-e2e-deploy"
MODEL = "half_plus_two"
BROKEN_IMAGE = "tfship-e2e-deploy-broken"
# half_plus_two: y = 0.5·x + 2
INSTANCES = [[1.0], [2.0], [5.0]]
EXPECTED = [[2.5], [3.0], [4.5]]


@dataclass
class App:
    config: tfconfig.Config
    artifacts: Artifacts

    @property
    def digest(self) -> str:
        return self.artifacts.image("serving").digest


def e2e_config(root: Path, name: str) -> tfconfig.Config:
    """The project's config, with private build/model folders, one model and the test's own namespace."""
    overrides = {
        "build_dir": str(root / name / "build"),
        "models_dir": str(root / "models"),
        "models": [{"name": MODEL, "exporter": MODEL}],
        "registry.auth": False,
        "kubernetes.namespace": NAMESPACE,
        # Small requests: other namespaces share the 2-core node, and a surge pod must still fit.
        "kubernetes.resources.cpu_request": "100m",
    }
    return tfconfig.load(REPO / tfconfig.CONFIG_FILE_NAME, overrides=overrides)


@pytest.fixture(scope="module")
def workdir():
    with tempfile.TemporaryDirectory(prefix="tfship-e2e-deploy-") as folder:
        yield Path(folder)


@pytest.fixture(scope="module")
def good_app(cluster, workdir) -> App:
    """The real serving image with half_plus_two, pushed to the local insecure registry."""
    config = e2e_config(workdir, "good")
    export.export(config, in_devel=False)
    images.build(config, ["serving"])
    registry.up(config)
    return App(config, push.push(config))


@pytest.fixture(scope="module")
def broken_app(good_app, workdir) -> App:
    """The good image with its SavedModel overwritten by garbage: the server starts and cannot load the model."""
    config = e2e_config(workdir, "broken")
    good = good_app.artifacts.image("serving")
    version = max(good_app.artifacts.models[MODEL])
    client = docker.from_env(timeout=300)
    with tempfile.TemporaryDirectory() as context:
        Path(context, "saved_model.pb").write_bytes(b"this is not a SavedModel\n")
        Path(context, "Dockerfile").write_text(
            f"FROM {good.local_ref}\nCOPY saved_model.pb /models/{MODEL}/{version}/saved_model.pb\n")
        built, _ = client.images.build(path=context, tag=f"{BROKEN_IMAGE}:{good.tag}", rm=True, forcerm=True)
    broken = ImageArtifact(role="serving", name=BROKEN_IMAGE, tag=good.tag, image_id=built.id, user=good.user,
                           runtime=good.runtime)
    tfartifacts.save(config.artifacts_path, Artifacts(images={"serving": broken}, models=good_app.artifacts.models))
    try:
        yield App(config, push.push(config))
    finally:
        for tag in (f"{BROKEN_IMAGE}:{good.tag}", f"{good_app.artifacts.registry}/{config.registry.repository}/"
                    f"{BROKEN_IMAGE}:{good.tag}"):
            try:
                client.images.remove(tag, force=True)
            except docker.errors.ImageNotFound:
                pass
        client.close()


@pytest.fixture(scope="module", autouse=True)
def remove_namespace_afterwards(cluster):
    yield
    cluster.kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=false", check=False)


def deployment(cluster) -> dict:
    return json.loads(cluster.kubectl("get", "deployment", "tfship-serving", "-n", NAMESPACE, "-o", "json").stdout)


def running_pods(cluster, config) -> list[dict]:
    pods = json.loads(cluster.kubectl("get", "pods", "-n", NAMESPACE, "-l", render.selector(config),
                                      "-o", "json").stdout)["items"]
    return [pod for pod in pods if not pod["metadata"].get("deletionTimestamp")]


def ready(pod: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions", []))


def predict_through_port_forward(cluster, pod: str) -> list:
    forward = PortForward(cluster.kubectl_argv(), NAMESPACE, pod, [8501]).start()
    try:
        response = requests.post(f"http://127.0.0.1:{forward.ports[8501]}/v1/models/{MODEL}:predict",
                                 json={"instances": INSTANCES}, timeout=30)
        response.raise_for_status()
        return response.json()["predictions"]
    finally:
        forward.stop()


def assert_serving(cluster, app: App, replicas: int) -> None:
    """`replicas` Ready pods, all running the app's digest, and one of them answering a prediction."""
    pods = running_pods(cluster, app.config)
    assert len(pods) == replicas
    assert all(ready(pod) for pod in pods)
    for pod in pods:
        assert pod["spec"]["containers"][0]["image"].endswith("@" + app.digest)
        assert pod["status"]["containerStatuses"][0]["imageID"].endswith(app.digest)
    assert predict_through_port_forward(cluster, pods[0]["metadata"]["name"]) == EXPECTED


def test_rendered_manifests_pass_server_side_dry_run(cluster, good_app):
    result = deploy.render_manifests(good_app.config)
    assert result.source == "from the cluster"
    served = cluster.kubectl("api-versions").stdout.split()
    assert result.api_versions.pdb == ("policy/v1" if "policy/v1" in served else "policy/v1beta1")
    out_dir = Path(result.out_dir)
    # Namespaced objects can only be dry-run in an existing namespace.
    cluster.kubectl("apply", "-f", str(out_dir / render.NAMESPACE_FILE))
    dry_run = cluster.kubectl("apply", "--dry-run=server", "-f", str(out_dir))
    assert "deployment.apps/tfship-serving" in dry_run.stdout
    assert "poddisruptionbudget.policy/tfship-serving" in dry_run.stdout


def test_three_replicas_become_ready_from_the_insecure_registry(cluster, good_app):
    result = deploy.deploy(good_app.config, 3)
    assert (result.ready, result.replicas, result.digest) == (3, 3, good_app.digest)
    assert_serving(cluster, good_app, 3)
    status = deploy.status(good_app.config)
    assert (status.ready, status.replicas, len(status.pods)) == (3, 3, 3)
    assert json.loads(status.models) == {MODEL: good_app.artifacts.models[MODEL]}


def test_a_model_that_cannot_load_fails_with_the_server_error_and_the_old_version_keeps_serving(
    cluster, good_app, broken_app
):
    deploy.deploy(good_app.config, 3)
    revision_before = deployment(cluster)["metadata"]["annotations"][deploy.REVISION_ANNOTATION]

    with pytest.raises(KubernetesError) as failed:
        deploy.deploy(broken_app.config, 3)

    message = failed.value.message
    assert "keeps crashing" in message
    # The server's own words, from the crashed container's log.
    assert "Failed to load servable version" in message and MODEL in message
    assert "rolled back to revision " + revision_before in message
    assert good_app.digest in message
    assert_serving(cluster, good_app, 3)
    assert deployment(cluster)["spec"]["template"]["spec"]["containers"][0]["image"].endswith(good_app.digest)


def test_keep_failed_leaves_the_broken_rollout_and_rollback_restores_service(cluster, good_app, broken_app):
    deploy.deploy(good_app.config, 3)
    with pytest.raises(KubernetesError, match="left in place"):
        deploy.deploy(broken_app.config, 3, keep_failed=True)
    left = deployment(cluster)
    assert left["spec"]["template"]["spec"]["containers"][0]["image"].endswith(broken_app.digest)
    # maxUnavailable 0: the old pods were never taken away while the new one failed.
    assert sum(1 for pod in running_pods(cluster, good_app.config) if ready(pod)) == 3

    result = deploy.rollback(good_app.config)

    assert result.digest == good_app.digest
    assert_serving(cluster, good_app, 3)


def test_scale_three_to_one_to_three(cluster, good_app):
    deploy.deploy(good_app.config, 3)
    revision = deployment(cluster)["metadata"]["annotations"][deploy.REVISION_ANNOTATION]

    down = deploy.deploy(good_app.config, 1)
    assert (down.ready, down.replicas) == (1, 1)
    assert deployment(cluster)["spec"]["replicas"] == 1

    up = deploy.deploy(good_app.config, 3)
    assert (up.ready, up.replicas) == (3, 3)
    # Scaling is not a new revision: there is nothing to roll back to because of it.
    assert up.revision == revision
    assert_serving(cluster, good_app, 3)


def test_destroy_removes_the_app(cluster, good_app):
    deploy.deploy(good_app.config, 1)
    summary = deploy.destroy(good_app.config)
    assert "deleted" in summary
    assert running_pods(cluster, good_app.config) == []
    left = cluster.kubectl("get", "deployments,services,configmaps,secrets,poddisruptionbudgets", "-n", NAMESPACE,
                           "-l", render.selector(good_app.config), "-o", "name").stdout.split()
    assert left == []
    with pytest.raises(KubernetesError, match="not deployed"):
        deploy.status(good_app.config)
