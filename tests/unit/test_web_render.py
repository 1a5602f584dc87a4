"""tfship-web's manifests: restricted like the server's, a readiness probe, the model Service by its variables,
pinned by digest; the Service valid against the server manifests' offline schema."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from test_render import API_VERSIONS_1_20, DIGEST, make_artifacts, make_config, validate  # noqa: E402

from tfship import render  # noqa: E402
from tfship.artifacts import ImageArtifact  # noqa: E402
from tfship.errors import KubernetesError  # noqa: E402
from tfship.web import stages  # noqa: E402


def with_web(artifacts, user: int = 10001, pushed: bool = True):
    artifacts.images["web"] = ImageArtifact(
        role="web", name="tfship-web", tag="feedc0de", image_id="sha256:" + "22" * 32, user=user,
        repository="127.0.0.1:5000/tfship/tfship-web" if pushed else "", digest=DIGEST if pushed else "")
    return artifacts


def rendered_docs(tmp_path, service_type="ClusterIP", **artifact_options):
    cfg = make_config(tmp_path)
    artifacts = with_web(make_artifacts({"half_plus_two": [1], "digits": [2]}, **artifact_options))
    rendered = stages.render_web(cfg, artifacts, render.select_api_versions(API_VERSIONS_1_20), service_type)
    assert list(rendered) == ["50-web-service.yaml", "60-web-deployment.yaml"]
    return {doc["kind"]: doc for doc in (yaml.safe_load(text) for text in rendered.values())}


def test_the_web_deployment_is_restricted_probed_and_pinned(tmp_path):
    docs = rendered_docs(tmp_path)
    validate(docs["Service"])  # the schema's Deployment is the model server's (two ports, a preStop)
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == f"127.0.0.1:5000/tfship/tfship-web@{DIGEST}"
    assert pod["securityContext"] == {"runAsNonRoot": True, "runAsUser": 10001,
                                      "seccompProfile": {"type": "RuntimeDefault"}}
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "capabilities": {"drop": ["ALL"]}}
    assert pod["automountServiceAccountToken"] is False
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["args"] == ["--model-service=tfship-serving"]
    assert container["env"] == [{"name": "TFSHIP_WEB_MODELS", "value": "half_plus_two,digits"}]
    assert "imagePullSecrets" not in pod


def test_the_web_service_exposes_the_page_only(tmp_path):
    service = rendered_docs(tmp_path)["Service"]
    assert service["metadata"]["name"] == "tfship-web" and service["spec"]["type"] == "ClusterIP"
    assert [p["port"] for p in service["spec"]["ports"]] == [8080]
    assert service["spec"]["selector"] == {"app.kubernetes.io/name": "tfship-web", "app.kubernetes.io/instance": "tfship"}
    assert rendered_docs(tmp_path, "NodePort")["Service"]["spec"]["type"] == "NodePort"


def test_a_registry_with_auth_gets_the_pull_secret(tmp_path):
    pod = rendered_docs(tmp_path, auth=True)["Deployment"]["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "tfship-registry"}]


def test_no_web_image_renders_nothing_and_a_root_web_image_is_refused(tmp_path):
    cfg = make_config(tmp_path)
    api = render.select_api_versions(API_VERSIONS_1_20)
    assert stages.render_web(cfg, make_artifacts({"digits": [1]}), api) == {}
    with pytest.raises(KubernetesError, match="not a numeric non-root user"):
        stages.render_web(cfg, with_web(make_artifacts({"digits": [1]}), user=0), api)
