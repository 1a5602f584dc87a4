"""A small client of the registry HTTP API (v2): reachability, credential checks and manifest digests, with the
authentication registries ask for — HTTP Basic, or Bearer tokens per the Docker Registry v2 token spec
(distribution/docs/spec/auth/token.md): a 401 names a realm, a service and maybe a scope; the client asks the realm
for a token for `repository:NAME:pull,push` (with the user's password, or anonymously), uses it until it expires or a
401 comes back, then asks again.

Built on requests (sessions, TLS verification against registry.ca_file, challenge parsing with
requests.utils.parse_dict_header); tokens are opaque here: only the registry verifies them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import urlsplit

import requests
import requests.utils

from tfship.errors import RegistryError
from tfship.registry import catalog
from tfship.registry.address import RegistryInfo, is_loopback, split_host
from tfship.registry.catalog import TransientRegistryError
from tfship.registry.credentials import Credentials

MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
HTTP_TIMEOUT = 10.0
# The spec's default token lifetime when the token server names none; renew a little early.
DEFAULT_TOKEN_SECONDS = 60
RENEW_MARGIN_SECONDS = 5


@dataclass(frozen=True)
class Challenge:
    """A WWW-Authenticate challenge: `Basic realm=...` or `Bearer realm=...,service=...,scope=...,error=...`."""

    scheme: str  # lowercase: basic, bearer
    params: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, response: requests.Response) -> "Challenge | None":
        header = response.headers.get("WWW-Authenticate", "").strip()
        if not header:
            return None
        scheme, _, rest = header.partition(" ")
        return cls(scheme.lower(), {key.lower(): value or "" for key, value in
                                    requests.utils.parse_dict_header(rest).items()})

    @property
    def realm(self) -> str:
        return self.params.get("realm", "")

    @property
    def token_server(self) -> str:
        return urlsplit(self.realm).netloc or self.realm


def repository_scope(repository: str, push: bool) -> str:
    return f"repository:{repository}:{'pull,push' if push else 'pull'}"


class BearerTokens:
    """Tokens from a registry's token server, one per scope, kept until they expire."""

    def __init__(self, info: RegistryInfo, creds: Credentials | None, session: requests.Session, timeout: float,
                 clock: Callable[[], float] = time.monotonic):
        self.info = info
        self.creds = creds
        self.session = session
        self.timeout = timeout
        self.clock = clock
        self.tokens: dict[str, tuple[str, float]] = {}  # scope -> (token, expiry on `clock`)
        self.issued = 0

    def cached(self, scope: str) -> str | None:
        token, expiry = self.tokens.get(scope, ("", 0.0))
        return token if token and self.clock() < expiry else None

    def forget(self, scope: str) -> None:
        self.tokens.pop(scope, None)

    def fetch(self, challenge: Challenge, scope: str) -> str:
        """A new token for `scope` (or the challenge's own scope) from the realm the challenge names."""
        realm = challenge.realm
        parts = urlsplit(realm)
        if parts.scheme not in ("https", "http") or not parts.netloc:
            raise RegistryError(f"registry {self.info.address} names no usable token realm ({realm!r})",
                                "check the registry's auth.token.realm")
        if parts.scheme == "http" and self.creds and not is_loopback(split_host(parts.netloc)[0]):
            raise RegistryError(f"registry {self.info.address} wants the password sent in clear to {realm}",
                                "the token realm must be https")
        params = {"service": challenge.params.get("service", "")}
        wanted = scope or challenge.params.get("scope", "")
        if wanted:
            params["scope"] = wanted
        if self.creds:
            params["account"] = self.creds[0]
        server = challenge.token_server
        try:
            response = self.session.get(realm, params={k: v for k, v in params.items() if v}, auth=self.creds,
                                        timeout=self.timeout)
        except requests.exceptions.SSLError as exc:
            raise catalog.untrusted_tls(self.info, short_reason(exc), token_server=server)
        except requests.exceptions.RequestException as exc:
            error = catalog.unreachable(self.info, f"its token server {server}: {short_reason(exc)}")
            raise TransientRegistryError(error.message, error.hint)
        username = self.creds[0] if self.creds else None
        if response.status_code == 401:
            raise (catalog.refused_credentials(self.info, username, token_server=server) if username
                   else catalog.missing_credentials(self.info))
        if response.status_code == 403:
            raise catalog.refused_scope(self.info, wanted or "(none)", username, f"token server {server} said 403")
        if response.status_code >= 500:
            raise TransientRegistryError(f"token server {server} of registry {self.info.address} answered "
                                         f"{response.status_code}", "retry; see the token server's log")
        try:
            body = response.json() if response.status_code == 200 else {}
            token = body.get("token") or body.get("access_token")
            lifetime = float(body.get("expires_in") or DEFAULT_TOKEN_SECONDS)
        except (ValueError, AttributeError, TypeError):
            token = None
        if not token:
            raise RegistryError(f"token server {server} of registry {self.info.address} answered "
                                f"{response.status_code} without a token", "check the registry's auth.token.realm")
        self.issued += 1
        self.tokens[scope] = (token, self.clock() + max(lifetime - RENEW_MARGIN_SECONDS, 1.0))
        return token


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
        self.bearer = BearerTokens(info, creds, self.session, timeout)
        self.basic = False  # the registry asked for Basic: send it up front from then on

    def _send(self, method: str, path: str, headers: dict[str, str], basic: bool, **kwargs: Any) -> requests.Response:
        try:
            return self.session.request(method, f"{self.info.base_url}{path}", timeout=self.timeout, headers=headers,
                                        auth=self.creds if basic else None, **kwargs)
        except requests.exceptions.SSLError as exc:
            if "wrong version number" in str(exc).lower():
                raise RegistryError(f"registry {self.info.address} does not speak TLS",
                                    "it is a plain HTTP registry: set registry.insecure: true and no registry.ca_file")
            raise catalog.untrusted_tls(self.info, short_reason(exc))
        except requests.exceptions.ConnectionError as exc:
            if self.info.scheme == "http" and ("BadStatusLine" in str(exc) or "RemoteDisconnected" in str(exc)):
                raise RegistryError(f"registry {self.info.address} did not answer plain HTTP ({short_reason(exc)})",
                                    "it probably speaks TLS: set registry.insecure: false (and registry.ca_file)")
            raise catalog.unreachable(self.info, short_reason(exc))
        except requests.exceptions.Timeout:
            raise TransientRegistryError(f"registry {self.info.address} did not answer within {self.timeout:.0f}s",
                                         "check that it runs and is not overloaded")

    def _request(self, method: str, path: str, *, scope: str = "", with_auth: bool = True,
                 headers: dict[str, str] | None = None, **kwargs: Any) -> requests.Response:
        """One request; on a 401 answer the registry's challenge (Basic, or a new Bearer token) and retry once."""
        headers = dict(headers or {})
        token = self.bearer.cached(scope) if with_auth else None
        if token:
            headers["Authorization"] = f"Bearer {token}"
        response = self._send(method, path, headers, with_auth and self.basic and bool(self.creds), **kwargs)
        if response.status_code != 401 or not with_auth:
            return response
        challenge = Challenge.of(response)
        if challenge is None:
            return response
        if challenge.scheme == "basic":
            if not self.creds or self.basic:
                return response
            self.basic = True
            return self._send(method, path, headers, True, **kwargs)
        if challenge.scheme == "bearer":
            headers["Authorization"] = f"Bearer {self.bearer.fetch(challenge, scope)}"
            response = self._send(method, path, headers, False, **kwargs)
            if response.status_code == 401:
                self.bearer.forget(scope)  # a token the registry refuses is no use next time either
        return response

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
            raise catalog.unreachable(self.info, "/v2/ did not answer as a registry")
        anonymous = self._request("GET", "/v2/", with_auth=False)
        if anonymous.status_code == 200:
            return False
        if self.creds is None:
            raise catalog.missing_credentials(self.info)
        response = self._request("GET", "/v2/")
        if response.status_code == 401:
            raise self._unauthorized(response, "")
        return True

    def manifest_digest(self, repository: str, reference: str) -> str | None:
        """The manifest digest the registry serves for repository:reference (Docker v2 schema 2), or None."""
        response = self._request("HEAD", f"/v2/{repository}/manifests/{reference}", scope=self._scope(repository),
                                 headers={"Accept": f"{MANIFEST_V2}, {OCI_MANIFEST}"})
        if response.status_code == 404:
            return None
        self._raise_for(response, f"{repository}:{reference}", repository)
        return response.headers.get("Docker-Content-Digest")

    def manifest(self, repository: str, reference: str) -> dict[str, Any]:
        response = self._request("GET", f"/v2/{repository}/manifests/{reference}", scope=self._scope(repository),
                                 headers={"Accept": f"{MANIFEST_V2}, {OCI_MANIFEST}"})
        self._raise_for(response, f"{repository}:{reference}", repository)
        return response.json()

    def _scope(self, repository: str) -> str:
        # With credentials we are about to push; without, only pulls make sense (anonymous tokens).
        return repository_scope(repository, push=self.creds is not None)

    def _unauthorized(self, response: requests.Response, scope: str) -> RegistryError:
        """What a 401 that survived authentication means."""
        challenge = Challenge.of(response)
        username = self.creds[0] if self.creds else None
        if challenge is not None and challenge.scheme == "bearer":
            error = challenge.params.get("error", "")
            if error == "insufficient_scope":
                return catalog.refused_scope(self.info, scope or challenge.params.get("scope", ""), username,
                                             "the token grants less")
            return catalog.rejected_token(self.info, challenge.token_server, error)
        return catalog.refused_credentials(self.info, username) if username else catalog.missing_credentials(self.info)

    def _raise_for(self, response: requests.Response, what: str, repository: str) -> None:
        if response.status_code == 401:
            raise self._unauthorized(response, self._scope(repository))
        if response.status_code >= 500:
            raise TransientRegistryError(f"registry {self.info.address} answered {response.status_code} for {what}",
                                         "retry; see the registry's log")
        if response.status_code >= 400:
            raise RegistryError(f"registry {self.info.address} answered {response.status_code} for {what}",
                                "check the repository name and your access")


def short_reason(exc: Exception) -> str:
    text = str(exc)
    for marker in ("certificate verify failed", "Connection refused", "Name or service not known", "timed out"):
        if marker in text:
            return marker
    return text[:160]
