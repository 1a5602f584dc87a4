"""The registry error catalog: which failure gives which one-line message and which hint (Skaffold keeps such a
problem catalog too). Used for tfship's own registry requests and for the Docker engine's push and login errors."""

from __future__ import annotations

from tfship.errors import RegistryError
from tfship.registry.address import RegistryInfo, credentials_key
from tfship.registry.credentials import PASSWORD_ENV, USERNAME_ENV
from tfship.registry.tls import ENGINE_CERTS_DIR


class TransientRegistryError(RegistryError):
    """A failure worth retrying (5xx, reset connection, timeout)."""


def _start_hint(info: RegistryInfo) -> str:
    return f"run: invoke registry.up{' --auth' if info.auth else ''}"


def unreachable(info: RegistryInfo, reason: str) -> RegistryError:
    hint = _start_hint(info) if info.local else f"check registry.url ({info.address}) and that the registry runs"
    return RegistryError(f"registry {info.base_url} is unreachable ({reason})", hint)


def untrusted_tls(info: RegistryInfo, reason: str, token_server: str = "") -> RegistryError:
    """The registry's certificate (or, with `token_server`, its token server's) did not verify."""
    if info.local:
        hint = "run: invoke registry.up --auth (it reinstalls the CA it generated)"
    else:
        hint = (f"set registry.ca_file to the CA that signed its certificate and install it for the engine "
                f"at {ENGINE_CERTS_DIR}/{info.address}/ca.crt")
    what = f"token server {token_server} of registry {info.address}" if token_server else f"registry {info.address}"
    return RegistryError(f"TLS to {what} is not trusted ({reason})", hint)


def missing_credentials(info: RegistryInfo) -> RegistryError:
    return RegistryError(
        f"registry {info.address} answered 401: no basic auth credentials",
        f"set {USERNAME_ENV} and {PASSWORD_ENV}"
        + (" to the credentials registry.up --auth was given" if info.local else f", or {_login_command(info)}"),
    )


def refused_credentials(info: RegistryInfo, username: str, token_server: str = "") -> RegistryError:
    """The registry (Basic) or its token server (`token_server`, Bearer) refused username + password."""
    by = f"its token server {token_server}" if token_server else "it"
    return RegistryError(
        f"registry {info.address} answered 401: {by} refused the password of user {username!r}",
        f"check {PASSWORD_ENV}" + (" against the one registry.up --auth was given" if info.local
                                   else f" (or {_login_command(info)} again)"),
    )


def refused_scope(info: RegistryInfo, scope: str, username: str | None, detail: str = "") -> RegistryError:
    """The token server gave no token, or a token without the access `scope` asks for."""
    who = f"user {username!r}" if username else "anonymous access"
    return RegistryError(
        f"registry {info.address} refused {who} the scope {scope}{f' ({detail})' if detail else ''}",
        "check that this user may push to that repository, or set registry.url to a namespace it owns",
    )


def rejected_token(info: RegistryInfo, token_server: str, error: str) -> RegistryError:
    """The token server issued a token and the registry would not take it (expired, or signed by a key it
    does not trust)."""
    return RegistryError(
        f"registry {info.address} rejected the token from {token_server} ({error or 'invalid_token'}: "
        "expired, or not signed by a key the registry trusts)",
        "check the token server's clock and that the registry's auth.token.rootcertbundle holds its signing "
        "certificate",
    )


def _login_command(info: RegistryInfo) -> str:
    key = credentials_key(info.address)
    return "docker login" if key != info.address else f"docker login {info.address}"


def http_not_allowed(info: RegistryInfo) -> RegistryError:
    return RegistryError(
        f"the Docker engine does not allow plain HTTP to registry {info.address}",
        f'add "insecure-registries": ["{info.address}"] to /etc/docker/daemon.json and restart dockerd, '
        "or give the registry TLS (registry.insecure: false, registry.ca_file)",
    )


def explain(message: str, info: RegistryInfo, username: str | None) -> RegistryError:
    """Map a Docker engine error about a registry (push stream errorDetail, login) to a catalog entry;
    `username` is the user we authenticated as (None: no credentials were sent)."""
    text = message.lower()
    if "server gave http response to https client" in text:
        return http_not_allowed(info)
    if "x509" in text or "certificate" in text:
        return untrusted_tls(info, "the Docker engine says: " + message.strip()[:120])
    if "no basic auth credentials" in text or "authentication required" in text or "unauthorized" in text:
        return refused_credentials(info, username) if username else missing_credentials(info)
    if "denied" in text:
        return RegistryError(f"registry {info.address} denied the push: {message.strip()[:160]}",
                             "check that your user may push to that repository")
    if "connection refused" in text or "no such host" in text:
        error = unreachable(info, message.strip()[:120])
        return TransientRegistryError(error.message, error.hint)
    if any(marker in text for marker in TRANSIENT_MARKERS) or _has_5xx(text):
        return TransientRegistryError(f"registry {info.address} failed transiently: {message.strip()[:160]}",
                                      "retry; see the registry's log")
    return RegistryError(f"pushing to registry {info.address} failed: {message.strip()[:200]}",
                         "see the Docker engine's log for details")


TRANSIENT_MARKERS = (
    "eof", "connection reset", "timeout", "timed out", "broken pipe", "temporarily", "too many requests",
)


def _has_5xx(text: str) -> bool:
    return ("status" in text or "http" in text) and any(str(code) in text for code in (500, 502, 503, 504))
