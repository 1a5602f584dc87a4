"""A kind cluster wired to tfship's registry the way kind-with-registry.sh does it: the node's containerd maps the
registry's address to the registry *container* on kind's Docker network (a registry process on this machine's
loopback is out of the node container's reach). Used where `kind` is installed."""

from __future__ import annotations

import json
import subprocess
from typing import Callable

import yaml

from tfship.cluster.external import kubectl_on_path
from tfship.cluster.provider import Provider
from tfship.cluster.status import NodeState
from tfship.errors import KubernetesError
from tfship.host import proc
from tfship.kubectl import Target
from tfship.progress import step

KIND_CLUSTER_NAME = "tfship"
KIND_NETWORK = "kind"

Runner = Callable[..., subprocess.CompletedProcess]  # proc.run's signature


def kind_create_commands(registry_url: str, registry_container: str, container_port: int,
                         name: str = KIND_CLUSTER_NAME) -> tuple[list[str], str]:
    """The `kind create cluster` argv and its config (stdin): containerd on the node maps `registry_url` to
    `registry_container`:`container_port` on kind's network."""
    node_config = {
        "kind": "Cluster",
        "apiVersion": "kind.x-k8s.io/v1alpha4",
        "containerdConfigPatches": [
            f'[plugins."io.containerd.grpc.v1.cri".registry.mirrors."{registry_url}"]\n'
            f'  endpoint = ["http://{registry_container}:{container_port}"]\n'
        ],
    }
    return ["kind", "create", "cluster", "--name", name, "--config", "-"], yaml.safe_dump(node_config)


def port_of(registry_url: str) -> int:
    hostport = registry_url.split("/", 1)[0]
    _, sep, port = hostport.rpartition(":")
    return int(port) if sep and port.isdigit() else 443


class KindProvider(Provider):
    name = "kind"

    def __init__(self, config, run: Runner = proc.run, which: Callable[[str], str | None] = proc.which):
        super().__init__(config)
        # Fakes in unit tests: kind cannot be installed everywhere.
        self.run = run
        self.which = which

    @property
    def context(self) -> str:
        return self.config.kubernetes.context or f"kind-{KIND_CLUSTER_NAME}"

    def target(self) -> Target:
        return Target(kubectl_on_path(self.name), None, self.context)

    def registry_container(self) -> tuple[str, int]:
        """The running container that publishes the registry's port, and the port it listens on inside.
        tfship's own registry is one with registry.server: container (`invoke registry.up`)."""
        url = self.config.registry.url
        port = port_of(url)
        listed = self.run(["docker", "ps", "--filter", f"publish={port}", "--format", "{{.Names}}"],
                          timeout=60, error=KubernetesError, hint="check the engine: invoke engine.status")
        names = listed.stdout.split()
        if not names:
            raise KubernetesError(
                f"no running container publishes registry port {port}: kind's node can only reach a registry "
                "container on kind's network",
                "set registry.server: container in tfship.yaml and run: invoke registry.up",
            )
        inspected = self.run(["docker", "inspect", "--format", "{{json .NetworkSettings.Ports}}", names[0]],
                             timeout=60, error=KubernetesError)
        for inside, bindings in (json.loads(inspected.stdout or "null") or {}).items():
            if any(str(b.get("HostPort")) == str(port) for b in bindings or []):
                return names[0], int(inside.split("/")[0])
        raise KubernetesError(f"container {names[0]} does not say which of its ports is {port}",
                              f"check: docker port {names[0]}")

    def connect_registry(self, container: str) -> str:
        """Put the registry container on kind's network (kind-with-registry.sh); already there is fine."""
        result = self.run(["docker", "network", "connect", KIND_NETWORK, container], check=False, timeout=60,
                          error=KubernetesError)
        said = (result.stderr or result.stdout or "").strip()
        if result.returncode == 0:
            return f"registry container {container} joined network {KIND_NETWORK}"
        if "already exists" in said:
            return f"registry container {container} already on network {KIND_NETWORK}"
        last = said.splitlines()[-1] if said else f"exit code {result.returncode}"
        raise KubernetesError(f"could not connect registry container {container} to kind's network: {last}",
                              f"run it by hand: docker network connect {KIND_NETWORK} {container}")

    def up(self) -> str:
        if self.which("kind") is None:
            raise KubernetesError("kubernetes.provider is kind but kind is not on PATH",
                                  "install kind, or use provider local")
        container, inside_port = self.registry_container()
        clusters = self.run(["kind", "get", "clusters"], timeout=60, error=KubernetesError).stdout.split()
        if KIND_CLUSTER_NAME in clusters:
            joined = self.connect_registry(container)
            return f"kind cluster {KIND_CLUSTER_NAME} already exists (context {self.context}); {joined}"
        argv, node_config = kind_create_commands(self.config.registry.url, container, inside_port)
        with step(f"Creating kind cluster {KIND_CLUSTER_NAME}") as progress:
            self.run(argv, input=node_config, timeout=600, on_line=progress.update, error=KubernetesError,
                     hint="see kind's output above")
            joined = self.connect_registry(container)
            progress.done(joined)
        return f"kind cluster {KIND_CLUSTER_NAME} created (context {self.context}); {joined}"

    def down(self) -> str:
        if self.which("kind") is None:
            return "kind is not installed: nothing to delete"
        self.run(["kind", "delete", "cluster", "--name", KIND_CLUSTER_NAME], timeout=300, error=KubernetesError)
        return f"kind cluster {KIND_CLUSTER_NAME} deleted"

    def registry_problem(self, registry_url: str, nodes: list[NodeState]) -> str | None:
        return None  # containerd on the node maps the registry's address to its container (see up)
