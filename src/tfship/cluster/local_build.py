"""Building the local cluster's Kubernetes 1.20.2 binaries from Debian bookworm's SOURCE package, and the pause
image from the same source (LAB.md §4). Nothing here is downloadable as a binary on this kind of machine."""

from __future__ import annotations

import contextlib
import fcntl
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from tfship import bases, docker_client
from tfship.config import Config, cache_dir
from tfship.errors import KubernetesError
from tfship.host import apt, proc
from tfship.progress import Step, step

KUBERNETES_VERSION = "1.20.2"
SOURCE_PACKAGE = "kubernetes"
SOURCE_SUITE = "bookworm"
COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "kubectl")
BUILD_PACKAGES = ["golang-go", "rsync", "jq", "gcc", "libc6-dev", "dpkg-dev"]
APT_SOURCES_FILE = Path("/etc/apt/sources.list.d/tfship-bookworm-src.sources")
BUILD_TIMEOUT = 3600.0
# Named as the kubelet flag names it; built FROM scratch from the source's pause.c, never pulled.
PAUSE_IMAGE = "tfship/pause:3.4"


def kubernetes_home() -> Path:
    """Cache of the source package, its unpacked tree and the binaries built from it."""
    return cache_dir() / f"kubernetes-{KUBERNETES_VERSION}"


def source_tree() -> Path:
    return kubernetes_home() / "src"


def binaries_dir() -> Path:
    """Where `make` puts the binaries, and where local-up-cluster.sh -O looks for them."""
    return source_tree() / "_output" / "local" / "bin" / "linux" / "amd64"


def built_stamp() -> Path:
    return kubernetes_home() / ".built"


@contextlib.contextmanager
def exclusive(name: str) -> Iterator[None]:
    """One build or start at a time on this machine (several engineers' test runs share the cache)."""
    lock_path = kubernetes_home() / f".{name}.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def binaries_built() -> bool:
    return built_stamp().is_file() and all((binaries_dir() / name).is_file() for name in COMMANDS)


def ensure_binaries(config: Config) -> str:
    """Build the Kubernetes binaries from Debian's source package, unless the cache already holds them."""
    if binaries_built():
        return f"Kubernetes {KUBERNETES_VERSION} binaries cached in {binaries_dir()}"
    with exclusive("build"):
        if binaries_built():  # another run built them while we waited for the lock
            return f"Kubernetes {KUBERNETES_VERSION} binaries cached in {binaries_dir()}"
        with step(f"Building Kubernetes {KUBERNETES_VERSION} from Debian's source package (about 10 min)") as progress:
            apt.ensure_packages(BUILD_PACKAGES, error=KubernetesError, why="to build the local cluster")
            if not (source_tree() / "Makefile").is_file():
                _unpack_source(progress, download_source(progress, config))
            _make(progress)
            built_stamp().write_text(KUBERNETES_VERSION + "\n")
            progress.done(str(binaries_dir()))
    return f"Kubernetes {KUBERNETES_VERSION} binaries built in {binaries_dir()}"


def deb_src_entry(mirror: str) -> str:
    why = "Written by tfship: Debian's kubernetes SOURCE package builds the local cluster's binaries."
    return apt.source_entry(mirror, SOURCE_SUITE, why)


def download_source(progress: Step, config: Config) -> Path:
    """`apt-get source --download-only kubernetes` into the cache, from the configured Debian mirror
    (base.debian_mirror, else the host's apt sources); returns the orig tarball."""
    download = kubernetes_home() / "download"
    existing = sorted(download.glob(f"{SOURCE_PACKAGE}_*.orig.tar.*"))
    if existing:
        return existing[-1]
    if not apt.is_root():
        raise KubernetesError("building the local cluster needs root (apt sources, kubelet)",
                              "run as root, or use a cluster you have: kubernetes.provider: external")
    mirror = bases.debian_mirror(config)
    progress.update(f"deb-src entry for {SOURCE_SUITE} on {mirror} in {APT_SOURCES_FILE}")
    apt.write_source(APT_SOURCES_FILE, deb_src_entry(mirror), error=KubernetesError)
    kubernetes_home().mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix="download.", dir=kubernetes_home()))
    progress.update("apt-get source --download-only kubernetes")
    try:
        apt.download_source(SOURCE_PACKAGE, SOURCE_SUITE, partial, error=KubernetesError,
                            hint=f"check that {APT_SOURCES_FILE} names a reachable mirror")
        shutil.rmtree(download, ignore_errors=True)
        partial.rename(download)  # only a complete download gets the final name
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    found = sorted(download.glob(f"{SOURCE_PACKAGE}_*.orig.tar.*"))
    if not found:
        raise KubernetesError(f"apt-get source left no orig tarball in {download}", "remove that folder and retry")
    return found[-1]


def _unpack_source(progress: Step, tarball: Path) -> None:
    progress.update(f"unpacking {tarball.name}")
    partial = Path(tempfile.mkdtemp(prefix="unpack.", dir=kubernetes_home()))
    try:
        proc.run(["tar", "-xf", tarball, "-C", partial], timeout=600, error=KubernetesError)
        tops = [p for p in partial.iterdir() if p.is_dir()]
        if len(tops) != 1 or not (tops[0] / "Makefile").is_file():
            raise KubernetesError(f"{tarball} does not hold one Kubernetes source tree", "remove it and retry")
        shutil.rmtree(source_tree(), ignore_errors=True)
        tops[0].rename(source_tree())
    finally:
        shutil.rmtree(partial, ignore_errors=True)


class BuildProgress:
    """Turns `make GOFLAGS=-v` output into live lines: the build's own milestones, and a count of compiled Go
    packages every `every` packages (thousands of them, so a silent 10-minute build shows it moves)."""

    def __init__(self, progress: Step, every: int = 200):
        self.progress = progress
        self.every = every
        self.packages = 0

    def __call__(self, line: str) -> None:
        if line.startswith(("+++", "!!!", "make:")):
            self.progress.update(line)
        elif line and not line.startswith(" ") and "/" in line and " " not in line.strip():
            self.packages += 1  # go -v prints one import path per compiled package
            if self.packages % self.every == 0:
                self.progress.update(f"compiled {self.packages} Go packages")


def _make(progress: Step) -> None:
    what = " ".join(f"cmd/{name}" for name in COMMANDS)
    progress.update(f"make WHAT=\"{what}\" in {source_tree()}")
    proc.run(
        ["make", f"WHAT={what}", "GOFLAGS=-v"],
        cwd=source_tree(),
        on_line=BuildProgress(progress),
        timeout=BUILD_TIMEOUT,  # fires on this streamed command too: a hung build stops, with its compilers
        error=KubernetesError,
        hint=f"see the output above; rerun to continue the build in {source_tree()}",
    )


def ensure_pause_image() -> str:
    """Build the pause image from the source's pause.c (gcc -Os -static, FROM scratch), unless it exists."""
    if docker_client.image_id(PAUSE_IMAGE) is not None:
        return f"{PAUSE_IMAGE} present"
    apt.ensure_packages(["gcc", "libc6-dev"], error=KubernetesError, why="to build the pause image")
    with step(f"Building the pause image {PAUSE_IMAGE}") as progress, tempfile.TemporaryDirectory() as context:
        source = source_tree() / "build" / "pause" / "linux" / "pause.c"
        proc.run(
            ["gcc", "-Os", "-Wall", "-Werror", "-static", "-DVERSION=v3.4-tfship", "-o", Path(context) / "pause",
             source],
            timeout=120, error=KubernetesError, hint=f"check that {source} exists (rerun cluster.up)",
        )
        dockerfile = Path(context) / "Dockerfile"
        dockerfile.write_text('FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n')
        image = docker_client.build_image(PAUSE_IMAGE, dockerfile, {"pause": Path(context) / "pause"}, {},
                                          progress.update)
        progress.done(image[:19])
    return f"{PAUSE_IMAGE} built"
