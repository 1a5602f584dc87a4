"""A thin adapter over docker-py: one place that opens the engine and maps its errors to DockerError.

docker-py raises its own exceptions (and requests' ones when the socket is gone) and reports build and pull
failures inside the JSON stream instead of raising. Everything here turns those into one-line DockerErrors.
"""

from __future__ import annotations

import contextlib
import functools
import os
import tarfile
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import docker
import docker.errors
import requests

from tfship.errors import ConfigError, DockerError

ENGINE_HINT = "start the engine with: invoke engine.up"


@functools.lru_cache(maxsize=None)
def api(timeout: int = 600) -> docker.APIClient:
    """The low-level client (builds, imports, pulls stream through it)."""
    try:
        client = docker.APIClient(base_url=_base_url(), timeout=timeout, version="auto")
    except docker.errors.DockerException as exc:
        raise DockerError(f"cannot reach the Docker engine: {_first_line(exc)}", ENGINE_HINT) from None
    return client


def engine(timeout: int = 600) -> docker.DockerClient:
    """The high-level client, checked with a ping: a DockerError when no engine answers."""
    try:
        client = docker.DockerClient(base_url=_base_url(), timeout=timeout, version="auto")
        client.ping()
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise DockerError(f"no Docker engine answers: {_first_line(exc)}", ENGINE_HINT) from None
    return client


def _base_url() -> str:
    return os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")


@contextlib.contextmanager
def errors(what: str, hint: str | None = None) -> Iterator[None]:
    """Map any docker-py or connection error raised inside to a DockerError saying `what` failed."""
    try:
        yield
    except DockerError:
        raise
    except docker.errors.ImageNotFound as exc:
        raise DockerError(f"{what}: image not found ({_first_line(exc)})", hint or "build it first: invoke build") from None
    except docker.errors.APIError as exc:
        raise DockerError(f"{what}: {_explanation(exc)}", hint) from None
    except (requests.exceptions.ConnectionError, docker.errors.DockerException) as exc:
        raise DockerError(f"{what}: the Docker engine does not answer ({_first_line(exc)})", ENGINE_HINT) from None
    except requests.exceptions.ReadTimeout:
        raise DockerError(f"{what}: the Docker engine did not answer in time", hint) from None


def _explanation(exc: docker.errors.APIError) -> str:
    return _first_line(exc.explanation or exc)


def _first_line(value: Any) -> str:
    text = str(value).strip()
    return text.splitlines()[0] if text else type(value).__name__


def image_id(ref: str) -> str | None:
    """The local image id of `ref`, or None when the engine has no such image."""
    with errors(f"inspecting image {ref}"):
        try:
            return api().inspect_image(ref)["Id"]
        except docker.errors.ImageNotFound:
            return None


def inspect_image(ref: str) -> dict:
    with errors(f"inspecting image {ref}"):
        return api().inspect_image(ref)


def remove_image(ref: str) -> None:
    """Untag/remove `ref`; a missing image is fine (nothing half-done is left either way)."""
    with errors(f"removing image {ref}"):
        try:
            api().remove_image(ref, noprune=False)
        except docker.errors.ImageNotFound:
            pass


def tag_image(source: str, ref: str) -> None:
    """Give the image `source` names the reference `ref` too."""
    repository, tag = ref.rsplit(":", 1)
    with errors(f"tagging {source} as {ref}"):
        api().tag(source, repository, tag)


def follow_stream(stream: Iterable[dict], what: str, on_line: Callable[[str], None]) -> list[dict]:
    """Read a decoded build/pull/import stream to its end; an errorDetail item raises DockerError.

    docker-py does not raise on these: the engine reports the failure as an item in the stream.
    """
    items: list[dict] = []
    with errors(what):
        for item in stream:
            items.append(item)
            if "errorDetail" in item or "error" in item:
                detail = item.get("errorDetail", {}).get("message") or item.get("error") or "unknown error"
                raise DockerError(f"{what} failed: {_first_line(detail)}", "see the build output above")
            text = item.get("stream") or item.get("status") or ""
            for line in str(text).splitlines():
                if line.strip():
                    on_line(line)
    return items


# Context files get a fixed mtime and owner, so identical inputs give identical layers (and registry dedup).
CONTEXT_MTIME = 1
# Never part of a build context: bytecode, and the templates tfship ships (images do not need them).
SKIPPED = frozenset({"__pycache__", "_data"})


def _host_built(name: str) -> bool:
    """The server's C++ gRPC front as built on this host, for its Python (or half-built): images build their own."""
    return name.endswith(".so") and name.startswith(("_grpc_front.", ".front-"))


def build_image(
    ref: str,
    dockerfile: Path,
    files: Mapping[str, Path],
    buildargs: Mapping[str, str],
    on_line: Callable[[str], None],
    labels: Mapping[str, str] | None = None,
    nocache: bool = False,
) -> str:
    """Build `ref` (legacy builder) from `dockerfile` and a context of `files` (name in context -> host path, a
    folder is added recursively); return the image id. The context is a temporary tar deleted afterwards, so
    build-only files (a CA bundle) are never left on disk in the project."""
    handle = tempfile.NamedTemporaryFile(prefix="tfship-context-", suffix=".tar", delete=False)
    try:
        with handle, tarfile.open(fileobj=handle, mode="w", dereference=True) as tar:
            _add_file(tar, "Dockerfile", dockerfile)
            for name, path in sorted(files.items()):
                for entry, source in context_entries(name, path):
                    if source.is_dir():
                        _add_entry(tar, entry, source)
                    else:
                        _add_file(tar, entry, source)
        with open(handle.name, "rb") as context, errors(f"building {ref}"):
            stream = api().build(
                fileobj=context, custom_context=True, tag=ref, rm=True, forcerm=True, decode=True,
                buildargs=dict(buildargs), labels=dict(labels or {}), nocache=nocache,
            )
            follow_stream(stream, f"building {ref}", on_line)
    finally:
        os.unlink(handle.name)
    found = image_id(ref)
    if found is None:
        raise DockerError(f"building {ref} finished without an image", "see the build output above")
    return found


def context_entries(name: str, path: Path) -> Iterator[tuple[str, Path]]:
    """(name in the build context, host path) of `path` and, for a folder, everything under it in name order,
    without Python caches. Content tags hash exactly these entries, and build contexts hold exactly these."""
    if not path.exists():
        raise ConfigError(f"build input {path} does not exist", "restore it from git (or re-export the model)")
    yield name, path
    if path.is_dir():
        for child in sorted(path.iterdir()):
            if child.name in SKIPPED or child.suffix == ".pyc" or _host_built(child.name):
                continue
            yield from context_entries(f"{name}/{child.name}", child)


def _add_file(tar: tarfile.TarFile, name: str, path: Path) -> None:
    info = _add_entry(tar, name, path)
    with open(path, "rb") as data:
        tar.addfile(info, data)


def _add_entry(tar: tarfile.TarFile, name: str, path: Path) -> tarfile.TarInfo:
    info = tar.gettarinfo(str(path), arcname=name)
    info.mtime, info.uid, info.gid, info.uname, info.gname = CONTEXT_MTIME, 0, 0, "", ""
    info.mode |= 0o555 if info.isdir() else 0o444  # readable by the image's non-root user
    if info.isdir():
        tar.addfile(info)
    return info
