"""Deploy from a token-auth registry: the real serving image pushed through `push` to Distribution with `auth: token`
(a token server started by the test, TLS with a generated CA), pulled by digest into the local cluster through an
imagePullSecret, 3 replicas passing the smoke test. Its own namespace (e2e-token), build folder and registry."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest
from model_fixtures import export_models

from tfship import config as tfconfig
from tfship import deploy, images, push, registry, render, smoke

from registry_fixtures import Policy, TokenRegistry, untag

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "e2e-token"
MODEL = "half_plus_two"
USERNAME = "e2e-token-puller"
PASSWORD = "tfship-e2e-" + secrets.token_hex(12)


@pytest.fixture(scope="module")
def token_registry(cluster, tmp_path_factory):
    with TokenRegistry(tmp_path_factory.mktemp("e2e-token-registry"), Policy(users={USERNAME: PASSWORD})) as started:
        yield started


@pytest.fixture(scope="module")
def app(cluster, token_registry, tmp_path_factory):
    """The serving image with half_plus_two, pushed to the token registry; the namespace is removed afterwards."""
    root = tmp_path_factory.mktemp("e2e-token")
    config = tfconfig.load(REPO / tfconfig.CONFIG_FILE_NAME, overrides={
        "build_dir": str(root / "build"),
        "models_dir": str(root / "models"),
        "models": [{"name": MODEL, "exporter": MODEL}],
        "registry.url": token_registry.address,
        "registry.local": False,
        "registry.insecure": False,
        "registry.ca_file": str(token_registry.ca_cert),
        "kubernetes.namespace": NAMESPACE,
        "kubernetes.resources.cpu_request": "100m",  # other namespaces share the node; a surge pod must fit
    })
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(registry.USERNAME_ENV, USERNAME)
        patch.setenv(registry.PASSWORD_ENV, PASSWORD)
        export_models(config)
        images.build(config, ["serving"])
        pushed = push.push(config)
        try:
            yield config, pushed
        finally:
            # Not waited for: no other test uses this namespace, and its pods drain (preStop) for seconds.
            cluster.kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=false", check=False)
            untag(f"{pushed.image('serving').repository}:{pushed.image('serving').tag}",
                  pushed.image("serving").pinned_ref)


def test_three_replicas_pull_through_the_token_registry_and_pass_the_smoke_test(cluster, app, token_registry):
    config, pushed = app
    serving = pushed.image("serving")
    assert pushed.registry == token_registry.address and pushed.registry_auth is True
    untag(f"{serving.repository}:{serving.tag}", serving.pinned_ref)
    token_registry.policy.requests.clear()

    result = deploy.deploy(config, 3)

    assert (result.ready, result.digest) == (3, serving.digest)
    secret = json.loads(cluster.kubectl("get", "secret", config.kubernetes.pull_secret_name, "-n", NAMESPACE,
                                        "-o", "json").stdout)
    assert secret["type"] == "kubernetes.io/dockerconfigjson"
    pods = json.loads(cluster.kubectl("get", "pods", "-n", NAMESPACE, "-l", render.selector(config),
                                      "-o", "json").stdout)["items"]
    assert len(pods) == 3 and all(pod["spec"]["containers"][0]["image"] == serving.pinned_ref for pod in pods)
    events = json.loads(cluster.kubectl("get", "events", "-n", NAMESPACE, "-o", "json").stdout)["items"]
    assert any(event.get("reason") == "Pulled" and "Successfully pulled" in event.get("message", "")
               for event in events)
    # The node's pull went through the token flow with the pull secret's user.
    pulls = [request for request in token_registry.policy.requests if request["account"] == USERNAME
             and f"repository:{config.registry.repository}/{serving.name}:pull" in request["scopes"]]
    assert pulls, token_registry.policy.requests

    results = smoke.smoke_test(config)
    smoke.require_all_ok(results)
    assert len(results) == 3
