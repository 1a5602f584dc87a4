"""The kubectl target, resolved once: which binary, kubeconfig and context every kubectl call uses.

`tfship.cluster.target(config)` resolves it for the configured provider (this module knows nothing of
clusters, so there is no import loop). Never put a secret in args: pass manifests holding one through `input`.
"""

from __future__ import annotations

import json as jsonlib
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tfship.errors import KubernetesError
from tfship.host import proc

DEFAULT_TIMEOUT = 120.0
HINT = "check the cluster with: invoke cluster.status"


@dataclass(frozen=True)
class Target:
    """The kubectl target: binary, kubeconfig (None: kubectl's default) and context (empty: the current one)."""

    binary: str
    kubeconfig: Path | None
    context: str

    def argv(self, *args: str) -> list[str]:
        """kubectl's argv for this target, e.g. for a long-running `port-forward` under Popen."""
        argv = [self.binary]
        if self.kubeconfig is not None:
            argv += ["--kubeconfig", str(self.kubeconfig)]
        if self.context:
            argv += ["--context", self.context]
        return argv + [str(a) for a in args]

    def run(self, *args: str, input: str | None = None, check: bool = True,
            timeout: float | None = DEFAULT_TIMEOUT) -> subprocess.CompletedProcess:
        """Run kubectl; with check, a non-zero exit is a KubernetesError carrying kubectl's last lines."""
        return proc.run(self.argv(*args), input=input, check=check, timeout=timeout, error=KubernetesError,
                        hint=HINT)

    def json(self, *args: str, timeout: float | None = DEFAULT_TIMEOUT) -> Any:
        """Run `kubectl ARGS -o json` and parse it; output that is not JSON is a KubernetesError."""
        result = self.run(*args, "-o", "json", timeout=timeout)
        try:
            return jsonlib.loads(result.stdout)
        except ValueError:
            first = (result.stdout.strip().splitlines() or ["(nothing)"])[0]
            raise KubernetesError(f"'kubectl {' '.join(args[:3])}' printed no JSON: {first[:200]}", HINT) from None

    def describe(self) -> str:
        """The context as a person would name it, for output lines."""
        return self.context or "(current context)"


# Transition (issue 9): callers that still pass a config. They resolve through tfship.cluster at call time;
# the lead removes these once deploy/smoke take a Target.
def kubectl_argv(config, *args: str) -> list[str]:
    from tfship import cluster

    return cluster.target(config).argv(*args)


def kubectl(config, *args: str, input: str | None = None, check: bool = True,
            timeout: float | None = DEFAULT_TIMEOUT) -> subprocess.CompletedProcess:
    from tfship import cluster

    return cluster.target(config).run(*args, input=input, check=check, timeout=timeout)
