"""Base images: the upstream ones where they can be pulled, else built locally from the Debian mirror.

`base.source` says which: `upstream` (python:3.11-slim, tensorflow/serving), `debian` (debootstrap from the apt
mirror, imported as an image, then Debian's python3 on top; LAB.md §2) or `auto` (try an upstream pull with a
short timeout, fall back to debian, and say which it picked). Locally built bases are named by a hash of their
inputs, so an existing image means there is nothing to do.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tfship import docker_client, resources
from tfship.config import Config, cache_dir
from tfship.errors import ConfigError, DockerError
from tfship.host import apt, proc
from tfship.progress import say, step

# Bump when the recipe below changes in a way the inputs do not show.
RECIPE_VERSION = "1"
DEBIAN_BASE_NAME = "tfship-base-debian"
PYTHON_BASE_NAME = "tfship-base-python"
DOCKERFILES = resources.template_dir("dockerfiles")
PYTHON_BASE_DOCKERFILE = DOCKERFILES / "Dockerfile.base-python"
APT_SOURCES = apt.SOURCE_LOCATIONS
# How long `auto` remembers that an upstream image could not be pulled (keeps a no-op build fast offline).
PULL_MEMO_SECONDS = 3600


@dataclass(frozen=True)
class PythonBase:
    ref: str  # image reference to build FROM
    source: str  # "upstream" or "debian"


# --------------------------------------------------------------------------------------------------------------
# Choosing


def python_base(config: Config) -> PythonBase:
    """The Python 3.11 base image to build FROM, building the Debian one if that is the source (idempotent)."""
    source = pick_source(config)
    if source == "upstream":
        ensure_upstream(config.base.python_image, config)
        return PythonBase(config.base.python_image, "upstream")
    return PythonBase(ensure_debian_python(config), "debian")


def pick_source(config: Config) -> str:
    """`upstream` or `debian` for this machine; `auto` says which it picked and why."""
    if config.base.source != "auto":
        return config.base.source
    image = config.base.python_image
    if can_pull(image, config):
        say_once(f"base.source auto: using upstream {image}")
        return "upstream"
    say_once(f"base.source auto: {image} cannot be pulled here; using a Debian {config.base.debian_suite} base "
             "built locally")
    return "debian"


_said: set[str] = set()


def say_once(text: str) -> None:
    """Say a choice once per process, however many images ask for it."""
    if text not in _said:
        _said.add(text)
        say(text)


def can_pull(ref: str, config: Config) -> bool:
    """True when `ref` is present locally or a pull finishes within base.pull_timeout.

    A failed attempt is remembered for an hour, so repeated builds on an offline machine do not wait each time.
    """
    if docker_client.image_id(ref) is not None:
        return True
    memo_path = cache_dir() / "pull-failures.json"
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    if time.time() - memo.get(ref, 0) < PULL_MEMO_SECONDS:
        return False
    try:
        pull(ref, timeout=config.base.pull_timeout)
        return True
    except DockerError:
        memo[ref] = time.time()
        memo_path.parent.mkdir(parents=True, exist_ok=True)
        memo_path.write_text(json.dumps(memo))
        return False


def pull(ref: str, *, timeout: int) -> None:
    repository, _, tag = ref.rpartition(":") if ":" in ref.split("/")[-1] else (ref, "", "latest")
    client = docker_client.api(timeout=timeout)
    with step(f"Pulling {ref}") as progress:
        with docker_client.errors(f"pulling {ref}", "check the network, or set base.source: debian"):
            stream = client.pull(repository, tag=tag, stream=True, decode=True)
            docker_client.follow_stream(stream, f"pulling {ref}", lambda line: None)
        progress.done("pulled")


def ensure_upstream(ref: str, config: Config,
                    hint: str = "set base.source: debian (or auto) to build bases locally from the Debian mirror") -> str:
    """The id of upstream image `ref`, pulling it if missing; a clear error where it cannot be pulled."""
    found = docker_client.image_id(ref)
    if found is not None:
        return found
    try:
        pull(ref, timeout=max(config.base.pull_timeout, 300))
    except DockerError as exc:
        raise DockerError(f"cannot pull upstream base {ref}: {exc.message}", hint) from None
    return docker_client.image_id(ref) or ref


# --------------------------------------------------------------------------------------------------------------
# Debian bases


def debian_mirror(config: Config) -> str:
    """base.debian_mirror, else the first Debian mirror in the host's apt sources that serves the suite."""
    if config.base.debian_mirror:
        return config.base.debian_mirror.rstrip("/")
    for uri, suites in apt.sources(APT_SOURCES):
        if config.base.debian_suite in suites:
            return uri.rstrip("/")
    raise ConfigError(
        f"no apt source on this machine serves Debian {config.base.debian_suite}",
        "set base.debian_mirror to a Debian mirror URL (e.g. http://deb.debian.org/debian)",
    )


def debian_base_ref(config: Config) -> str:
    inputs = {"recipe": RECIPE_VERSION, "suite": config.base.debian_suite, "mirror": debian_mirror(config),
              "variant": "minbase"}
    return f"{DEBIAN_BASE_NAME}:{config.base.debian_suite}-{_short_hash(inputs)}"


def ensure_debian_base(config: Config) -> str:
    """A minbase Debian image from debootstrap, imported into the engine; returns its reference.

    The debootstrap tarball is cached under the cache dir, so a removed image is re-imported without downloading.
    """
    ref = debian_base_ref(config)
    if docker_client.image_id(ref) is not None:
        return ref
    suite, mirror = config.base.debian_suite, debian_mirror(config)
    tarball = cache_dir() / "bases" / f"{ref.replace(':', '-')}.tar"
    with step(f"Building base image {ref} (debootstrap {suite} from {mirror})") as progress:
        if not tarball.is_file():
            _debootstrap_tarball(suite, mirror, tarball, progress)
        progress.update(f"importing {tarball}")
        repository, _, tag = ref.partition(":")
        with docker_client.errors(f"importing {tarball} as {ref}", f"delete {tarball} and run again"):
            docker_client.api().import_image_from_file(str(tarball), repository=repository, tag=tag)
        if docker_client.image_id(ref) is None:
            raise DockerError(f"importing {tarball} did not create {ref}", f"delete {tarball} and run again")
        progress.done(ref)
    return ref


def _debootstrap_tarball(suite: str, mirror: str, tarball: Path, progress) -> None:
    if not apt.is_root():  # said first: installing debootstrap would not be enough
        raise DockerError("debootstrap needs root to build a Debian base", "run as root, or set base.source: upstream")
    if shutil.which("debootstrap") is None:
        progress.update("installing debootstrap")
        apt.ensure_packages(["debootstrap"], error=DockerError, why="to build a Debian base")
    tarball.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="debootstrap-", dir=tarball.parent))
    partial = tarball.with_suffix(".partial")
    try:
        root = work / "root"
        proc.run(["debootstrap", "--variant=minbase", suite, root, mirror], timeout=1800, error=DockerError,
                 on_line=_debootstrap_line(progress), hint=f"check that {mirror} serves {suite}")
        progress.update(f"packing {root}")
        proc.run(["tar", "-C", root, "--numeric-owner", "-cf", partial, "."], timeout=600, error=DockerError)
        os.replace(partial, tarball)  # only a complete tarball is ever cached
    finally:
        shutil.rmtree(work, ignore_errors=True)
        partial.unlink(missing_ok=True)


# debootstrap prints one line per package; keep the stage lines ("I: Unpacking required packages...").
_PER_PACKAGE_LINE = re.compile(r"^I: (Retrieving|Validating|Extracting|Unpacking|Configuring) [a-z0-9][^ ]*\.\.\.$")


def _debootstrap_line(progress):
    def on_line(line: str) -> None:
        if not _PER_PACKAGE_LINE.match(line.strip()):
            progress.update(line)
    return on_line


def debian_python_ref(config: Config) -> str:
    debian_ref = debian_base_ref(config)
    inputs = {"base": debian_ref, "dockerfile": PYTHON_BASE_DOCKERFILE.read_text()}
    return f"{PYTHON_BASE_NAME}:{config.base.debian_suite}-{_short_hash(inputs)}"


def ensure_debian_python(config: Config) -> str:
    """Debian's python3 + venv on the debootstrap base (needs only the plain-HTTP Debian mirror)."""
    ref = debian_python_ref(config)
    if docker_client.image_id(ref) is not None:
        return ref
    debian_ref = ensure_debian_base(config)
    with step(f"Building base image {ref} (Debian python3)") as progress:
        docker_client.build_image(ref, PYTHON_BASE_DOCKERFILE, {}, {"DEBIAN_BASE": debian_ref}, progress.update)
        progress.done(ref)
    return ref


def _short_hash(inputs: dict) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:12]
