"""Where a registry is and how to reach it: RegistryInfo, registry references as users write them
(`host[:port][/namespace...]`, with Docker Hub's names mapped as the Docker CLI maps them), and whether the engine
allows plain HTTP to it."""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from typing import Any

from tfship.errors import ConfigError
from tfship.host.net import is_loopback


# Docker Hub: images are named docker.io/..., its API answers on registry-1.docker.io, and `docker login` files its
# credentials under the v1 index URL (github.com/distribution/reference normalize.go; docker/cli registry.go).
DOCKER_HUB = "docker.io"
DOCKER_HUB_ALIASES = ("index.docker.io", "registry-1.docker.io")
DOCKER_HUB_API = "registry-1.docker.io"
DOCKER_HUB_CREDENTIALS_KEY = "https://index.docker.io/v1/"
# The distribution reference grammar: path components of a repository name, and a registry host.
PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
HOST = re.compile(r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
                  r"|\[[0-9a-fA-F:.]+\]")


@dataclass(frozen=True)
class RegistryRef:
    """registry.url parsed: the registry (canonical host[:port], docker.io for Docker Hub) and a namespace."""

    registry: str
    namespace: str = ""

    def __str__(self) -> str:
        return f"{self.registry}/{self.namespace}" if self.namespace else self.registry


def parse_registry_url(url: str) -> RegistryRef:
    """`host[:port][/namespace...]` -> RegistryRef; index.docker.io and registry-1.docker.io become docker.io."""
    example = "e.g. registry.url: 127.0.0.1:5000, ghcr.io/ORG or docker.io/USER"
    text = url.strip().rstrip("/")
    if "://" in text:
        raise ConfigError(f"registry.url {url!r} has a scheme", f"drop it: {example} (registry.insecure picks http)")
    host_port, _, namespace = text.partition("/")
    host, port = split_host(host_port)
    if not host or not HOST.fullmatch(host) or (port is not None and not 0 < port < 65536):
        raise ConfigError(f"registry.url {url!r} does not start with a registry host[:port]", example)
    if "." not in host and ":" not in host_port and host != "localhost":
        # The Docker CLI would read `alice/x` as Docker Hub's user alice: say so instead of guessing.
        raise ConfigError(f"registry.url {url!r} does not name a registry host",
                          f"for Docker Hub write docker.io/{text}")
    for component in namespace.split("/") if namespace else ():
        if not PATH_COMPONENT.fullmatch(component):
            raise ConfigError(f"registry.url {url!r}: namespace part {component!r} is not a valid repository path",
                              "use lowercase letters and digits, separated by . _ or -")
    registry = DOCKER_HUB if host_port.lower() in (DOCKER_HUB, *DOCKER_HUB_ALIASES) else host_port
    return RegistryRef(registry, namespace)


def familiar_name(repository: str) -> str:
    """The short name the Docker engine shows for a Docker Hub repository (docker.io/alice/x -> alice/x)."""
    if not repository.startswith(DOCKER_HUB + "/"):
        return repository
    path = repository[len(DOCKER_HUB) + 1:]
    return path.removeprefix("library/") if path.count("/") == 1 else path


def api_host(registry: str) -> str:
    """Where the registry's HTTP API answers: registry-1.docker.io for Docker Hub, else the registry itself."""
    return DOCKER_HUB_API if registry == DOCKER_HUB else registry


def credentials_key(registry: str) -> str:
    """The key `docker login` files the registry's credentials under (the v1 index URL for Docker Hub)."""
    return DOCKER_HUB_CREDENTIALS_KEY if registry == DOCKER_HUB else registry


@dataclass
class RegistryInfo:
    address: str  # the registry images are tagged with: host[:port], docker.io for Docker Hub
    scheme: str  # http or https
    local: bool  # managed by tfship (registry.up)
    auth: bool  # TLS + htpasswd (local), or credentials expected (external)
    running: bool = False
    server: str = ""  # local: "process" or "container"
    ca_file: str = ""  # CA to verify its certificate with; empty: the system's
    detail: str = ""  # pid, container name, log
    namespace: str = ""  # registry.url's path after the host: images go to <address>/<namespace>/...

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{api_host(self.address)}"

    @property
    def host(self) -> str:
        return split_host(api_host(self.address))[0]

    def repository_path(self, *parts: str) -> str:
        """The repository name inside the registry: namespace and `parts`, empty ones left out."""
        return "/".join(part.strip("/") for part in (self.namespace, *parts) if part and part.strip("/"))

    def repository(self, *parts: str) -> str:
        """The full repository images are tagged with: <address>/<namespace>/<parts...>."""
        return f"{self.address}/{self.repository_path(*parts)}"

    def describe(self) -> str:
        kind = "TLS + htpasswd" if self.auth and self.local else ("TLS" if self.scheme == "https" else "insecure HTTP")
        if not self.local:
            name = self.repository() if self.namespace else self.address
            where = "" if api_host(self.address) == self.address else f" at {self.base_url}"
            return f"external registry {name}{where} ({kind}{', CA ' + self.ca_file if self.ca_file else ''})"
        state = f"running as a {self.server}" if self.running else "not running"
        extra = f"; {self.detail}" if self.detail else ""
        return f"local registry {self.base_url} ({kind}): {state}{extra}"


def split_host(address: str) -> tuple[str, int | None]:
    """host[:port] -> (host, port or None); [v6]:port keeps its brackets."""
    host, sep, port = address.rpartition(":")
    if sep and port.isdigit() and (not host.startswith("[") or host.endswith("]")):
        return host, int(port)
    return address, None


def split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"registry address {address!r} is not host:port", "e.g. registry.url: 127.0.0.1:5000")
    return host, int(port)


def engine_allows_http(registry_config: dict[str, Any], address: str) -> bool:
    """Whether the engine (docker info's RegistryConfig) lets plain HTTP reach `address`."""
    host, _ = split_host(address)
    if is_loopback(host):
        return True
    indexes = registry_config.get("IndexConfigs") or {}
    index = indexes.get(address) or indexes.get(host)
    if index is not None and index.get("Secure") is False:
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        try:
            ip = ipaddress.ip_address(socket.gethostbyname(host))
        except OSError:
            return False
    cidrs = registry_config.get("InsecureRegistryCIDRs") or []
    return any(ip in ipaddress.ip_network(cidr, strict=False) for cidr in cidrs)
