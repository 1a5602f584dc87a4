"""Where a registry is and how to reach it: RegistryInfo, host:port addresses, and whether the engine allows HTTP."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import Any

from tfship.errors import ConfigError


@dataclass
class RegistryInfo:
    address: str  # host:port images are tagged with
    scheme: str  # http or https
    local: bool  # managed by tfship (registry.up)
    auth: bool  # TLS + htpasswd (local), or credentials expected (external)
    running: bool = False
    server: str = ""  # local: "process" or "container"
    ca_file: str = ""  # CA to verify its certificate with; empty: the system's
    detail: str = ""  # pid, container name, log

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.address}"

    @property
    def host(self) -> str:
        return split_address(self.address)[0]

    def describe(self) -> str:
        kind = "TLS + htpasswd" if self.auth and self.local else ("TLS" if self.scheme == "https" else "insecure HTTP")
        if not self.local:
            return f"external registry {self.base_url} ({kind}{', CA ' + self.ca_file if self.ca_file else ''})"
        state = f"running as a {self.server}" if self.running else "not running"
        extra = f"; {self.detail}" if self.detail else ""
        return f"local registry {self.base_url} ({kind}): {state}{extra}"


def split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"registry address {address!r} is not host:port", "e.g. registry.url: 127.0.0.1:5000")
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def engine_allows_http(registry_config: dict[str, Any], address: str) -> bool:
    """Whether the engine (docker info's RegistryConfig) lets plain HTTP reach `address`."""
    host, _ = split_address(address)
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
