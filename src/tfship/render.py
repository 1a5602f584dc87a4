"""Kubernetes manifests for the serving app, from the templates in k8s/ and what build/artifacts.json records.

What the serving image serves and how (models, versions, model config, ports, GPU) comes from the record build
wrote (tfship.contract applied to that image), never from tfship.yaml as it is now; tfship.yaml gives the
deployment's own settings (namespace, replicas, resources, probes' timing, extra server flags).

Templates are plain YAML. A string that is exactly `${name}` becomes the value of `name` with its type (a number,
a list, a mapping); None drops the key (or list item), so optional parts need no template logic. `${name}` inside a
longer string is replaced by text. The output is pinned by digest and uses the API versions the cluster serves.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from tfship import artifacts as tfartifacts
from tfship import cluster, contract, resources
from tfship.artifacts import Artifacts, ServingRecord
from tfship.config import Config
from tfship.errors import KubernetesError, TfshipError
from tfship.kubectl import REQUEST_TIMEOUT, Reads
from tfship.progress import say

TEMPLATES_DIR = resources.template_dir("k8s")
# Where the model config map is mounted in the pod.
MODEL_CONFIG_DIR = "/etc/tfship"
MODEL_CONFIG_FILE = "models.config"
MONITORING_CONFIG_FILE = "monitoring.config"
PROMETHEUS_PATH = "/monitoring/prometheus/metrics"
PROMETHEUS_MONITORING_CONFIG = f'prometheus_config {{\n  enable: true\n  path: "{PROMETHEUS_PATH}"\n}}\n'
MANAGED_BY = "tfship"
MODELS_ANNOTATION = "tfship.io/models"
IMAGE_TAG_ANNOTATION = "tfship.io/image-tag"

# apiVersion per kind, most preferred first; the first one the cluster serves wins.
API_PREFERENCES: dict[str, tuple[str, ...]] = {
    "Deployment": ("apps/v1",),
    "PodDisruptionBudget": ("policy/v1", "policy/v1beta1"),
}
# What `render` assumes without a cluster to ask: a current Kubernetes.
OFFLINE_API_VERSIONS = frozenset({"v1", "apps/v1", "policy/v1"})

# Output file name -> template; the numbers give `kubectl apply -f build/k8s/` a safe order.
MANIFEST_FILES = {
    "00-namespace.yaml": "namespace.yaml",
    "10-configmap.yaml": "configmap.yaml",
    "20-service.yaml": "service.yaml",
    "30-pdb.yaml": "pdb.yaml",
    "40-deployment.yaml": "deployment.yaml",
}
NAMESPACE_FILE = "00-namespace.yaml"

_PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9_]+)\}")


@dataclass(frozen=True)
class ApiVersions:
    deployment: str
    pdb: str


def select_api_versions(served: Iterable[str] | None) -> ApiVersions:
    """The apiVersion to render per kind, given `kubectl api-versions` (None: offline, assume a current cluster)."""
    available = set(OFFLINE_API_VERSIONS if served is None else served)
    chosen: dict[str, str] = {}
    for kind, preferred in API_PREFERENCES.items():
        match = next((version for version in preferred if version in available), None)
        if match is None:
            raise KubernetesError(
                f"the cluster serves none of {', '.join(preferred)} for {kind}",
                "tfship supports Kubernetes 1.20 and later; check `kubectl api-versions`",
            )
        chosen[kind] = match
    return ApiVersions(deployment=chosen["Deployment"], pdb=chosen["PodDisruptionBudget"])


def served_api_versions(kube: Reads) -> list[str]:
    """`kubectl api-versions` of the target cluster."""
    result = kube.run("api-versions", REQUEST_TIMEOUT)
    return [line.strip() for line in (result.stdout or "").splitlines() if line.strip()]


# --------------------------------------------------------------------------------------------------------------
# Public entry points


@dataclass
class RenderResult:
    files: list[str]
    out_dir: str
    api_versions: ApiVersions
    source: str  # where the API versions came from

    def __str__(self) -> str:
        return (
            f"rendered {len(self.files)} manifests into {self.out_dir} ({', '.join(self.files)}); "
            f"PodDisruptionBudget {self.api_versions.pdb} ({self.source})"
        )


def render_manifests(config: Config, replicas: int | None = None, *, offline: bool = False,
                     target: Reads | None = None) -> RenderResult:
    """Render into build/k8s/ with the API versions of the configured cluster (or current ones offline or when
    the cluster does not answer, which it says)."""
    recorded = tfartifacts.load(config.artifacts_path)
    recorded.image("serving").pinned_ref  # nothing to render before a push: say so before asking the cluster
    served: list[str] | None = None
    source = "offline defaults"
    if not offline:
        try:
            served = served_api_versions(target or cluster.target(config))
            source = "from the cluster"
        except TfshipError as error:
            say(f"    cluster not reachable, rendering for a current Kubernetes ({error.message})")
            source = "offline defaults: the cluster did not answer"
    rendered, api_versions = render_and_write(config, recorded, served, replicas)
    return RenderResult(files=list(rendered), out_dir=str(output_dir(config)), api_versions=api_versions,
                        source=source)


def render_and_write(config: Config, recorded: Artifacts, served: list[str] | None,
                     replicas: int | None) -> tuple[dict[str, str], ApiVersions]:
    """Render for the `served` API versions (None: offline) and replace build/k8s/ with the result."""
    api_versions = select_api_versions(served)
    rendered = render(config, recorded, api_versions, replicas)
    write(rendered, output_dir(config))
    return rendered, api_versions


def render(
    config: Config, artifacts: Artifacts, api_versions: ApiVersions, replicas: int | None = None
) -> dict[str, str]:
    """Manifest file name -> YAML text, in apply order. Needs a pushed serving image (pinned by digest)."""
    context = _context(config, artifacts, api_versions, config.kubernetes.replicas if replicas is None else replicas)
    rendered: dict[str, str] = {}
    for file_name, template in MANIFEST_FILES.items():
        if template == "configmap.yaml" and context["model_config_name"] is None:
            continue  # one model under MODEL_NAME needs no config file
        rendered[file_name] = _dump(fill(load_template(template), context))
    from tfship.web import stages as web_stages  # here: tfship.web.stages imports this module

    rendered.update(web_stages.render_web(config, artifacts, api_versions))  # {} without a web image
    return rendered


def write(rendered: Mapping[str, str], out_dir: Path) -> list[Path]:
    """Replace out_dir's manifests with `rendered` (stale files from an earlier render would be applied too)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("*.yaml"):
        if stale.name not in rendered:
            stale.unlink()
    written = []
    for name, text in rendered.items():
        path = out_dir / name
        path.write_text(text)
        written.append(path)
    return written


def output_dir(config: Config) -> Path:
    return config.build_path / "k8s"


def pull_secret(config: Config, registry: str, username: str, password: str) -> str:
    """The dockerconfigjson Secret as YAML, for `kubectl apply -f -` only: never write it to a file."""
    auth = base64.b64encode(f"{username}:{password}".encode()).decode()
    docker_config = {"auths": {registry: {"username": username, "password": password, "auth": auth}}}
    context = {
        "pull_secret_name": config.kubernetes.pull_secret_name,
        "namespace": config.kubernetes.namespace,
        "labels": common_labels(config, version=None),
        "dockerconfigjson_base64": base64.b64encode(json.dumps(docker_config).encode()).decode(),
    }
    return _dump(fill(load_template("pull-secret.yaml"), context))


def selector_labels(config: Config) -> dict[str, str]:
    """Labels that pick the app's pods (immutable in a Deployment, so no version here)."""
    return {"app.kubernetes.io/name": config.kubernetes.app, "app.kubernetes.io/instance": config.project}


def ownership_labels(config: Config) -> dict[str, str]:
    """What marks an object as this project's, made by tfship: deploy takes over nothing without them, and
    destroy deletes nothing without them."""
    return {"app.kubernetes.io/part-of": config.project, "app.kubernetes.io/managed-by": MANAGED_BY}


def owner_of(obj: dict[str, Any] | None) -> str:
    """Who an existing object says manages it, for messages."""
    labels = (obj or {}).get("metadata", {}).get("labels") or {}
    manager = labels.get("app.kubernetes.io/managed-by")
    if manager is None:
        return "no app.kubernetes.io/managed-by label"
    return f"managed-by {manager}" + (f", part-of {labels['app.kubernetes.io/part-of']}"
                                      if "app.kubernetes.io/part-of" in labels else "")


def owns(config: Config, obj: dict[str, Any] | None) -> bool:
    labels = (obj or {}).get("metadata", {}).get("labels") or {}
    return all(labels.get(key) == value for key, value in ownership_labels(config).items())


def owned_selector(config: Config) -> str:
    """The app's objects that tfship made for this project, as a `kubectl -l` argument (what destroy deletes)."""
    return ",".join(f"{key}={value}" for key, value in {**selector_labels(config), **ownership_labels(config)}.items())


def selector(config: Config) -> str:
    """selector_labels as a `kubectl -l` argument."""
    return ",".join(f"{key}={value}" for key, value in selector_labels(config).items())


def common_labels(config: Config, version: str | None) -> dict[str, str]:
    labels = {
        **selector_labels(config),
        "app.kubernetes.io/component": "model-server",
        **ownership_labels(config),
    }
    if version:
        labels["app.kubernetes.io/version"] = version[:63]
    return labels


# --------------------------------------------------------------------------------------------------------------
# Templates


def load_template(name: str) -> Any:
    path = TEMPLATES_DIR / name
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise TfshipError(f"manifest template {path} is missing", "restore k8s/ from the repository")


def fill(node: Any, context: Mapping[str, Any]) -> Any:
    """Replace ${name} placeholders in a loaded template (see the module docstring); None drops the key or item."""
    if isinstance(node, dict):
        filled = {key: fill(value, context) for key, value in node.items()}
        return {key: value for key, value in filled.items() if value is not None}
    if isinstance(node, list):
        return [item for item in (fill(value, context) for value in node) if item is not None]
    if isinstance(node, str):
        whole = _PLACEHOLDER.fullmatch(node)
        if whole:
            return _lookup(context, whole.group(1))
        return _PLACEHOLDER.sub(lambda match: str(_lookup(context, match.group(1))), node)
    return node


def _lookup(context: Mapping[str, Any], name: str) -> Any:
    if name not in context:
        raise TfshipError(f"manifest template uses ${{{name}}}, which tfship does not provide", "fix the template in k8s/")
    return context[name]


class _Dumper(yaml.SafeDumper):
    """Block style, template key order, no &anchors, and multi-line strings (the model config) as | blocks."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str_representer)


def _dump(document: Any) -> str:
    return yaml.dump(document, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120)


# --------------------------------------------------------------------------------------------------------------
# Values


def prestop_seconds(config: Config) -> int:
    """How long a terminating pod keeps serving before its server gets SIGTERM. With a gRPC connection age, at least
    that age (+10 % jitter) and 2 s for kube-proxy: every client connection opened before the pod left the Service is
    then closed by a graceful GOAWAY, so none is still open when the server shuts down (a call arriving during
    grpcio's shutdown is CANCELLED: one in ~2400 was, in the rollout e2e test)."""
    age_ms = config.serving.grpc_max_connection_age_ms
    drained = math.ceil(age_ms * 11 / 10_000) + 2 if age_ms > 0 else 0  # integers: 10 s -> 13 s
    return max(config.kubernetes.prestop_sleep, drained)


def _context(config: Config, artifacts: Artifacts, api_versions: ApiVersions, replicas: int) -> dict[str, Any]:
    if replicas < 0:
        raise KubernetesError(f"replicas must be 0 or more, got {replicas}", "pass --replicas 1 or more")
    serving = artifacts.image("serving")
    image = serving.pinned_ref
    if serving.user <= 0:
        raise KubernetesError(
            f"the serving image {serving.local_ref} runs as user {serving.user}, not a numeric non-root user",
            "rebuild it (invoke build --image serving); runAsNonRoot needs a numeric USER other than 0",
        )
    versions = _served_models(config, artifacts)
    record = _serving_record(artifacts)
    kube = config.kubernetes
    prestop = prestop_seconds(config)
    if kube.termination_grace <= prestop:
        raise KubernetesError(
            f"kubernetes.termination_grace ({kube.termination_grace}s) must be longer than the pods' preStop wait "
            f"({prestop}s: kubernetes.prestop_sleep, or the gRPC connection age + 10 % + 2 s, the longer)",
            "raise termination_grace, or lower prestop_sleep or serving.grpc_max_connection_age_ms in tfship.yaml",
        )
    # The model config the serving image was built with (recorded at build time), so the manifest says what is
    # served whatever tfship.yaml says now.
    model_config_text = record.model_config or None
    # serving.prometheus: TF Serving's monitoring config beside it, so clients can read each replica's metrics.
    monitoring_config_text = PROMETHEUS_MONITORING_CONFIG if config.serving.prometheus else None
    config_map_text = (model_config_text or "") + (monitoring_config_text or "")
    model_config_name = (
        f"{kube.app}-models-{hashlib.sha256(config_map_text.encode()).hexdigest()[:10]}" if config_map_text else None
    )
    environment = contract.pod_environment(
        f"{MODEL_CONFIG_DIR}/{MODEL_CONFIG_FILE}" if model_config_text else None, record.model_name)
    env = [{"name": name, "value": value} for name, value in environment.items()]
    args = list(config.serving.extra_args)
    if monitoring_config_text:
        args.append(f"--monitoring_config_file={MODEL_CONFIG_DIR}/{MONITORING_CONFIG_FILE}")
    age = config.serving.grpc_max_connection_age_ms
    if age > 0 and not any(arg.startswith("--grpc_channel_arguments") for arg in args):  # the user's own win
        args.append(f"--grpc_channel_arguments=grpc.max_connection_age_ms={age}")
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {}}]
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}]
    if model_config_name:
        volumes.append({"name": "model-config", "configMap": {"name": model_config_name}})
        mounts.append({"name": "model-config", "mountPath": MODEL_CONFIG_DIR, "readOnly": True})
    annotations = {
        MODELS_ANNOTATION: json.dumps(versions, sort_keys=True, separators=(",", ":")),
        IMAGE_TAG_ANNOTATION: serving.tag,
    }
    pull_secrets = [{"name": kube.pull_secret_name}] if artifacts.registry_auth else None
    resources = kube.resources
    return {
        "app": kube.app,
        "namespace": kube.namespace,
        "namespace_labels": {"app.kubernetes.io/managed-by": MANAGED_BY, "app.kubernetes.io/part-of": config.project},
        "labels": common_labels(config, version=serving.tag),
        "selector": selector_labels(config),
        "annotations": annotations,
        "replicas": replicas,
        "progress_deadline": kube.progress_deadline,
        # The startup probe allows model loading as long as the rollout may stall.
        "startup_failure_threshold": max(1, math.ceil(kube.progress_deadline / 2)),
        "termination_grace": kube.termination_grace,
        "prestop_sleep": str(prestop),
        "image_pull_secrets": pull_secrets,
        "user": serving.user,
        "image": image,
        "args": args or None,
        "env": env,
        "grpc_port": record.grpc_port,
        "rest_port": record.rest_port,
        "status_path": contract.status_path(record.model_name),
        "cpu_request": resources.cpu_request,
        "cpu_limit": resources.cpu_limit,
        "memory_request": resources.memory_request,
        "memory_limit": resources.memory_limit,
        "gpu_limit": 1 if record.gpu else None,
        "volumes": volumes,
        "volume_mounts": mounts,
        "deployment_api_version": api_versions.deployment,
        "pdb_api_version": api_versions.pdb,
        "model_config_name": model_config_name,
        "model_config_text": model_config_text,
        "monitoring_config_text": monitoring_config_text,
        "service_type": kube.service_type,
        "rest_node_port": kube.node_port or None,
        "grpc_node_port": kube.grpc_node_port or None,
    }


def _served_models(config: Config, artifacts: Artifacts) -> dict[str, list[int]]:
    """The models baked into the serving image and their versions; each must still be listed in tfship.yaml."""
    if not artifacts.models:
        raise KubernetesError(
            "build/artifacts.json records no models in the serving image", "run: invoke build --image serving"
        )
    unlisted = sorted(set(artifacts.models) - {spec.name for spec in config.models})
    if unlisted:
        raise KubernetesError(
            f"the serving image holds model '{unlisted[0]}', which tfship.yaml no longer lists",
            "run: invoke build --image serving && invoke push (or list the model again)",
        )
    return {name: sorted(versions) for name, versions in artifacts.models.items()}


def _serving_record(artifacts: Artifacts) -> ServingRecord:
    if artifacts.serving is None:
        raise KubernetesError(
            "build/artifacts.json does not record how the serving image serves its models (an older tfship wrote it)",
            "run: invoke build --image serving && invoke push",
        )
    return artifacts.serving
