"""The kubectl target: binary, kubeconfig and context resolved once, and the reads every stage uses.

`tfship.cluster.target(config)` resolves it for the configured provider (local: the kubectl built with the local
cluster and its own kubeconfig; otherwise kubectl on PATH with kubernetes.context or the current context). This
module imports nothing of tfship.cluster, so the two never form an import loop.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tfship.errors import KubernetesError
from tfship.host import proc

DEFAULT_TIMEOUT = 120.0
# For reads inside a bounded wait: one hung API request cannot outlive the wait's deadline.
REQUEST_TIMEOUT = "--request-timeout=20s"
HINT = "check the cluster with: invoke cluster.status"


class Reads:
    """JSON reads on top of `run`. Target runs the real kubectl; unit tests' fakes implement `run` and `argv`."""

    def argv(self, *args: str) -> list[str]:
        raise NotImplementedError

    def run(self, *args: str, input: str | None = None, check: bool = True,
            timeout: float | None = DEFAULT_TIMEOUT) -> subprocess.CompletedProcess:
        raise NotImplementedError

    def json(self, *args: str, check: bool = True, timeout: float | None = DEFAULT_TIMEOUT) -> Any:
        """`kubectl ARGS -o json`, parsed. None when kubectl printed nothing (a get with --ignore-not-found), or
        when it failed and check is False."""
        result = self.run(*args, "-o", "json", check=check, timeout=timeout)
        if getattr(result, "returncode", 0) != 0:
            return None
        text = (result.stdout or "").strip()
        if not text:
            return None
        try:
            return json.loads(text)
        except ValueError:
            raise KubernetesError(f"'kubectl {' '.join(args[:3])}' did not print JSON: {text[:200]}", HINT) from None

    def items(self, *args: str, check: bool = True, timeout: float | None = DEFAULT_TIMEOUT) -> list[dict[str, Any]]:
        """The `items` of a list read (`get pods -l ...`); empty when there are none."""
        found = self.json(*args, check=check, timeout=timeout)
        return list(found.get("items", [])) if found else []


@dataclass(frozen=True)
class Target(Reads):
    """Where kubectl commands go: the binary, its kubeconfig (None: kubectl's default) and context (empty: the
    kubeconfig's current context)."""

    binary: str
    kubeconfig: Path | None = None
    context: str = ""

    def argv(self, *args: str) -> list[str]:
        """kubectl's argv for this target, e.g. for a long-running `port-forward` under Popen."""
        argv = [self.binary]
        if self.kubeconfig is not None:
            if not self.kubeconfig.is_file():
                raise KubernetesError(f"the local cluster's kubeconfig {self.kubeconfig} does not exist",
                                      "run: invoke cluster.up")
            argv += ["--kubeconfig", str(self.kubeconfig)]
        if self.context:
            argv += ["--context", self.context]
        return argv + [str(a) for a in args]

    def run(self, *args: str, input: str | None = None, check: bool = True,
            timeout: float | None = DEFAULT_TIMEOUT) -> subprocess.CompletedProcess:
        """Run kubectl. With check, a non-zero exit is a KubernetesError carrying kubectl's last lines.
        Never put a secret in args: pass manifests holding one through `input`."""
        return proc.run(self.argv(*args), input=input, check=check, timeout=timeout, error=KubernetesError,
                        hint=HINT)

    def describe(self) -> str:
        """The context as a person would name it, for output lines."""
        return self.context or "(current context)"
