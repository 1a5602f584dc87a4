"""What a cluster says about itself: its nodes, whether one is Ready, and waiting (bounded) until one is."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Callable

from tfship.errors import KubernetesError
from tfship.kubectl import Target


@dataclass
class NodeState:
    name: str
    ready: bool
    version: str
    reason: str = ""
    # The node's addresses (InternalIP, ExternalIP, Hostname), to tell whether it is this machine.
    addresses: list[str] = field(default_factory=list)


@dataclass
class ClusterStatus:
    provider: str
    context: str
    server: str
    nodes: list[NodeState]

    @property
    def ready(self) -> bool:
        return any(node.ready for node in self.nodes)

    def describe(self) -> str:
        lines = [f"{self.provider} cluster at {self.server} (context {self.context or 'current'})"]
        for node in self.nodes:
            state = "Ready" if node.ready else f"NotReady ({node.reason or 'no reason given'})"
            lines.append(f"  node {node.name}: {state}, kubelet {node.version}")
        if not self.nodes:
            lines.append("  no nodes registered yet")
        return "\n".join(lines)


def parse_nodes(nodes_json: dict) -> list[NodeState]:
    """`kubectl get nodes -o json` to the Ready state of each node."""
    states = []
    for item in nodes_json.get("items", []):
        status = item.get("status", {})
        ready = next((c for c in status.get("conditions", []) if c.get("type") == "Ready"), {})
        states.append(
            NodeState(
                name=item["metadata"]["name"],
                ready=ready.get("status") == "True",
                version=status.get("nodeInfo", {}).get("kubeletVersion", "?"),
                reason=ready.get("message", "") if ready.get("status") != "True" else "",
                addresses=[a["address"] for a in status.get("addresses", []) if a.get("address")],
            )
        )
    return states


def read(target: Target, provider: str, context: str, hint: str) -> ClusterStatus:
    """Ask the cluster behind `target` for its nodes; a KubernetesError (with `hint`) says why it does not answer."""
    nodes = target.run("get", "nodes", "-o", "json", "--request-timeout=10s", timeout=30, check=False)
    if nodes.returncode != 0:
        said = [line.strip() for line in (nodes.stderr or nodes.stdout).splitlines() if line.strip()]
        raise KubernetesError(
            f"the cluster of context {context or '(current)'} does not answer: "
            f"{said[-1] if said else 'kubectl exited with ' + str(nodes.returncode)}",
            hint,
        )
    server = target.run("config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}", timeout=30)
    return ClusterStatus(provider=provider, context=context, server=server.stdout.strip() or "?",
                         nodes=parse_nodes(json.loads(nodes.stdout)))


def wait_ready(read_status: Callable[[], ClusterStatus], timeout: float, hint: str) -> ClusterStatus:
    """Poll read_status until a node is Ready, for at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last = "the apiserver did not answer"
    while time.monotonic() < deadline:
        try:
            current = read_status()
            if current.ready:
                return current
            last = current.describe().replace("\n", ";")
        except KubernetesError as error:
            last = error.message
        time.sleep(2)
    raise KubernetesError(f"no node became Ready within {timeout:.0f}s: {last}", hint)
