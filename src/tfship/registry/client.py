"""A small client of the registry HTTP API (v2), and the error catalog: which failure gives which one-line message
and which hint (Skaffold keeps such a problem catalog too), for our own requests and for the engine's push errors."""

from __future__ import annotations

from typing import Any

import requests

from tfship.errors import RegistryError
from tfship.registry.address import RegistryInfo, is_loopback
from tfship.registry.credentials import PASSWORD_ENV, USERNAME_ENV, Credentials
from tfship.registry.tls import ENGINE_CERTS_DIR

MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
HTTP_TIMEOUT = 10.0


class TransientRegistryError(RegistryError):
    """A failure worth retrying (5xx, reset connection, timeout)."""


class RegistryClient:
    """Reachability, credential checks and manifest digests through the registry HTTP API (v2)."""

    def __init__(self, info: RegistryInfo, creds: Credentials | None, timeout: float = HTTP_TIMEOUT):
        self.info = info
        self.creds = creds
        self.timeout = timeout
        self.session = requests.Session()
        # A proxy from the environment must not see traffic to this machine's registry.
        self.session.trust_env = not is_loopback(info.host)
        if info.scheme == "https":
            self.session.verify = info.ca_file or True

    def _request(self, method: str, path: str, *, with_auth: bool = True, **kwargs: Any) -> requests.Response:
        try:
            return self.session.request(
                method, f"{self.info.base_url}{path}", timeout=self.timeout,
                auth=self.creds if with_auth else None, **kwargs,
            )
        except requests.exceptions.SSLError as exc:
            if "wrong version number" in str(exc).lower():
                raise RegistryError(f"registry {self.info.address} does not speak TLS",
                                    "it is a plain HTTP registry: set registry.insecure: true and no registry.ca_file")
            raise untrusted_tls(self.info, _short(exc))
        except requests.exceptions.ConnectionError as exc:
            if self.info.scheme == "http" and ("BadStatusLine" in str(exc) or "RemoteDisconnected" in str(exc)):
                raise RegistryError(f"registry {self.info.address} did not answer plain HTTP ({_short(exc)})",
                                    "it probably speaks TLS: set registry.insecure: false (and registry.ca_file)")
            raise unreachable(self.info, _short(exc))
        except requests.exceptions.Timeout:
            raise TransientRegistryError(f"registry {self.info.address} did not answer within {self.timeout:.0f}s",
                                         "check that it runs and is not overloaded")

    def answers(self) -> bool:
        """True when something speaking the registry API answers /v2/ (with or without asking for credentials)."""
        response = self._request("GET", "/v2/", with_auth=False)
        if response.status_code == 400 and "HTTPS" in response.text:
            raise RegistryError(f"registry {self.info.address} speaks TLS, not plain HTTP",
                                "set registry.insecure: false (and registry.ca_file if its CA is private)")
        return response.status_code in (200, 401)

    def check(self) -> bool:
        """Raise a RegistryError unless the registry answers and accepts our credentials (if it wants any).
        Returns whether it requires credentials."""
        if not self.answers():
            raise unreachable(self.info, "/v2/ did not answer as a registry")
        anonymous = self._request("GET", "/v2/", with_auth=False)
        if anonymous.status_code == 200:
            return False
        if self.creds is None:
            raise missing_credentials(self.info)
        if self._request("GET", "/v2/").status_code == 401:
            raise refused_credentials(self.info, self.creds[0])
        return True

    def manifest_digest(self, repository: str, reference: str) -> str | None:
        """The manifest digest the registry serves for repository:reference (Docker v2 schema 2), or None."""
        response = self._request("HEAD", f"/v2/{repository}/manifests/{reference}",
                                 headers={"Accept": f"{MANIFEST_V2}, {OCI_MANIFEST}"})
        if response.status_code == 404:
            return None
        self._raise_for(response, f"{repository}:{reference}")
        return response.headers.get("Docker-Content-Digest")

    def manifest(self, repository: str, reference: str) -> dict[str, Any]:
        response = self._request("GET", f"/v2/{repository}/manifests/{reference}",
                                 headers={"Accept": f"{MANIFEST_V2}, {OCI_MANIFEST}"})
        self._raise_for(response, f"{repository}:{reference}")
        return response.json()

    def _raise_for(self, response: requests.Response, what: str) -> None:
        if response.status_code == 401:
            raise refused_credentials(self.info, self.creds[0]) if self.creds else missing_credentials(self.info)
        if response.status_code >= 500:
            raise TransientRegistryError(f"registry {self.info.address} answered {response.status_code} for {what}",
                                         "retry; see the registry's log")
        if response.status_code >= 400:
            raise RegistryError(f"registry {self.info.address} answered {response.status_code} for {what}",
                                "check the repository name and your access")


def _short(exc: Exception) -> str:
    text = str(exc)
    for marker in ("certificate verify failed", "Connection refused", "Name or service not known", "timed out"):
        if marker in text:
            return marker
    return text[:160]


# --------------------------------------------------------------------------------------------------------------
# The error catalog: one line each, with the fix


def _start_hint(info: RegistryInfo) -> str:
    return f"run: invoke registry.up{' --auth' if info.auth else ''}"


def unreachable(info: RegistryInfo, reason: str) -> RegistryError:
    hint = _start_hint(info) if info.local else f"check registry.url ({info.address}) and that the registry runs"
    return RegistryError(f"registry {info.base_url} is unreachable ({reason})", hint)


def untrusted_tls(info: RegistryInfo, reason: str) -> RegistryError:
    if info.local:
        hint = "run: invoke registry.up --auth (it reinstalls the CA it generated)"
    else:
        hint = (f"set registry.ca_file to the CA that signed its certificate and install it for the engine "
                f"at {ENGINE_CERTS_DIR}/{info.address}/ca.crt")
    return RegistryError(f"TLS to registry {info.address} is not trusted ({reason})", hint)


def missing_credentials(info: RegistryInfo) -> RegistryError:
    return RegistryError(
        f"registry {info.address} answered 401: no basic auth credentials",
        f"set {USERNAME_ENV} and {PASSWORD_ENV}"
        + (" to the credentials registry.up --auth was given" if info.local else f", or docker login {info.address}"),
    )


def refused_credentials(info: RegistryInfo, username: str) -> RegistryError:
    return RegistryError(
        f"registry {info.address} answered 401: it refused the password of user {username!r}",
        f"check {PASSWORD_ENV}" + (" against the one registry.up --auth was given" if info.local else ""),
    )


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
