"""Registry credentials from the environment and from the Docker credential store. Only ever held in memory."""

from __future__ import annotations

import os

from tfship.errors import ConfigError, RegistryError

USERNAME_ENV = "TFSHIP_REGISTRY_USERNAME"
PASSWORD_ENV = "TFSHIP_REGISTRY_PASSWORD"

Credentials = tuple[str, str]


def env_credentials() -> Credentials | None:
    """TFSHIP_REGISTRY_USERNAME + TFSHIP_REGISTRY_PASSWORD, both or neither."""
    username, password = os.environ.get(USERNAME_ENV, ""), os.environ.get(PASSWORD_ENV, "")
    if bool(username) != bool(password):
        missing = PASSWORD_ENV if username else USERNAME_ENV
        raise ConfigError(f"{missing} is not set but its partner is",
                          f"set both {USERNAME_ENV} and {PASSWORD_ENV}, or neither")
    return (username, password) if username else None


def docker_store_credentials(address: str) -> Credentials | None:
    """Credentials `docker login ADDRESS` stored (config.json auths, credsStore or credHelpers)."""
    import docker.auth
    import docker.errors

    try:
        entry = docker.auth.load_config().resolve_authconfig(address)
    except docker.errors.DockerException as exc:
        raise RegistryError(f"the Docker credential store failed for {address}: {exc}", "check ~/.docker/config.json")
    if not entry:
        return None
    fields = {key.lower(): value for key, value in entry.items()}
    if fields.get("username") and fields.get("password"):
        return fields["username"], fields["password"]
    if fields.get("identitytoken"):
        # An OAuth2 refresh token (Docker Desktop's browser login): it needs the realm's POST flow, not Basic.
        raise RegistryError(f"docker login stored an identity token for {address}, which tfship cannot use",
                            f"set {USERNAME_ENV} and {PASSWORD_ENV} (an access token works as the password), or "
                            "docker login with a username and an access token")
    return None
