"""The provider interface (as kind's own providers have one): how tfship brings a cluster up and down, asks its
status, talks to it with kubectl, and whether the cluster's node can pull from a registry."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from tfship.cluster.reach import loopback_problem
from tfship.cluster.status import ClusterStatus, NodeState, read
from tfship.config import Config
from tfship.kubectl import Target


class Provider(ABC):
    name: ClassVar[str]
    # What to do when the cluster does not answer.
    unreachable_hint: ClassVar[str] = "run: invoke cluster.up"

    def __init__(self, config: Config):
        self.config = config
        # Set when kubernetes.provider auto picked this provider: why, for the output.
        self.chosen_because = ""

    def describe(self) -> str:
        """One line naming the provider and the context in use (and why, when auto chose it)."""
        line = f"cluster: {self.name}, kubectl context {self.context or '(current)'}"
        return f"{line} ({self.chosen_because})" if self.chosen_because else line

    @abstractmethod
    def up(self) -> str:
        """Make the cluster answer with a Ready node (a quick no-op when it does); one line saying what happened."""

    @abstractmethod
    def down(self) -> str:
        """Stop what this provider started; one line saying what happened."""

    @property
    @abstractmethod
    def context(self) -> str:
        """The kubeconfig context tfship talks to ('' means the kubeconfig's current context)."""

    @abstractmethod
    def target(self) -> Target:
        """The resolved kubectl target: binary, kubeconfig, context (a KubernetesError when it cannot be)."""

    def status(self) -> ClusterStatus:
        label = f"{self.name} (auto)" if self.chosen_because else self.name
        return read(self.target(), label, self.context, self.unreachable_hint)

    def registry_problem(self, registry_url: str, nodes: list[NodeState]) -> str | None:
        """Why the cluster's nodes cannot pull from `registry_url` (host:port), or None when they can.
        The default: a loopback registry is reachable only from a node that is this machine."""
        return loopback_problem(registry_url, nodes)
