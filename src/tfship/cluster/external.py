"""Any cluster a kubectl context names (the configured one, else the kubeconfig's current one): tfship only
talks to it with the `kubectl` on PATH, never starts or stops it, and needs no root for it."""

from __future__ import annotations

import os
from pathlib import Path

from tfship.cluster.provider import Provider
from tfship.errors import KubernetesError
from tfship.host import proc
from tfship.kubectl import Target


def kubectl_on_path(provider: str) -> str:
    found = proc.which("kubectl")
    if found is None:
        raise KubernetesError(f"kubernetes.provider is {provider} but kubectl is not on PATH",
                              "install kubectl, or set kubernetes.provider: local")
    return found


class ExternalProvider(Provider):
    name = "external"
    unreachable_hint = "set kubernetes.context in tfship.yaml, or check: kubectl config current-context"

    def __init__(self, config, context: str | None = None):
        super().__init__(config)
        self._context = config.kubernetes.context if context is None else context

    @property
    def context(self) -> str:
        return self._context

    def target(self) -> Target:
        named = [path for path in os.environ.get("KUBECONFIG", "").split(os.pathsep) if path]
        if named and not any(Path(path).expanduser().is_file() for path in named):
            raise KubernetesError(f"KUBECONFIG names {os.environ['KUBECONFIG']}, which does not exist",
                                  "point KUBECONFIG at your cluster's kubeconfig, or unset it for ~/.kube/config")
        return Target(kubectl_on_path(self.name), None, self.context)

    def up(self) -> str:
        current = self.status()
        if not current.ready:
            raise KubernetesError(f"no Ready node in context {self.context or 'current'}", current.describe())
        return "external cluster is Ready; tfship does not manage it\n" + current.describe()

    def down(self) -> str:
        raise KubernetesError(f"context {self.context or '(current)'} is a cluster tfship did not start: "
                              "tfship does not stop clusters it did not start", "stop it with its own tools")
