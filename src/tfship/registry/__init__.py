"""Registries: where images go (tfship's local one, or someone else's), with credentials and a check that it answers.

    address.py      RegistryInfo; registry.url as users write it (host[:port][/namespace], docker.io -> Docker Hub)
    local.py        the local registry's lifecycle (LocalSite: config, certificates, htpasswd, process/container)
    client.py       the registry HTTP API client, with Basic and Bearer token authentication
    catalog.py      the error catalog: each failure as one line with its hint
    credentials.py  credentials from the environment and the Docker credential store
    tls.py          a private CA and server certificate (openssl), installed where dockerd reads it

Any other registry works from config (`registry.local: false`, `url` as host[:port][/namespace...], `insecure`,
`ca_file`) with credentials from TFSHIP_REGISTRY_USERNAME/TFSHIP_REGISTRY_PASSWORD or `docker login`'s store.
"""

from __future__ import annotations

import shutil

from tfship.config import Config
from tfship.errors import ConfigError, RegistryError
from tfship.registry import local
from tfship.registry.address import (
    DOCKER_HUB,
    RegistryInfo,
    credentials_key,
    engine_allows_http,
    familiar_name,
    is_loopback,
    parse_registry_url,
    split_address,
)
from tfship.registry.catalog import (
    TransientRegistryError,
    explain,
    http_not_allowed,
    missing_credentials,
    refused_credentials,
    unreachable,
    untrusted_tls,
)
from tfship.registry.client import RegistryClient
from tfship.registry.credentials import (
    PASSWORD_ENV,
    USERNAME_ENV,
    Credentials,
    docker_store_credentials,
    env_credentials,
)
from tfship.registry.local import LocalSite

__all__ = [
    "PASSWORD_ENV", "USERNAME_ENV", "Credentials", "LocalSite", "RegistryClient", "RegistryInfo",
    "TransientRegistryError", "credentials", "credentials_key", "down", "engine_allows_http", "explain",
    "familiar_name", "http_not_allowed", "image_repository", "is_loopback", "missing_credentials",
    "refused_credentials", "resolve", "split_address", "status", "target_address", "unreachable", "untrusted_tls",
    "up",
]


def target_address(config: Config, auth: bool | None = None) -> str:
    """The registry.url images go to (host[:port][/namespace]): the local TLS registry's `auth_url` with auth."""
    auth = config.registry.auth if auth is None else auth
    if config.registry.local and auth:
        return config.registry.auth_url
    return config.registry.url


def resolve(config: Config, auth: bool | None = None) -> RegistryInfo:
    """Where images go and how to reach it, without starting anything (`running` says whether it runs)."""
    auth = config.registry.auth if auth is None else auth
    ref = parse_registry_url(target_address(config, auth))
    if not config.registry.local:
        ca = str(config.path(config.registry.ca_file)) if config.registry.ca_file else ""
        scheme = "http" if config.registry.insecure and not ca else "https"
        return RegistryInfo(ref.registry, scheme, local=False, auth=auth, running=True, server="external",
                            ca_file=ca, namespace=ref.namespace)
    info = LocalSite(ref.registry, auth).info()
    info.namespace = ref.namespace
    return info


def image_repository(config: Config, info: RegistryInfo, name: str) -> str:
    """The repository path of image `name` inside the registry: <namespace>/<registry.repository>/<name>."""
    path = info.repository_path(config.registry.repository, name)
    if info.address == DOCKER_HUB and path.count("/") != 1:
        raise ConfigError(
            f"Docker Hub repositories are NAMESPACE/NAME, but registry.url {config.registry.url} with "
            f"registry.repository {config.registry.repository!r} names docker.io/{path}",
            "use registry.url: docker.io/USER and registry.repository: '' (images become docker.io/USER/<image>)",
        )
    return path


def credentials(config: Config) -> Credentials | None:
    """(username, password) for the configured registry, or None when it needs none / none are known.

    Order: TFSHIP_REGISTRY_USERNAME + TFSHIP_REGISTRY_PASSWORD; for the local TLS registry, the credentials
    `registry.up --auth` generated; for any other, the Docker credential store (~/.docker/config.json).
    The local insecure registry has no credentials. The password is only ever held in memory.
    """
    from_env = env_credentials()
    if config.registry.local and not config.registry.auth:
        return None
    if from_env:
        return from_env
    address = parse_registry_url(target_address(config)).registry
    if config.registry.local:
        return LocalSite(address, auth=True).stored_credentials()
    return docker_store_credentials(address)


def up(config: Config, auth: bool | None = None) -> RegistryInfo:
    """Start the local registry (TLS + htpasswd with `auth`), or check that an external one answers."""
    auth = config.registry.auth if auth is None else auth
    if not config.registry.local:
        info = resolve(config, auth)
        RegistryClient(info, credentials(config)).check()
        info.detail = "answers (registry.local is false: tfship does not manage it)"
        return info
    ref = parse_registry_url(target_address(config, auth))
    info = local.up(config, LocalSite(ref.registry, auth))
    info.namespace = ref.namespace
    return info


def down(config: Config, auth: bool | None = None, purge: bool = False) -> list[str]:
    """Stop the local registries (both, or the one `auth` names). Data is kept unless `purge`, which also
    deletes its certificates, credentials and the CA installed for the engine."""
    if not config.registry.local:
        return [f"registry {config.registry.url} is not local (registry.local is false): nothing to stop"]
    lines = []
    for secure in ([False, True] if auth is None else [auth]):
        site = LocalSite(parse_registry_url(target_address(config, secure)).registry, secure)
        stopped = site.stop()
        lines.append(f"local registry {site.address}: {'stopped' if stopped else 'was not running'}"
                     + ("" if purge else f" (data kept in {site.root})"))
        if purge:
            site.remove_engine_ca()
            shutil.rmtree(site.root, ignore_errors=True)
            lines.append(f"local registry {site.address}: data, certificates and credentials deleted")
    return lines


def status(config: Config) -> list[RegistryInfo]:
    """The local insecure and TLS registries (or the external one), with whether each runs and answers."""
    if not config.registry.local:
        info = resolve(config)
        try:
            info.running = RegistryClient(info, None).answers()
        except RegistryError as exc:
            info.running, info.detail = False, exc.one_line()
        return [info]
    return [resolve(config, auth=False), resolve(config, auth=True)]
