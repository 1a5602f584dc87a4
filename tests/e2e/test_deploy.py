"""deploy on the real cluster with the real serving image: 3 replicas Ready from the local registry, a model that
cannot load fails the deploy with the server's own error while the previous version keeps serving, an unschedulable
rollout fails fast and rolls back, keep-failed + rollback, scale 3 -> 1 -> 3, destroy, `kubectl apply --dry-run=server`
of the rendered manifests, and the authenticated registry through the pull secret (a wrong one is a clear error).

Everything is provisioned through the library (export on the host, build, registry, push) into a private build
folder and its own namespace, so the project's build/artifacts.json and deployed app are never touched.
"""

from __future__ import annotations

import json
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest
import requests
from model_fixtures import export_models

from tfship import artifacts as tfartifacts
from tfship import config as tfconfig
from tfship import deploy, images, push, registry, render, rollout
from tfship.artifacts import Artifacts, ImageArtifact
from tfship.errors import KubernetesError
from tfship.portforward import PortForward

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "tfship-e2e-deploy"
AUTH_NAMESPACE = "tfship-e2e-deploy-auth"
MODEL = "half_plus_two"
BROKEN_IMAGE = "tfship-e2e-deploy-broken"
UNHELD_IMAGE = "tfship-e2e-deploy-unheld"
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


def e2e_config(root: Path, name: str, *, auth: bool = False, namespace: str = NAMESPACE) -> tfconfig.Config:
    """The project's config, with private build/model folders, one model and the test's own namespace."""
    overrides = {
        "build_dir": str(root / name / "build"),
        "models_dir": str(root / "models"),
        "models": [{"name": MODEL, "exporter": MODEL}],
        "registry.auth": auth,
        "kubernetes.namespace": namespace,
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
    export_models(config)
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
    tfartifacts.save(config.artifacts_path, Artifacts(images={"serving": broken}, models=good_app.artifacts.models,
                                                      serving=good_app.artifacts.serving))
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


@pytest.fixture(scope="module")
def auth_app(good_app, workdir) -> App:
    """The same serving image, pushed to the local TLS + htpasswd registry."""
    config = e2e_config(workdir, "auth", auth=True, namespace=AUTH_NAMESPACE)
    registry.up(config)
    good = good_app.artifacts.image("serving")
    unpushed = ImageArtifact(role="serving", name=good.name, tag=good.tag, image_id=good.image_id, user=good.user,
                             runtime=good.runtime)
    tfartifacts.save(config.artifacts_path, Artifacts(images={"serving": unpushed}, models=good_app.artifacts.models,
                                                      serving=good_app.artifacts.serving))
    app = App(config, push.push(config))
    assert app.artifacts.registry_auth
    return app


@pytest.fixture(scope="module", autouse=True)
def remove_namespaces_afterwards(cluster):
    yield
    for namespace in (NAMESPACE, AUTH_NAMESPACE):
        # Not waited for: no other test uses this namespace, and its pods drain (preStop) for seconds.
        cluster.kubectl("delete", "namespace", namespace, "--ignore-not-found", "--wait=false", check=False)


def forget_registry_references(app: App) -> None:
    """Untag the registry references in the engine the node uses, so the next pod must pull from the registry
    (the layers stay, under the image's local name)."""
    image = app.artifacts.image("serving")
    client = docker.from_env(timeout=60)
    try:
        for reference in (f"{image.repository}:{image.tag}", image.pinned_ref):
            try:
                client.images.remove(reference)
            except docker.errors.ImageNotFound:
                pass
    finally:
        client.close()


def pulled_from_the_registry(cluster, app: App, pods: list[dict]) -> bool:
    """The kubelet's events say these pods' image was pulled, not found already present."""
    names = {pod["metadata"]["name"] for pod in pods}
    events = json.loads(cluster.kubectl("get", "events", "-n", app.config.kubernetes.namespace, "-o", "json").stdout)
    return any(event["involvedObject"]["name"] in names and event.get("reason") == "Pulled"
               and "Successfully pulled" in event.get("message", "") for event in events["items"])


def deployment(cluster, namespace: str = NAMESPACE) -> dict:
    return json.loads(cluster.kubectl("get", "deployment", "tfship-serving", "-n", namespace, "-o", "json").stdout)


def running_pods(cluster, config) -> list[dict]:
    pods = json.loads(cluster.kubectl("get", "pods", "-n", config.kubernetes.namespace, "-l",
                                      render.selector(config), "-o", "json").stdout)["items"]
    return [pod for pod in pods if not pod["metadata"].get("deletionTimestamp")]


def ready(pod: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions", []))


def predict_through_port_forward(cluster, namespace: str, pod: str) -> list:
    forward = PortForward(cluster.kubectl_argv(), namespace, pod, [8501]).start()
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
    assert predict_through_port_forward(cluster, app.config.kubernetes.namespace, pods[0]["metadata"]["name"]) == EXPECTED


def test_rendered_manifests_pass_server_side_dry_run(cluster, good_app):
    result = render.render_manifests(good_app.config)
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
    deploy.destroy(good_app.config)
    forget_registry_references(good_app)
    result = deploy.deploy(good_app.config, 3)
    assert (result.ready, result.replicas, result.digest) == (3, 3, good_app.digest)
    assert_serving(cluster, good_app, 3)
    assert pulled_from_the_registry(cluster, good_app, running_pods(cluster, good_app.config))
    status = deploy.status(good_app.config)
    assert (status.ready, status.replicas, len(status.pods)) == (3, 3, 3)
    assert json.loads(status.models) == {MODEL: good_app.artifacts.models[MODEL]}


def test_a_model_that_cannot_load_fails_with_the_server_error_and_the_old_version_keeps_serving(
    cluster, good_app, broken_app
):
    deploy.deploy(good_app.config, 3)
    revision_before = deployment(cluster)["metadata"]["annotations"][rollout.REVISION_ANNOTATION]

    with pytest.raises(KubernetesError) as failed:
        deploy.deploy(broken_app.config, 3)

    message = failed.value.message
    print(failed.value.one_line())  # shown by pytest -rA: what a user sees
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
    revision = deployment(cluster)["metadata"]["annotations"][rollout.REVISION_ANNOTATION]

    down = deploy.deploy(good_app.config, 1)
    assert (down.ready, down.replicas) == (1, 1)
    assert deployment(cluster)["spec"]["replicas"] == 1

    up = deploy.deploy(good_app.config, 3)
    assert (up.ready, up.replicas) == (3, 3)
    # Scaling is not a new revision: there is nothing to roll back to because of it.
    assert up.revision == revision
    assert_serving(cluster, good_app, 3)


def test_an_unschedulable_rollout_fails_fast_and_rolls_back(cluster, good_app, workdir):
    deploy.deploy(good_app.config, 1)
    greedy = e2e_config(workdir, "good")
    greedy.kubernetes.resources.cpu_request = greedy.kubernetes.resources.cpu_limit = "64"

    with pytest.raises(KubernetesError) as failed:
        deploy.deploy(greedy, 1)

    print(failed.value.one_line())  # shown by pytest -rA: what a user sees
    message = failed.value.message
    assert "cannot be scheduled" in message and "Insufficient cpu" in message
    assert "rolled back to revision" in message
    assert_serving(cluster, good_app, 1)


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


def node_has_credentials_for(registry_address: str) -> bool:
    """The kubelet also pulls with root's ~/.docker/config.json (LAB.md §4): credentials there would hide a bad
    pull secret."""
    docker_config = Path.home() / ".docker" / "config.json"
    if not docker_config.is_file():
        return False
    return registry_address in json.loads(docker_config.read_text() or "{}").get("auths", {})


def test_three_replicas_pull_from_the_authenticated_registry_with_the_pull_secret(cluster, auth_app):
    assert not node_has_credentials_for(auth_app.artifacts.registry), "remove them: docker logout REGISTRY"
    deploy.destroy(auth_app.config)
    forget_registry_references(auth_app)

    result = deploy.deploy(auth_app.config, 3)

    assert (result.ready, result.digest) == (3, auth_app.digest)
    secret = json.loads(cluster.kubectl("get", "secret", auth_app.config.kubernetes.pull_secret_name,
                                        "-n", AUTH_NAMESPACE, "-o", "json").stdout)
    assert secret["type"] == "kubernetes.io/dockerconfigjson"
    assert_serving(cluster, auth_app, 3)
    assert pulled_from_the_registry(cluster, auth_app, running_pods(cluster, auth_app.config))
    rendered = "".join(path.read_text() for path in (auth_app.config.build_path / "k8s").iterdir())
    assert "kind: Secret" not in rendered and secret["data"][".dockerconfigjson"] not in rendered


@pytest.fixture
def unheld_auth_image(auth_app, workdir):
    """A tiny unique image in the authenticated registry that the engine no longer holds at all: the engine
    re-checks credentials only for content it lacks (it served a wrong password from its own store in the lab)."""
    config = e2e_config(workdir, "unheld", auth=True, namespace=AUTH_NAMESPACE)
    unique = uuid.uuid4().hex[:12]
    client = docker.from_env(timeout=120)
    with tempfile.TemporaryDirectory() as context:
        Path(context, "unique.txt").write_text(unique)
        Path(context, "Dockerfile").write_text("FROM scratch\nCOPY unique.txt /unique.txt\nUSER 10001\n")
        built, _ = client.images.build(path=context, tag=f"{UNHELD_IMAGE}:{unique}", rm=True, forcerm=True)
    image = ImageArtifact(role="serving", name=UNHELD_IMAGE, tag=unique, image_id=built.id, user=10001,
                          runtime="python")
    tfartifacts.save(config.artifacts_path, Artifacts(images={"serving": image}, models=auth_app.artifacts.models,
                                                      serving=auth_app.artifacts.serving))
    app = App(config, push.push(config))
    client.images.remove(built.id, force=True)  # every tag: the node must fetch it from the registry
    client.close()
    return app


def test_a_wrong_pull_secret_is_a_clear_pull_error(cluster, unheld_auth_image, monkeypatch):
    app = unheld_auth_image
    assert not node_has_credentials_for(app.artifacts.registry), "remove them: docker logout REGISTRY"
    deploy.destroy(app.config)
    monkeypatch.setenv(registry.USERNAME_ENV, "tfship")
    monkeypatch.setenv(registry.PASSWORD_ENV, "not-the-password")
    # A wrong password fails every retry: the 30 s a just-created secret gets would only be waited out here (the
    # patience itself has unit tests).
    monkeypatch.setattr(rollout, "PULL_PATIENCE_SECONDS", 8.0)

    with pytest.raises(KubernetesError) as failed:
        deploy.deploy(app.config, 1)

    message = failed.value.message
    print(failed.value.one_line())  # shown by pytest -rA: what a user sees
    assert "cannot pull its image" in message
    assert any(word in message.lower() for word in ("unauthorized", "authentication required", "no basic auth"))
    assert "no previous revision" in message
    deploy.destroy(app.config)
