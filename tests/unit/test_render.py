"""Rendering Kubernetes manifests: golden files, offline schema validation, API-version selection, pull secret.

Golden files live in tests/unit/golden/<case>/. After an intended change to the templates, regenerate them with
`TFSHIP_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/unit/test_render.py` and review the diff.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
from pathlib import Path

import jsonschema
import pytest
import yaml

from tfship import config as tfconfig
from tfship import images, render
from tfship.artifacts import Artifacts, ImageArtifact
from tfship.errors import KubernetesError, TfshipError

GOLDEN = Path(__file__).parent / "golden"
SCHEMA = yaml.safe_load((GOLDEN / "manifest-schema.yaml").read_text())
DIGEST = "sha256:" + "3f" * 32
# `kubectl api-versions` of the lab's Kubernetes 1.20 (abridged to what matters) and of a current cluster.
API_VERSIONS_1_20 = ["v1", "apps/v1", "batch/v1", "policy/v1beta1", "autoscaling/v2beta2", "networking.k8s.io/v1"]
API_VERSIONS_1_30 = ["v1", "apps/v1", "batch/v1", "policy/v1", "autoscaling/v2", "networking.k8s.io/v1"]

# The digits model comes last so a test can append settings to it.
TFSHIP_YAML = """
project: tfship
kubernetes:
  namespace: tfship
  replicas: 3
models:
  - name: half_plus_two
    exporter: half_plus_two
    signatures: [serving_default, classify_x_to_y]
  - name: digits
    exporter: digits
"""


def make_config(tmp_path: Path, digits_extra: str = "", **overrides) -> tfconfig.Config:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "tfship.yaml").write_text(TFSHIP_YAML + digits_extra)
    return tfconfig.load(tmp_path / "tfship.yaml", environ={}, overrides=overrides)


def default_config() -> tfconfig.Config:
    with tempfile.TemporaryDirectory() as folder:
        return make_config(Path(folder))


def make_artifacts(models: dict[str, list[int]], *, auth: bool = False, pushed: bool = True, user: int = 10001,
                   config: tfconfig.Config | None = None):
    """What build and push record for a serving image with `models` baked in, built with `config` (default:
    TFSHIP_YAML)."""
    config = config or default_config()
    # As build records it; none for models tfship.yaml does not list (render refuses those first).
    record = images.serving_record(config, models, keep_samples=False) if set(models) & {m.name for m in config.models} else None
    serving = ImageArtifact(
        role="serving",
        name="tfship-serving",
        tag="c0ffee12",
        image_id="sha256:" + "11" * 32,
        user=user,
        runtime="python",
        repository="127.0.0.1:5000/tfship/tfship-serving" if pushed else "",
        digest=DIGEST if pushed else "",
    )
    return Artifacts(images={"serving": serving}, models=models, serving=record, registry="127.0.0.1:5000",
                     registry_auth=auth)


def documents(rendered: dict[str, str]) -> dict[str, dict]:
    """Kind -> the one document of that kind."""
    docs = [yaml.safe_load(text) for text in rendered.values()]
    return {doc["kind"]: doc for doc in docs}


def validate(doc: dict) -> None:
    schema = {**SCHEMA, "$ref": f"#/$defs/{doc['kind']}"}
    jsonschema.Draft202012Validator(schema).validate(doc)


CASES = {
    # One model, latest version: MODEL_NAME env, no ConfigMap; the 1.20 lab cluster (policy/v1beta1).
    "one-model-1.20": dict(models={"half_plus_two": [1, 2]}, auth=False, served=API_VERSIONS_1_20, replicas=3),
    # Two models: a ConfigMap with the model config file; an authenticated registry; a current cluster.
    "two-models-auth": dict(models={"digits": [1], "half_plus_two": [123, 124]}, auth=True, served=API_VERSIONS_1_30,
                            replicas=1),
    # serving.gpu: the image was built FROM tensorflow/serving:<version>-gpu; the pod asks for one GPU.
    "gpu-tfserving": dict(models={"half_plus_two": [1]}, auth=False, served=API_VERSIONS_1_30, replicas=2,
                          built_with={"serving.gpu": True, "serving.runtime": "tfserving"}),
}


def case_artifacts(tmp_path: Path, spec: dict) -> Artifacts:
    built_with = make_config(tmp_path / "built", **spec.get("built_with", {}))
    return make_artifacts(spec["models"], auth=spec["auth"], config=built_with)


@pytest.mark.parametrize("case", sorted(CASES))
def test_rendered_manifests_match_the_golden_files(tmp_path, case):
    spec = CASES[case]
    rendered = render.render(
        make_config(tmp_path),
        case_artifacts(tmp_path, spec),
        render.select_api_versions(spec["served"]),
        spec["replicas"],
    )
    golden_dir = GOLDEN / case
    if os.environ.get("TFSHIP_UPDATE_GOLDEN"):
        render.write(rendered, golden_dir)
    expected = {path.name: path.read_text() for path in sorted(golden_dir.glob("*.yaml"))}
    assert list(rendered) == sorted(expected), "apply order is the file-name order"
    for name, text in rendered.items():
        assert text == expected[name], f"{name} differs from {golden_dir / name}"


@pytest.mark.parametrize("case", sorted(CASES))
def test_rendered_manifests_pass_the_schema(tmp_path, case):
    spec = CASES[case]
    rendered = render.render(make_config(tmp_path), case_artifacts(tmp_path, spec),
                             render.select_api_versions(spec["served"]), spec["replicas"])
    for doc in documents(rendered).values():
        validate(doc)


def test_schema_rejects_what_kubernetes_would_reject(tmp_path):
    """The schema is not vacuous: a tag instead of a digest, root, or a missing probe fail it."""
    rendered = render.render(make_config(tmp_path), make_artifacts({"half_plus_two": [1]}),
                             render.select_api_versions(None), 3)
    deployment = documents(rendered)["Deployment"]
    breakages = [
        lambda d: d["spec"]["template"]["spec"]["containers"][0].update(image="127.0.0.1:5000/x:latest"),
        lambda d: d["spec"]["template"]["spec"]["securityContext"].update(runAsUser=0),
        lambda d: d["spec"]["template"]["spec"]["containers"][0].pop("readinessProbe"),
        lambda d: d["spec"]["strategy"]["rollingUpdate"].update(maxUnavailable=1),
        lambda d: d["metadata"]["labels"].update({"app.kubernetes.io/version": "not valid!"}),
    ]
    for breakage in breakages:
        broken = json.loads(json.dumps(deployment))
        breakage(broken)
        with pytest.raises(jsonschema.ValidationError):
            validate(broken)


def test_deployment_contract(tmp_path):
    cfg = make_config(tmp_path)
    rendered = render.render(cfg, make_artifacts({"half_plus_two": [1, 2]}), render.select_api_versions(None), 5)
    deployment = documents(rendered)["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert deployment["spec"]["replicas"] == 5
    assert container["image"] == f"127.0.0.1:5000/tfship/tfship-serving@{DIGEST}"
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"grpc": 8500, "http": 8501}
    assert {e["name"]: e["value"] for e in container["env"]} == {"MODEL_NAME": "half_plus_two", "MODEL_BASE_PATH": "/models"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/v1/models/half_plus_two", "port": "http"}
    assert container["startupProbe"]["httpGet"] == {"path": "/v1/models/half_plus_two", "port": "http"}
    assert container["livenessProbe"]["tcpSocket"] == {"port": "grpc"}
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["terminationGracePeriodSeconds"] > int(container["lifecycle"]["preStop"]["exec"]["command"][1])
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert "imagePullSecrets" not in pod
    assert json.loads(deployment["metadata"]["annotations"][render.MODELS_ANNOTATION]) == {"half_plus_two": [1, 2]}
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert documents(rendered)["Service"]["spec"]["selector"] == selector


def test_several_models_use_a_model_config_file_named_by_its_content(tmp_path):
    cfg = make_config(tmp_path)
    api = render.select_api_versions(None)
    rendered = render.render(cfg, make_artifacts({"digits": [1], "half_plus_two": [1]}), api, 3)
    docs = documents(rendered)
    config_map = docs["ConfigMap"]
    text = config_map["data"]["models.config"]
    # tfship.yaml order, not alphabetical: half_plus_two is the first model and the probes' target.
    assert text.index('name: "half_plus_two"') < text.index('name: "digits"')
    assert 'base_path: "/models/digits"' in text
    container = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    # The serving image's entrypoint reads MODEL_CONFIG_FILE instead of MODEL_NAME.
    assert container["env"] == [{"name": "MODEL_CONFIG_FILE", "value": "/etc/tfship/models.config"}]
    # Connections age out (serving.grpc_max_connection_age_ms), so long-lived gRPC clients spread over replicas.
    assert container["args"] == ["--grpc_channel_arguments=grpc.max_connection_age_ms=10000"]
    volumes = docs["Deployment"]["spec"]["template"]["spec"]["volumes"]
    assert {"name": "model-config", "configMap": {"name": config_map["metadata"]["name"]}} in volumes
    # A different model config gets a different name, so a rollback finds its own.
    other_config = make_config(tmp_path, digits_extra="    version_policy: all\n")
    other = render.render(other_config, make_artifacts({"digits": [1, 2], "half_plus_two": [1]}, config=other_config),
                          api, 3)
    assert documents(other)["ConfigMap"]["metadata"]["name"] != config_map["metadata"]["name"]
    assert "model_version_policy { all {} }" in documents(other)["ConfigMap"]["data"]["models.config"]


def test_one_model_with_labels_or_a_policy_needs_the_config_file(tmp_path):
    extra = """    version_policy: specific
    versions: [1, 2]
    labels: {stable: 1, canary: 2}
"""
    cfg = make_config(tmp_path, digits_extra=extra)
    rendered = render.render(cfg, make_artifacts({"digits": [1, 2]}, config=cfg), render.select_api_versions(None), 1)
    text = documents(rendered)["ConfigMap"]["data"]["models.config"]
    assert "model_version_policy { specific { versions: 1 versions: 2 } }" in text
    assert 'version_labels { key: "canary" value: 2 }' in text
    assert 'version_labels { key: "stable" value: 1 }' in text


def test_extra_server_args_are_passed_to_the_container(tmp_path):
    cfg = make_config(tmp_path, **{"serving.extra_args": ["--rest_api_timeout_in_ms=5000"]})
    rendered = render.render(cfg, make_artifacts({"half_plus_two": [1]}), render.select_api_versions(None), 1)
    container = documents(rendered)["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["--rest_api_timeout_in_ms=5000",
                                 "--grpc_channel_arguments=grpc.max_connection_age_ms=10000"]


@pytest.mark.parametrize(("settings", "expected"), [
    ({"serving.grpc_max_connection_age_ms": 0}, None),
    ({"serving.grpc_max_connection_age_ms": 5000}, ["--grpc_channel_arguments=grpc.max_connection_age_ms=5000"]),
    ({"serving.extra_args": ["--grpc_channel_arguments=grpc.max_connection_age_ms=1"]},
     ["--grpc_channel_arguments=grpc.max_connection_age_ms=1"]),
])
def test_grpc_connection_age_flag(tmp_path, settings, expected):
    rendered = render.render(make_config(tmp_path, **settings), make_artifacts({"half_plus_two": [1]}),
                             render.select_api_versions(None), 1)
    container = documents(rendered)["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container.get("args") == expected


def test_api_versions_follow_the_cluster():
    assert render.select_api_versions(API_VERSIONS_1_20).pdb == "policy/v1beta1"
    assert render.select_api_versions(API_VERSIONS_1_30).pdb == "policy/v1"
    # A 1.21-1.24 cluster serves both: the newer one wins.
    assert render.select_api_versions(API_VERSIONS_1_20 + ["policy/v1"]).pdb == "policy/v1"
    assert render.select_api_versions(None) == render.ApiVersions(deployment="apps/v1", pdb="policy/v1")
    with pytest.raises(KubernetesError, match="PodDisruptionBudget"):
        render.select_api_versions(["v1", "apps/v1"])


def test_pull_secret_reference_and_secret(tmp_path):
    cfg = make_config(tmp_path)
    rendered = render.render(cfg, make_artifacts({"half_plus_two": [1]}, auth=True), render.select_api_versions(None), 3)
    pod = documents(rendered)["Deployment"]["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": cfg.kubernetes.pull_secret_name}]
    assert "s3cret-pw" not in "".join(rendered.values())

    secret = yaml.safe_load(render.pull_secret(cfg, "127.0.0.1:5443", "tfship", "s3cret-pw"))
    validate(secret)
    assert secret["metadata"] == {
        "name": cfg.kubernetes.pull_secret_name,
        "namespace": "tfship",
        "labels": render.common_labels(cfg, version=None),
    }
    docker_config = json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))
    entry = docker_config["auths"]["127.0.0.1:5443"]
    assert (entry["username"], entry["password"]) == ("tfship", "s3cret-pw")
    assert base64.b64decode(entry["auth"]).decode() == "tfship:s3cret-pw"


def test_unpushed_or_root_images_are_refused(tmp_path):
    cfg = make_config(tmp_path)
    api = render.select_api_versions(None)
    with pytest.raises(TfshipError, match="not been pushed") as refused:
        render.render(cfg, make_artifacts({"half_plus_two": [1]}, pushed=False), api, 3)
    assert refused.value.hint == "run: invoke push"
    with pytest.raises(KubernetesError, match="non-root"):
        render.render(cfg, make_artifacts({"half_plus_two": [1]}, user=0), api, 3)
    with pytest.raises(TfshipError, match="no serving image"):
        render.render(cfg, Artifacts(), api, 3)
    with pytest.raises(KubernetesError, match="no models"):
        render.render(cfg, make_artifacts({}), api, 3)
    with pytest.raises(KubernetesError, match="no longer lists"):
        render.render(cfg, make_artifacts({"iris": [1]}), api, 3)


@pytest.mark.parametrize(("age_ms", "prestop_sleep", "expected"), [
    (10_000, 5, 13),  # the connection age + 10 % + 2 s
    (250, 5, 5),  # the configured sleep is longer
    (0, 5, 5),  # no connection age: the configured sleep
    (30_000, 40, 40),
])
def test_the_prestop_wait_outlasts_the_connection_age(tmp_path, age_ms, prestop_sleep, expected):
    cfg = make_config(tmp_path, **{"serving.grpc_max_connection_age_ms": age_ms,
                                   "kubernetes.prestop_sleep": prestop_sleep, "kubernetes.termination_grace": 60})
    assert render.prestop_seconds(cfg) == expected


def test_grace_period_must_outlast_the_connection_age_drain(tmp_path):
    cfg = make_config(tmp_path, **{"serving.grpc_max_connection_age_ms": 30_000})  # 35 s preStop, 30 s grace
    with pytest.raises(KubernetesError, match="termination_grace"):
        render.render(cfg, make_artifacts({"half_plus_two": [1]}), render.select_api_versions(None), 3)


def test_grace_period_must_outlast_the_prestop_sleep(tmp_path):
    cfg = make_config(tmp_path, **{"kubernetes.termination_grace": 5, "kubernetes.prestop_sleep": 5})
    with pytest.raises(KubernetesError, match="termination_grace"):
        render.render(cfg, make_artifacts({"half_plus_two": [1]}), render.select_api_versions(None), 3)


def test_fill_drops_none_and_types_whole_placeholders():
    template = {"a": "${number}", "b": "${missing_is_none}", "c": ["x", "${missing_is_none}", "pre-${text}"]}
    filled = render.fill(template, {"number": 3, "missing_is_none": None, "text": "t"})
    assert filled == {"a": 3, "c": ["x", "pre-t"]}
    with pytest.raises(TfshipError, match="unknown_name"):
        render.fill({"a": "${unknown_name}"}, {})


def test_write_replaces_stale_manifests(tmp_path):
    (tmp_path / "10-configmap.yaml").write_text("stale")
    written = render.write({"00-namespace.yaml": "kind: Namespace\n"}, tmp_path)
    assert [p.name for p in written] == ["00-namespace.yaml"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["00-namespace.yaml"]


# --------------------------------------------------------------------------------------------------------------
# The record, not tfship.yaml as it is now


def test_editing_tfship_yaml_after_the_build_does_not_change_what_is_served(tmp_path):
    built_with = make_config(tmp_path / "built")
    recorded = make_artifacts({"digits": [1], "half_plus_two": [1]}, config=built_with)
    api = render.select_api_versions(None)
    before = render.render(built_with, recorded, api, 3)
    edited = make_config(tmp_path / "edited", digits_extra="    version_policy: all\n    labels: {stable: 1}\n",
                         **{"serving.grpc_port": 9000, "serving.rest_port": 9001, "serving.gpu": True})
    edited.models.reverse()  # and the other model first
    assert render.render(edited, recorded, api, 3) == before


def test_ports_and_gpu_come_from_the_record(tmp_path):
    built_with = make_config(tmp_path / "built", **{"serving.grpc_port": 9000, "serving.rest_port": 9001,
                                                    "serving.gpu": True})
    rendered = render.render(make_config(tmp_path), make_artifacts({"half_plus_two": [1]}, config=built_with),
                             render.select_api_versions(None), 1)
    docs = documents(rendered)
    container = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"grpc": 9000, "http": 9001}
    assert {p["name"]: p["port"] for p in docs["Service"]["spec"]["ports"]} == {"grpc": 9000, "http": 9001}
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "nvidia.com/gpu" not in documents(render.render(
        make_config(tmp_path), make_artifacts({"half_plus_two": [1]}), render.select_api_versions(None), 1,
    ))["Deployment"]["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]


def test_a_record_without_the_serving_contract_is_refused(tmp_path):
    recorded = make_artifacts({"half_plus_two": [1]})
    recorded.serving = None  # written by a tfship that did not record it
    with pytest.raises(KubernetesError, match="does not record how the serving image serves") as refused:
        render.render(make_config(tmp_path), recorded, render.select_api_versions(None), 1)
    assert "invoke build" in refused.value.hint
