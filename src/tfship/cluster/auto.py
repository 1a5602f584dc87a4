"""kubernetes.provider `auto`: the user's current kubectl context when its cluster answers, else tfship's local
cluster. The choice and its reason are said once, so the output always names the context in use."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from typing import Callable

from tfship.cluster.external import ExternalProvider
from tfship.cluster.local import LOCAL_CONTEXT, LocalProvider
from tfship.cluster.provider import Provider
from tfship.config import Config
from tfship.errors import KubernetesError
from tfship.host import proc

PROBE_TIMEOUT = 15.0


@dataclass(frozen=True)
class Choice:
    provider: str  # "local" or "external"
    context: str
    reason: str


def choose(config: Config, *, which: Callable[[str], str | None] = proc.which,
           run: Callable[..., subprocess.CompletedProcess] = proc.run) -> Choice:
    """Pick the provider for `auto` (kubectl itself is asked, so this needs no root and changes nothing)."""
    named = config.kubernetes.context
    if named == LOCAL_CONTEXT:
        return Choice("local", named, f"kubernetes.context is {LOCAL_CONTEXT}")
    if named:
        return Choice("external", named, f"kubernetes.context names {named}")
    kubectl = which("kubectl")
    if kubectl is None:
        return Choice("local", LOCAL_CONTEXT, "no kubectl on PATH")
    current = run([kubectl, "config", "current-context"], check=False, timeout=PROBE_TIMEOUT, error=KubernetesError)
    context = current.stdout.strip() if current.returncode == 0 else ""
    if not context:
        return Choice("local", LOCAL_CONTEXT, "kubectl has no current context")
    if context == LOCAL_CONTEXT:  # tfship's own cluster: use it with its own kubectl (no version skew)
        return Choice("local", LOCAL_CONTEXT, f"the current kubectl context is {LOCAL_CONTEXT}")
    answer = run([kubectl, "--context", context, "get", "--raw", "/version", "--request-timeout=5s"], check=False,
                 timeout=PROBE_TIMEOUT, error=KubernetesError)
    if answer.returncode != 0:
        said = [line.strip() for line in (answer.stderr or answer.stdout or "").splitlines() if line.strip()]
        why = said[-1] if said else f"exit code {answer.returncode}"
        return Choice("local", LOCAL_CONTEXT, f"the current kubectl context {context} does not answer ({why})")
    return Choice("external", context, f"the current kubectl context {context} answers")


_chosen: dict[tuple, Choice] = {}


def cached_choice(config: Config) -> Choice:
    """One choice per process for the same context, kubeconfig and kubectl (one deploy asks several times)."""
    key = (config.kubernetes.context, os.environ.get("KUBECONFIG", ""), proc.which("kubectl"))
    if key not in _chosen:
        _chosen[key] = choose(config)
    return _chosen[key]


def provider(config: Config) -> Provider:
    choice = cached_choice(config)
    chosen = LocalProvider(config) if choice.provider == "local" else ExternalProvider(config, context=choice.context)
    chosen.chosen_because = f"kubernetes.provider auto chose {choice.provider}: {choice.reason}"
    return chosen
