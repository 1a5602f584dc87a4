"""Whether a cluster's nodes can pull from a registry, decided before a deploy waits on ImagePullBackOff."""

from __future__ import annotations

from typing import Iterable

from tfship.cluster.status import NodeState
from tfship.host.net import is_loopback, is_this_machine
from tfship.registry.address import parse_registry_url, split_host


def registry_host(registry_url: str) -> str:
    """The host of `host[:port][/namespace]` (brackets of an IPv6 literal removed)."""
    return split_host(parse_registry_url(registry_url).registry)[0].strip("[]")


def loopback_problem(registry_url: str, nodes: Iterable[NodeState]) -> str | None:
    """A loopback registry is reachable only from nodes on this machine: name the first node that is not."""
    host = registry_host(registry_url)
    if not is_loopback(host):
        return None
    for node in nodes:
        addresses = node.addresses or [node.name]
        if not any(is_this_machine(address) for address in addresses):
            return (f"registry {registry_url} is on this machine's loopback, but node {node.name} "
                    f"({', '.join(addresses)}) is another machine and cannot pull from it")
    return None
