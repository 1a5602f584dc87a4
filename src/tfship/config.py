"""The one typed pipeline configuration.

Precedence: defaults < tfship.yaml < TFSHIP_* environment < task flags. Every layer is checked against the
dataclasses below, so an unknown key or a value of the wrong type is a ConfigError naming the key and the layer.

Environment variables name a dotted key upper-cased with `_` for the dots: `base.source` is TFSHIP_BASE_SOURCE,
`kubernetes.resources.cpu_limit` is TFSHIP_KUBERNETES_RESOURCES_CPU_LIMIT.
"""

from __future__ import annotations

import dataclasses
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

import yaml

from tfship.errors import ConfigError

CONFIG_FILE_NAME = "tfship.yaml"
NODE_PORT_RANGE = (30000, 32767)  # Kubernetes' default --service-node-port-range

# TFSHIP_* variables that are not configuration keys. Credentials are read where they are used, never stored in
# Config, so they cannot leak into a printed or rendered config.
# RFC 1123 label (namespaces, object names) and the Docker reference grammar's path components.
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
IMAGE_PATH = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*")
NON_CONFIG_ENV = frozenset(
    {"TFSHIP_CONFIG", "TFSHIP_CACHE_DIR", "TFSHIP_STATE_DIR", "TFSHIP_REGISTRY_USERNAME", "TFSHIP_REGISTRY_PASSWORD"}
)


@dataclass
class ModelSpec:
    name: str
    # Built-in exporter (`half_plus_two`, `digits`) or empty for a model imported with `model.add`.
    exporter: str = ""
    # Signatures the model must have; validated before every build and checked by the smoke test.
    signatures: list[str] = field(default_factory=lambda: ["serving_default"])
    # TF Serving model_version_policy: latest (newest only), all, or specific (the versions listed).
    version_policy: Literal["latest", "all", "specific"] = "latest"
    versions: list[int] = field(default_factory=list)
    # version_labels, e.g. {"stable": 1, "canary": 2}
    labels: dict[str, int] = field(default_factory=dict)
    seed: int = 0
    # What the smoke test asks of the model: known answers from the smoke sample the exporter saved (a model
    # without one fails the smoke test), or status-only (status and metadata, e.g. an imported model).
    smoke: Literal["known-answers", "status-only"] = "known-answers"


@dataclass
class BaseConfig:
    # upstream: official images; debian: built locally with debootstrap from the apt mirror; auto: try upstream.
    source: Literal["upstream", "debian", "auto"] = "auto"
    python_image: str = "python:3.11-slim"
    debian_suite: str = "bookworm"
    # Empty: the first mirror named in the host's apt sources.
    debian_mirror: str = ""
    # Seconds `auto` waits for an upstream pull before falling back.
    pull_timeout: int = 20
    # Given to builds that reach PyPI, never left in an image.
    ca_bundle: str = "/etc/ssl/certs/ca-certificates.crt"
    # Empty: pip's default index.
    pip_index_url: str = ""


@dataclass
class ImagesConfig:
    devel: str = "tfship-devel"
    serving: str = "tfship-serving"
    tensorflow_version: str = "2.21.0"
    # Numeric non-root user of every image (runAsNonRoot needs a number).
    user: int = 10001
    # `invoke up` and `invoke build` also build (then push and deploy) the web page; false: only on request
    # (invoke build --image web).
    web: bool = True


@dataclass
class ServingConfig:
    # tfserving: FROM tensorflow/serving; python: tfship.server on TensorFlow; auto: tfserving where pullable.
    runtime: Literal["tfserving", "python", "auto"] = "auto"
    tfserving_version: str = "2.19.0"
    # FROM tensorflow/serving:<version>-gpu and one nvidia.com/gpu per replica (tfserving runtime only).
    gpu: bool = False
    # Where the server listens. Baked into the serving image and recorded in build/artifacts.json: manifests,
    # probes and the smoke test use the recorded ports, so a change takes effect with the next build.
    grpc_port: int = 8500
    rest_port: int = 8501
    # Extra server flags, passed as container args at deploy time (not baked into the image).
    extra_args: list[str] = field(default_factory=list)
    # Replicas close each gRPC connection after this long (clients reconnect through the Service), so long-lived
    # channels spread over every replica instead of sticking to one; 0 keeps connections forever. A terminating pod
    # keeps serving at least this long (its preStop wait), so its clients have moved on before it shuts down.
    grpc_max_connection_age_ms: int = 10000
    # Prometheus metrics on each replica's REST port (/monitoring/prometheus/metrics): per-replica request counts
    # for `invoke evaluate`. Rendered as TF Serving's --monitoring_config_file.
    prometheus: bool = False


@dataclass
class RegistryConfig:
    # host:port of the registry images are pushed to.
    url: str = "127.0.0.1:5000"
    # host:port of the local TLS + htpasswd registry (registry.up --auth, or auth: true), used instead of url.
    auth_url: str = "127.0.0.1:5443"
    # Image of the local registry where the engine can pull it; else Debian's docker-registry as a host process.
    image: str = "registry:2"
    # How the local registry runs: container (registry.image), process (Debian's docker-registry), auto.
    server: Literal["auto", "container", "process"] = "auto"
    # The local registry that `registry.up` manages; False means `url` is someone else's registry.
    local: bool = True
    # TLS + htpasswd for the local registry (registry.up --auth).
    auth: bool = False
    # Plain HTTP to a registry that is not the local one (registry.local: false). Off by default: Docker Hub, GHCR
    # and every registry people push to speak TLS. (The local registry picks its own: HTTP, or TLS with auth.)
    insecure: bool = False
    # CA that signed the registry's certificate, for a registry run elsewhere.
    ca_file: str = ""
    # Namespace inside the registry: <url>/<repository>/<image>.
    repository: str = "tfship"
    push_retries: int = 3
    # Send credentials to an insecure (plain HTTP) registry on another machine anyway (refused by default).
    allow_plain_http_credentials: bool = False


@dataclass
class ResourcesConfig:
    cpu_request: str = "250m"
    cpu_limit: str = "1"
    memory_request: str = "512Mi"
    memory_limit: str = "2Gi"


@dataclass
class KubernetesConfig:
    # kubeconfig context to deploy to; empty: the provider's (auto/external: the kubeconfig's current one).
    context: str = ""
    # auto: the current kubectl context when its cluster answers, else local (built from Debian's source here).
    provider: Literal["auto", "local", "kind", "external"] = "auto"
    namespace: str = "tfship"
    app: str = "tfship-serving"
    replicas: int = 3
    rollout_timeout: int = 300
    progress_deadline: int = 120
    termination_grace: int = 30
    prestop_sleep: int = 5
    pull_secret_name: str = "tfship-registry"
    # How the Service is exposed: ClusterIP (inside the cluster only), NodePort (every node's address), LoadBalancer.
    service_type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"
    # Fixed node ports (30000-32767) for REST and gRPC with NodePort/LoadBalancer; 0: Kubernetes picks them.
    node_port: int = 0
    grpc_node_port: int = 0
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)


@dataclass
class SmokeConfig:
    timeout: float = 10.0
    retries: int = 3
    # digits: highest acceptable error rate over the held-out sample.
    max_error_rate: float = 0.05


@dataclass
class ReleaseConfig:
    """`invoke release`: a canary outside the Service, gated on the model's own quality against the serving version."""

    canary_replicas: int = 1
    # Seconds the canary may take to become Ready (model loading included) before it is rejected.
    canary_timeout: int = 300
    # The canary's error rate on the held-out sample may exceed the serving version's by at most this much
    # (and may never exceed smoke.max_error_rate).
    max_error_rate_increase: float = 0.02
    # Any one class's accuracy may drop by at most this much (classifiers with labelled samples).
    max_class_accuracy_drop: float = 0.25
    # The canary's p99 Predict latency may be at most this many times the serving version's...
    max_p99_ratio: float = 2.0
    # ...unless it is within this many milliseconds of it: port-forward and a busy node add that much jitter.
    p99_slack_ms: float = 50.0
    # Times the held-out sample is sent, one example per request, to each side (more requests: a steadier p99).
    rounds: int = 2
    # Put the canary behind the Service for an observation window, reading its Prometheus request counts.
    canary_traffic: bool = False
    observation_seconds: int = 60
    # Release records kept in the cluster (ConfigMap <app>-releases); the oldest are dropped beyond this.
    history_limit: int = 50


@dataclass
class Config:
    project: str = "tfship"
    models_dir: str = "models"
    # The most a model version folder may hold (MB): a larger one is refused before it is hashed or copied.
    model_size_limit_mb: int = 4096
    build_dir: str = "build"
    base: BaseConfig = field(default_factory=BaseConfig)
    images: ImagesConfig = field(default_factory=ImagesConfig)
    serving: ServingConfig = field(default_factory=ServingConfig)
    models: list[ModelSpec] = field(default_factory=list)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    kubernetes: KubernetesConfig = field(default_factory=KubernetesConfig)
    smoke: SmokeConfig = field(default_factory=SmokeConfig)
    release: ReleaseConfig = field(default_factory=ReleaseConfig)
    # Where tfship.yaml was found; relative paths in the config are relative to it.
    root: Path = field(default_factory=Path.cwd, metadata={"internal": True})

    def path(self, relative: str) -> Path:
        return (self.root / os.path.expanduser(relative)).resolve()

    @property
    def models_path(self) -> Path:
        return self.path(self.models_dir)

    @property
    def build_path(self) -> Path:
        return self.path(self.build_dir)

    @property
    def artifacts_path(self) -> Path:
        return self.build_path / "artifacts.json"

    def model(self, name: str) -> ModelSpec:
        for spec in self.models:
            if spec.name == name:
                return spec
        known = ", ".join(m.name for m in self.models) or "none"
        raise ConfigError(f"unknown model '{name}'", f"models in tfship.yaml: {known}")


def cache_dir() -> Path:
    """Slow things kept between runs (debootstrap trees, Kubernetes binaries), outside the work tree."""
    return Path(os.environ.get("TFSHIP_CACHE_DIR", "~/.cache/tfship")).expanduser()


def state_dir() -> Path:
    """Long-lived local state (registry data, generated credentials and certificates), outside the work tree.
    Created 0700 (and narrowed to it if found wider): whatever lies below is private to this user."""
    folder = Path(os.environ.get("TFSHIP_STATE_DIR", "~/.local/share/tfship")).expanduser()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    if folder.stat().st_mode & 0o077:
        folder.chmod(0o700)
    return folder


def private_dir(*parts: str) -> Path:
    """A folder under the state folder, 0700."""
    folder = state_dir().joinpath(*parts)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    return folder


# --------------------------------------------------------------------------------------------------------------
# Loading


def find_config_file(start: Path | None = None, environ: Mapping[str, str] | None = None) -> Path | None:
    explicit = (os.environ if environ is None else environ).get("TFSHIP_CONFIG")
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ConfigError(f"TFSHIP_CONFIG names {path}, which does not exist", "unset it or point it at a tfship.yaml")
        return path
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / CONFIG_FILE_NAME
        if candidate.is_file():
            return candidate
    return None


def load(
    path: Path | str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Build the Config from all layers. `overrides` maps dotted keys (`kubernetes.replicas`) to flag values;
    None values mean "flag not given" and are skipped."""
    environ = os.environ if environ is None else environ
    file_path = Path(path) if path is not None else find_config_file(environ=environ)
    data: dict[str, Any] = {}
    root = Path.cwd()
    if file_path is not None:
        root = file_path.resolve().parent
        try:
            loaded = yaml.safe_load(file_path.read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file {file_path} does not exist", "create it or run from the project folder")
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{file_path}:{mark.line + 1}" if mark else str(file_path)
            raise ConfigError(f"{where} is not valid YAML: {getattr(exc, 'problem', exc)}", "fix the syntax")
        if not isinstance(loaded, dict):
            raise ConfigError(f"{file_path} must hold a mapping at the top", "see the tfship.yaml in the repository")
        data = loaded
    config = _build(Config, data, source=str(file_path or "defaults"), prefix="")
    config.root = root
    for key, raw in _env_layer(environ).items():
        _set_dotted(config, key, raw, source=f"environment TFSHIP_{key.replace('.', '_').upper()}", from_text=True)
    for key, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(config, key, value, source=f"flag for {key}", from_text=isinstance(value, str))
    _check(config)
    return config


def _check(config: Config) -> None:
    names = [m.name for m in config.models]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise ConfigError(f"models: name {sorted(duplicates)[0]!r} appears twice", "give every model its own name")
    for spec in config.models:
        if not spec.name or not spec.name.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(f"models: name {spec.name!r} is not a valid model name", "use letters, digits, _ and -")
        if spec.version_policy == "specific" and not spec.versions:
            raise ConfigError(
                f"models.{spec.name}.versions is empty but version_policy is 'specific'", "list the versions to serve"
            )
    kube = config.kubernetes
    for key in ("node_port", "grpc_node_port"):
        port = getattr(kube, key)
        if port and not NODE_PORT_RANGE[0] <= port <= NODE_PORT_RANGE[1]:
            raise ConfigError(f"kubernetes.{key} is {port}, outside the node port range "
                              f"{NODE_PORT_RANGE[0]}-{NODE_PORT_RANGE[1]}", "pick a port in that range, or 0")
        if port and kube.service_type == "ClusterIP":
            raise ConfigError(f"kubernetes.{key} is set but kubernetes.service_type is ClusterIP",
                              "set service_type: NodePort (or LoadBalancer), or drop the node port")
    if kube.node_port and kube.node_port == kube.grpc_node_port:
        raise ConfigError(f"kubernetes.node_port and grpc_node_port are both {kube.node_port}", "give them two ports")
    if config.kubernetes.replicas < 0:
        raise ConfigError("kubernetes.replicas must be 0 or more", f"got {config.kubernetes.replicas}")
    # Names that end up as Kubernetes object names or image repositories: refused here, in one line, rather than
    # by the API server or the engine halfway through a run.
    for key, value in (("project", config.project), ("kubernetes.namespace", config.kubernetes.namespace),
                       ("kubernetes.app", config.kubernetes.app),
                       ("kubernetes.pull_secret_name", config.kubernetes.pull_secret_name)):
        if not DNS_LABEL.fullmatch(value):
            raise ConfigError(f"{key} {value!r} is not a DNS label (Kubernetes names it so)",
                              "use at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit")
    for key, value in (("images.devel", config.images.devel), ("images.serving", config.images.serving),
                       ("registry.repository", config.registry.repository)):
        if not IMAGE_PATH.fullmatch(value):
            raise ConfigError(f"{key} {value!r} is not a valid image repository name",
                              "use lowercase letters, digits and separators (. _ - /), e.g. tfship-serving")
    for key, port in (("serving.grpc_port", config.serving.grpc_port), ("serving.rest_port", config.serving.rest_port)):
        if not 0 < port < 65536:
            raise ConfigError(f"{key} {port} is not a TCP port", "use a number from 1 to 65535")
    if config.serving.grpc_port == config.serving.rest_port:
        raise ConfigError(f"serving.grpc_port and serving.rest_port are both {config.serving.grpc_port}",
                          "give gRPC and REST different ports")
    if not 0.0 <= config.smoke.max_error_rate <= 1.0:
        raise ConfigError(f"smoke.max_error_rate {config.smoke.max_error_rate} is not a rate",
                          "use a number from 0 to 1, e.g. 0.05")
    for key, seconds in (("smoke.timeout", config.smoke.timeout), ("kubernetes.rollout_timeout",
                         config.kubernetes.rollout_timeout), ("kubernetes.progress_deadline",
                         config.kubernetes.progress_deadline)):
        if seconds <= 0:
            raise ConfigError(f"{key} must be more than 0 seconds, got {seconds}", "use a positive number")
    release = config.release
    for key in ("canary_replicas", "rounds", "history_limit"):
        if getattr(release, key) < 1:
            raise ConfigError(f"release.{key} must be 1 or more", f"got {getattr(release, key)}")
    if release.max_p99_ratio < 1.0:
        raise ConfigError("release.max_p99_ratio must be 1.0 or more", f"got {release.max_p99_ratio}")
    if len(config.kubernetes.app) > 63 - len("-canary"):
        raise ConfigError(f"kubernetes.app {config.kubernetes.app!r} is too long for its release canary "
                          f"('{config.kubernetes.app}-canary' must fit a 63-character label)",
                          "use at most 56 characters")


def _section_fields(cls: type) -> dict[str, Any]:
    """Key -> type of a config section's settings (annotations resolved, internal fields left out)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if not f.metadata.get("internal")}


def _env_layer(environ: Mapping[str, str]) -> dict[str, str]:
    """Map TFSHIP_SECTION_KEY variables to dotted keys; unknown TFSHIP_* variables are errors."""
    found: dict[str, str] = {}
    for name, value in environ.items():
        if not name.startswith("TFSHIP_") or name in NON_CONFIG_ENV:
            continue
        key = _env_name_to_key(name[len("TFSHIP_"):].lower(), Config)
        if key is None:
            raise ConfigError(f"environment variable {name} is not a tfship setting", "unset it or fix its spelling")
        found[key] = value
    return found


def _env_name_to_key(rest: str, cls: type) -> str | None:
    fields = _section_fields(cls)
    if rest in fields and not _is_section(fields[rest]):
        return rest
    for name, tp in fields.items():
        if _is_section(tp) and rest.startswith(name + "_"):
            sub = _env_name_to_key(rest[len(name) + 1:], tp)
            if sub is not None:
                return f"{name}.{sub}"
    return None


def _is_section(tp: Any) -> bool:
    return dataclasses.is_dataclass(tp) and isinstance(tp, type)


def _build(cls: type, data: Any, *, source: str, prefix: str) -> Any:
    where = prefix.rstrip(".") or "the top level"
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {where} must be a mapping, got {type(data).__name__}", "see tfship.yaml")
    fields = _section_fields(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(
                f"{source}: unknown key '{prefix}{key}'", f"known keys here: {', '.join(sorted(fields))}"
            )
        kwargs[key] = _coerce(fields[key], value, source=source, key=f"{prefix}{key}", from_text=False)
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, *, source: str, key: str, from_text: bool) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    def bad(expected: str) -> ConfigError:
        return ConfigError(f"{source}: '{key}' must be {expected}, got {value!r}", "fix the value")

    if _is_section(tp):
        return _build(tp, value, source=source, prefix=f"{key}.")
    if origin is Literal:
        if value not in args:
            raise bad("one of " + ", ".join(map(str, args)))
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if from_text and isinstance(value, str) and value.lower() in {"1", "true", "yes", "on", "0", "false", "no", "off"}:
            return value.lower() in {"1", "true", "yes", "on"}
        raise bad("true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if from_text and isinstance(value, str) and re.fullmatch(r"\s*-?[0-9]+\s*", value):
            return int(value)
        raise bad("a whole number")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if from_text and isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise bad("a number")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise bad("a string")
    if origin is list:
        if from_text and isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list):
            raise bad("a list")
        return [_coerce(args[0], item, source=source, key=f"{key}[{i}]", from_text=from_text) for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise bad("a mapping")
        return {
            _coerce(args[0], k, source=source, key=f"{key}.{k}", from_text=from_text): _coerce(
                args[1], v, source=source, key=f"{key}.{k}", from_text=from_text
            )
            for k, v in value.items()
        }
    raise ConfigError(f"{source}: '{key}' has a type tfship cannot read ({tp})", "report this as a bug")


def _set_dotted(config: Config, key: str, value: Any, *, source: str, from_text: bool) -> None:
    target: Any = config
    parts = key.split(".")
    for part in parts[:-1]:
        fields = _section_fields(type(target))
        if part not in fields or not _is_section(fields[part]):
            raise ConfigError(f"{source}: unknown key '{key}'", "see tfship.yaml for the known keys")
        target = getattr(target, part)
    fields = _section_fields(type(target))
    last = parts[-1]
    if last not in fields:
        raise ConfigError(f"{source}: unknown key '{key}'", f"known keys here: {', '.join(sorted(fields))}")
    setattr(target, last, _coerce(fields[last], value, source=source, key=key, from_text=from_text))
