"""The one way tfship runs kubectl: the right binary, kubeconfig and context for the configured cluster.

provider local: the kubectl built with the local cluster (same version, no skew) and its own kubeconfig,
context `tfship-local` unless kubernetes.context names another. Otherwise: `kubectl` on PATH, with
kubernetes.context if set, else the kubeconfig's current context.
"""

from __future__ import annotations

import subprocess

from tfship import proc
from tfship.cluster import context_of, kubeconfig_of, kubectl_binary
from tfship.config import Config
from tfship.errors import KubernetesError

DEFAULT_TIMEOUT = 120.0


def kubectl_argv(config: Config, *args: str) -> list[str]:
    """kubectl's argv for the configured cluster, e.g. for a long-running `port-forward` under Popen."""
    argv = [kubectl_binary(config)]
    kubeconfig = kubeconfig_of(config)
    if kubeconfig is not None:
        if not kubeconfig.is_file():
            raise KubernetesError(f"the local cluster's kubeconfig {kubeconfig} does not exist", "run: invoke cluster.up")
        argv += ["--kubeconfig", str(kubeconfig)]
    context = context_of(config)
    if context:
        argv += ["--context", context]
    return argv + [str(a) for a in args]


def kubectl(
    config: Config,
    *args: str,
    input: str | None = None,
    check: bool = True,
    timeout: float | None = DEFAULT_TIMEOUT,
) -> subprocess.CompletedProcess:
    """Run kubectl against the configured cluster. With check, a non-zero exit is a KubernetesError carrying
    kubectl's last lines. Never put a secret in args: pass manifests holding one through `input`."""
    return proc.run(
        kubectl_argv(config, *args),
        input=input,
        check=check,
        timeout=timeout,
        error=KubernetesError,
        hint="check the cluster with: invoke cluster.status",
    )
