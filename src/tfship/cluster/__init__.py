"""The Kubernetes cluster tfship deploys to, behind one provider interface (provider.py), chosen by
kubernetes.provider as kind chooses its node providers:

- `local` (local.py, local_build.py): a real single-node Kubernetes 1.20.2 on this machine, built from Debian
  bookworm's `kubernetes` SOURCE package and started with the source's own hack/local-up-cluster.sh (LAB.md §4).
- `external` (external.py): whatever cluster the configured (or current) kubectl context names; tfship only reads it.
- `kind` (kind.py): where `kind` is installed, a kind cluster wired to the registry container.

`target(config)` resolves the kubectl target (binary, kubeconfig, context) once; tfship.kubectl runs it.
"""

from __future__ import annotations

from tfship.cluster.external import ExternalProvider
from tfship.cluster.kind import KindProvider
from tfship.cluster.local import LOCAL_CONTEXT, LocalProvider
from tfship.cluster.local_build import KUBERNETES_VERSION
from tfship.cluster.provider import Provider
from tfship.cluster.status import ClusterStatus, NodeState
from tfship.config import Config
from tfship.errors import ConfigError, KubernetesError
from tfship.kubectl import Target

PROVIDERS: dict[str, type[Provider]] = {p.name: p for p in (LocalProvider, ExternalProvider, KindProvider)}

__all__ = ["KUBERNETES_VERSION", "LOCAL_CONTEXT", "ClusterStatus", "NodeState", "Provider", "context_of", "down",
           "is_ready", "provider_for", "status", "target", "up"]


def provider_for(config: Config) -> Provider:
    name = config.kubernetes.provider
    try:
        return PROVIDERS[name](config)
    except KeyError:
        raise ConfigError(f"kubernetes.provider {name!r} is not one of {', '.join(PROVIDERS)}",
                          "fix kubernetes.provider in tfship.yaml") from None


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
