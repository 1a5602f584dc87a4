"""The Kubernetes cluster tfship deploys to, behind one provider interface (provider.py), chosen by
kubernetes.provider as kind chooses its node providers:

- `local` (local.py, local_build.py): a real single-node Kubernetes 1.20.2 on this machine, built from Debian
  bookworm's `kubernetes` SOURCE package and started with the source's own hack/local-up-cluster.sh (LAB.md §4).
- `external` (external.py): whatever cluster the configured (or current) kubectl context names; tfship only reads it.
- `kind` (kind.py): where `kind` is installed, a kind cluster wired to the registry container.
- `auto` (auto.py, the default): the current kubectl context when its cluster answers, else `local`.

Every command that resolves the cluster says once which provider and context it uses (and why, for auto).

`target(config)` resolves the kubectl target (binary, kubeconfig, context) once; tfship.kubectl runs it.
"""

from __future__ import annotations

from tfship.cluster import auto
from tfship.cluster.external import ExternalProvider
from tfship.cluster.kind import KindProvider
from tfship.cluster.local import LOCAL_CONTEXT, LocalProvider
from tfship.cluster.local_build import KUBERNETES_VERSION
from tfship.cluster.provider import Provider
from tfship.cluster.status import ClusterStatus, NodeState
from tfship.config import Config
from tfship.errors import ConfigError, KubernetesError
from tfship.kubectl import Target
from tfship.progress import say

PROVIDERS: dict[str, type[Provider]] = {p.name: p for p in (LocalProvider, ExternalProvider, KindProvider)}

__all__ = ["KUBERNETES_VERSION", "LOCAL_CONTEXT", "ClusterStatus", "NodeState", "Provider", "check_pull",
           "context_of", "down", "is_ready", "provider_for", "status", "target", "up"]

_said: set[str] = set()


def provider_for(config: Config) -> Provider:
    """The provider kubernetes.provider names (auto: chosen now); says once which provider and context are used."""
    name = config.kubernetes.provider
    if name == "auto":
        chosen = auto.provider(config)
    elif name in PROVIDERS:
        chosen = PROVIDERS[name](config)
    else:
        raise ConfigError(f"kubernetes.provider {name!r} is not one of auto, {', '.join(PROVIDERS)}",
                          "fix kubernetes.provider in tfship.yaml")
    line = chosen.describe()
    if line not in _said:
        _said.add(line)
        say(line)
    return chosen


def up(config: Config) -> str:
    """Make the configured cluster answer with a Ready node; a quick no-op when it already does."""
    return provider_for(config).up()


def down(config: Config) -> str:
    return provider_for(config).down()


def status(config: Config) -> ClusterStatus:
    """Ask the configured cluster for its nodes; a KubernetesError says why it does not answer."""
    return provider_for(config).status()


def is_ready(config: Config) -> bool:
    try:
        return status(config).ready
    except KubernetesError:
        return False


def target(config: Config) -> Target:
    """The kubectl target (binary, kubeconfig, context) for the configured cluster."""
    return provider_for(config).target()


def context_of(config: Config) -> str:
    """The kubeconfig context tfship talks to; empty means the kubeconfig's current context."""
    return provider_for(config).context


def check_pull(config: Config, image_ref: str) -> None:
    """Fail with one line, before anything is applied, when the cluster's nodes cannot reach the registry
    `image_ref` lives in (e.g. a loopback registry and a node on another machine); silent when they can."""
    chosen = provider_for(config)
    first = image_ref.split("/", 1)[0]
    # A reference without a registry host (`name:tag`, `user/name`) comes from Docker Hub.
    registry = first if "/" in image_ref and ("." in first or ":" in first or first == "localhost") else "docker.io"
    problem = chosen.registry_problem(registry, chosen.status().nodes)
    if problem:
        raise KubernetesError(
            problem,
            f"push to a registry the cluster can reach (registry.url), or deploy to a cluster on this machine "
            f"(kubernetes.provider: local); the cluster is context {chosen.context or '(current)'}",
        )
