"""The push stage: the images `build` recorded in build/artifacts.json go to the registry, digests come back.

Each image is tagged <registry>[/<namespace>]/<registry.repository>/<name>:<content tag> (registry.image_repository)
and pushed with docker-py. docker-py does not raise on a failed push (the error is an `errorDetail` item in the
stream), so the stream is read to the end and every error is mapped to the registry error catalog; transient ones
are retried with back-off. A push is confirmed by reading the manifest digest back over the registry HTTP API, and
skipped when the registry already serves, under that tag, the digest the engine recorded for this image.
artifacts.json is written only after every image is confirmed, so a failed push leaves the previous hand-off
untouched.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from tfship import artifacts as artifacts_file
from tfship import docker_client, registry
from tfship.artifacts import Artifacts, ImageArtifact
from tfship.config import Config
from tfship.errors import RegistryError, TfshipError
from tfship.progress import step

BACKOFF_SECONDS = 1.0
BACKOFF_LIMIT = 8.0


@dataclass
class StreamResult:
    """What a push stream said: the manifest digest and what was sent."""

    digest: str = ""
    layers_pushed: int = 0
    layers_existing: int = 0
    bytes_pushed: int = 0  # uncompressed size of the layers sent (the stream's progress totals)


@dataclass
class ImagePush:
    role: str
    reference: str  # repository:tag
    digest: str
    skipped: bool
    stream: StreamResult = field(default_factory=StreamResult)
    attempts: int = 0

    def line(self) -> str:
        if self.skipped:
            return f"{self.role}: {self.reference}@{self.digest} already in the registry, not pushed"
        sent = self.stream
        return (f"{self.role}: pushed {self.reference}@{self.digest} ({sent.layers_pushed} new layers, "
                f"{sent.bytes_pushed / 1e6:.1f} MB uncompressed; {sent.layers_existing} already there)")


@dataclass
class PushReport:
    registry: registry.RegistryInfo
    images: list[ImagePush]
    artifacts: Artifacts

    def lines(self) -> list[str]:
        return [image.line() for image in self.images] + [f"recorded in build/artifacts.json ({self.registry.address})"]


def push(config: Config) -> Artifacts:
    """Push every built image and return the artifacts with repositories and digests recorded."""
    return push_images(config).artifacts


def push_images(config: Config) -> PushReport:
    """push(), with what happened to each image (pushed or skipped, layers and bytes sent)."""
    recorded = artifacts_file.load(config.artifacts_path)
    if not recorded.images:
        raise TfshipError(f"nothing to push: {config.artifacts_path} records no built image", "run invoke build first")
    client = docker_client.engine()
    try:
        local_images = {role: _local_image(client, image) for role, image in sorted(recorded.images.items())}
        info = registry.resolve(config)
        paths = {role: registry.image_repository(config, info, image.name) for role, image in recorded.images.items()}
        if info.local and not info.running:
            raise registry.unreachable(info, "tfship's local registry is not running")
        _check_engine_allows(client, info)  # before any traffic: the engine would refuse anyway
        creds = registry.credentials(config)
        api = registry.RegistryClient(info, creds)
        needs_auth = api.check()
        auth_config = _engine_login(client, info, creds) if creds else None
        result = copy.deepcopy(recorded)
        pushes = []
        for role, image in sorted(result.images.items()):
            pushes.append(_push_image(config, client, api, info, image, paths[role], local_images[role], auth_config))
        result.registry = info.address
        result.registry_auth = needs_auth
        artifacts_file.save(config.artifacts_path, result)
        return PushReport(info, pushes, result)
    finally:
        client.close()


def _local_image(client, image: ImageArtifact):
    import docker.errors

    try:
        found = client.images.get(image.local_ref)
    except docker.errors.ImageNotFound:
        raise TfshipError(f"the {image.role} image {image.local_ref} is not in the Docker engine",
                          "run invoke build first")
    if image.image_id and found.id != image.image_id:
        raise TfshipError(
            f"the {image.role} image {image.local_ref} in the engine is {found.id[:19]}, not the {image.image_id[:19]} "
            "build recorded", "run invoke build first")
    return found


def _check_engine_allows(client, info: registry.RegistryInfo) -> None:
    if info.scheme != "http":
        return
    if not registry.engine_allows_http(client.info().get("RegistryConfig") or {}, info.address):
        raise registry.http_not_allowed(info)


def _engine_login(client, info: registry.RegistryInfo, creds: registry.Credentials) -> dict[str, str]:
    """Have the engine itself check the credentials (reauth: never trust a cached login), in memory only."""
    import docker.errors

    username, password = creds
    try:
        client.login(username=username, password=password, registry=registry.credentials_key(info.address),
                     reauth=True)
    except docker.errors.APIError as exc:
        raise registry.explain(str(exc.explanation or exc), info, username)
    return {"username": username, "password": password}


def _push_image(config: Config, client, api: registry.RegistryClient, info: registry.RegistryInfo,
                image: ImageArtifact, path: str, local, auth_config: dict[str, str] | None) -> ImagePush:
    repository = f"{info.address}/{path}"
    reference = f"{repository}:{image.tag}"
    with step(f"Pushing {reference}") as progress:
        served = api.manifest_digest(path, image.tag)
        repo_digests = local.attrs.get("RepoDigests", [])
        names = {repository, registry.familiar_name(repository)}  # the engine files Docker Hub's under short names
        known = {entry.split("@", 1)[1] for entry in repo_digests if entry.split("@", 1)[0] in names}
        if served and served in known:
            progress.done("already in the registry")
            image.repository, image.digest = repository, served
            return ImagePush(image.role, reference, served, skipped=True)
        local.tag(repository, image.tag)
        sent, attempts = _push_with_retries(
            lambda: client.api.push(repository, image.tag, stream=True, decode=True, auth_config=auth_config),
            info, auth_config, config.registry.push_retries, progress.update,
        )
        served = api.manifest_digest(path, image.tag)
        if served != sent.digest:
            raise RegistryError(
                f"registry {info.address} serves {served or 'nothing'} for {path}:{image.tag}, "
                f"but the push reported {sent.digest or 'no digest'}",
                "push again; if it persists, something else writes to that tag")
        progress.done(f"{sent.digest} ({sent.layers_pushed} new layers, {sent.bytes_pushed / 1e6:.1f} MB)")
        image.repository, image.digest = repository, served
        return ImagePush(image.role, reference, served, skipped=False, stream=sent, attempts=attempts)


def _push_with_retries(start: Callable[[], Iterable[dict[str, Any]]], info: registry.RegistryInfo,
                       auth_config: dict[str, str] | None, retries: int,
                       on_line: Callable[[str], None]) -> tuple[StreamResult, int]:
    """Run a push up to 1 + retries times while it fails transiently, backing off 1 s, 2 s, 4 s... (max 8 s)."""
    import docker.errors
    import requests.exceptions

    username = auth_config["username"] if auth_config else None
    attempts = 1 + max(retries, 0)
    for attempt in range(1, attempts + 1):
        try:
            try:
                return read_push_stream(start(), info, username, on_line), attempt
            except docker.errors.APIError as exc:
                error = registry.explain(str(exc.explanation or exc), info, username)
                server_side = exc.status_code is not None and exc.status_code >= 500
                if server_side and not isinstance(error, registry.TransientRegistryError):
                    error = registry.TransientRegistryError(error.message, error.hint)
                raise error
            except requests.exceptions.RequestException as exc:
                raise registry.TransientRegistryError(f"the Docker engine connection failed during the push: {exc}",
                                                      "check the engine: invoke engine.status")
        except registry.TransientRegistryError as exc:
            if attempt == attempts:
                raise RegistryError(f"{exc.message} (gave up after {attempts} attempts)", exc.hint)
            delay = min(BACKOFF_SECONDS * 2 ** (attempt - 1), BACKOFF_LIMIT)
            on_line(f"attempt {attempt} failed ({exc.message}); retrying in {delay:.0f}s")
            time.sleep(delay)
    raise AssertionError("unreachable")


def read_push_stream(events: Iterable[dict[str, Any]], info: registry.RegistryInfo, username: str | None,
                     on_line: Callable[[str], None] = lambda line: None) -> StreamResult:
    """Read a decoded docker push stream to its end; raise the catalog error for an errorDetail item."""
    result = StreamResult()
    layer_sizes: dict[str, int] = {}
    for event in events:
        error = event.get("errorDetail") or ({"message": event["error"]} if event.get("error") else None)
        if error:
            raise registry.explain(str(error.get("message", error)), info, username)
        status = event.get("status", "")
        layer = event.get("id", "")
        total = (event.get("progressDetail") or {}).get("total")
        if layer and total:
            layer_sizes[layer] = total
        if status == "Pushed":
            result.layers_pushed += 1
            result.bytes_pushed += layer_sizes.get(layer, 0)
            on_line(f"{layer}: pushed")
        elif status == "Layer already exists" or status.startswith("Mounted from"):
            result.layers_existing += 1
        aux = event.get("aux") or {}
        if aux.get("Digest"):
            result.digest = aux["Digest"]
    if not result.digest:
        raise registry.TransientRegistryError(f"the push to {info.address} ended without a manifest digest",
                                              "retry; see the registry's log")
    return result
