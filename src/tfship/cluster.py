"""The Kubernetes cluster tfship deploys to (LAB.md §4).

Providers:
- `local`: a real single-node Kubernetes 1.20.2 on this machine. The binaries are built from Debian bookworm's
  `kubernetes` SOURCE package (no server binary is downloadable here) and cached under
  ~/.cache/tfship/kubernetes-1.20.2/; the cluster is started with the source's own `hack/local-up-cluster.sh`,
  on the Docker engine (dockershim), with a pause image built from the same source. Its kubeconfig context
  `tfship-local` lives under ~/.local/share/tfship/kubernetes/.
- `kind`: where `kind` is installed, a kind cluster wired to the local registry (kind-with-registry style).
- `external`: whatever cluster the configured (or current) kubectl context names; tfship only reads it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import yaml

from tfship import bases, kubectl, proc
from tfship.config import Config, cache_dir, state_dir
from tfship.engine import apt_install, ensure_engine
from tfship.errors import KubernetesError
from tfship.progress import Step, step

KUBERNETES_VERSION = "1.20.2"
SOURCE_PACKAGE = "kubernetes"
SOURCE_SUITE = "bookworm"
COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "kubectl")
BUILD_PACKAGES = ["golang-go", "rsync", "jq", "gcc", "libc6-dev", "dpkg-dev"]
RUN_PACKAGES = ["etcd-server", "golang-cfssl", "sudo", "socat", "conntrack", "iptables", "openssl"]
APT_SOURCES_FILE = Path("/etc/apt/sources.list.d/tfship-bookworm-src.sources")
BUILD_TIMEOUT = 3600.0
START_TIMEOUT = 300.0
READY_TIMEOUT = 180.0
STOP_TIMEOUT = 30.0

LOCAL_CONTEXT = "tfship-local"
# Named as the kubelet flag names it; built FROM scratch from the source's pause.c, never pulled.
PAUSE_IMAGE = "tfship/pause:3.4"
# Where local-up-cluster.sh writes its certificates and admin kubeconfig (its default CERT_DIR).
CERT_DIR = Path("/var/run/kubernetes")
# The control plane's ports; a cluster of ours holds them while it runs.
APISERVER_PORT = 6443
ETCD_PORT = 2379

# local-up-cluster.sh's default audits every request (megabytes a minute); keep the changes people make.
AUDIT_POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
rules:
- level: None
  verbs: [get, list, watch]
- level: None
  resources: [{group: coordination.k8s.io, resources: [leases]}]
- level: None
  users: [system:kube-controller-manager, system:kube-scheduler, system:apiserver, system:kube-proxy]
- level: None
  userGroups: [system:nodes]
- level: Metadata
"""

KIND_CLUSTER_NAME = "tfship"
KIND_REGISTRY_NAME = "tfship-kind-registry"


# --------------------------------------------------------------------------------------------------------------
# Paths


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


def local_state() -> Path:
    """The running local cluster's state: logs, etcd data, kubeconfig, the session id of its processes."""
    return state_dir() / "kubernetes"


def local_kubeconfig() -> Path:
    return local_state() / "kubeconfig"


def session_file() -> Path:
    return local_state() / "session.json"


def kubectl_binary(config: Config) -> str:
    """The kubectl built with the local cluster (no version skew), else the one on PATH."""
    if config.kubernetes.provider == "local":
        built = binaries_dir() / "kubectl"
        if not built.is_file():
            raise KubernetesError(
                f"the local cluster's kubectl is not built yet ({built} is missing)", "run: invoke cluster.up"
            )
        return str(built)
    found = proc.which("kubectl")
    if found is None:
        raise KubernetesError("kubectl is not on PATH", "install kubectl, or set kubernetes.provider: local")
    return found


def context_of(config: Config) -> str:
    """The kubeconfig context tfship talks to; empty means the kubeconfig's current context (external)."""
    if config.kubernetes.context:
        return config.kubernetes.context
    if config.kubernetes.provider == "local":
        return LOCAL_CONTEXT
    if config.kubernetes.provider == "kind":
        return f"kind-{KIND_CLUSTER_NAME}"
    return ""


def kubeconfig_of(config: Config) -> Path | None:
    """The local cluster's own kubeconfig; None means kubectl's default ($KUBECONFIG or ~/.kube/config)."""
    return local_kubeconfig() if config.kubernetes.provider == "local" else None


def target(config: Config) -> kubectl.Target:
    """The kubectl target of the configured cluster, resolved once."""
    return kubectl.Target(kubectl_binary(config), kubeconfig_of(config), context_of(config))


# --------------------------------------------------------------------------------------------------------------
# Building the binaries and the pause image


@contextlib.contextmanager
def _exclusive(name: str) -> Iterator[None]:
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


def ensure_binaries() -> str:
    """Build the Kubernetes binaries from Debian's source package, unless the cache already holds them."""
    if binaries_built():
        return f"Kubernetes {KUBERNETES_VERSION} binaries cached in {binaries_dir()}"
    with _exclusive("build"):
        if binaries_built():  # another run built them while we waited for the lock
            return f"Kubernetes {KUBERNETES_VERSION} binaries cached in {binaries_dir()}"
        with step(f"Building Kubernetes {KUBERNETES_VERSION} from Debian's source package (about 10 min)") as progress:
            apt_install(BUILD_PACKAGES, error=KubernetesError)
            if not (source_tree() / "Makefile").is_file():
                _unpack_source(progress, _download_source(progress))
            _make(progress)
            built_stamp().write_text(KUBERNETES_VERSION + "\n")
            progress.done(str(binaries_dir()))
    return f"Kubernetes {KUBERNETES_VERSION} binaries built in {binaries_dir()}"


def deb_src_entry(mirror: str) -> str:
    return (
        "# Written by tfship: Debian's kubernetes SOURCE package builds the local cluster's binaries.\n"
        "Types: deb-src\n"
        f"URIs: {mirror}\n"
        f"Suites: {SOURCE_SUITE}\n"
        "Components: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    )


def _download_source(progress: Step) -> Path:
    """`apt-get source --download-only kubernetes` into the cache; returns the orig tarball."""
    download = kubernetes_home() / "download"
    existing = sorted(download.glob(f"{SOURCE_PACKAGE}_*.orig.tar.*"))
    if existing:
        return existing[-1]
    if os.geteuid() != 0:
        raise KubernetesError("building the local cluster needs root (apt sources, kubelet)", "run as root")
    wanted = deb_src_entry(bases.debian_mirror(Config()))
    if not APT_SOURCES_FILE.is_file() or APT_SOURCES_FILE.read_text() != wanted:
        progress.update(f"adding a deb-src entry for {SOURCE_SUITE} in {APT_SOURCES_FILE}")
        APT_SOURCES_FILE.write_text(wanted)
        proc.run(["apt-get", "update", "-qq"], timeout=600, error=KubernetesError, hint="check the apt sources")
    kubernetes_home().mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix="download.", dir=kubernetes_home()))
    progress.update("apt-get source --download-only kubernetes")
    try:
        proc.run(
            ["apt-get", "source", "--download-only", f"{SOURCE_PACKAGE}/{SOURCE_SUITE}"],
            cwd=partial, timeout=900, error=KubernetesError,
            hint=f"check that {APT_SOURCES_FILE} names a reachable mirror",
        )
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
        timeout=BUILD_TIMEOUT,
        error=KubernetesError,
        hint=f"see the output above; rerun to continue the build in {source_tree()}",
    )


def ensure_pause_image() -> str:
    """Build the pause image from the source's pause.c (gcc -Os -static, FROM scratch), unless it exists."""
    import docker

    client = docker.from_env(timeout=60)
    try:
        try:
            client.images.get(PAUSE_IMAGE)
            return f"{PAUSE_IMAGE} present"
        except docker.errors.ImageNotFound:
            pass
        apt_install(["gcc", "libc6-dev"], error=KubernetesError)
        with step(f"Building the pause image {PAUSE_IMAGE}") as progress, tempfile.TemporaryDirectory() as context:
            source = source_tree() / "build" / "pause" / "linux" / "pause.c"
            proc.run(
                ["gcc", "-Os", "-Wall", "-Werror", "-static", "-DVERSION=v3.4-tfship", "-o",
                 Path(context) / "pause", source],
                timeout=120, error=KubernetesError, hint=f"check that {source} exists (rerun cluster.up)",
            )
            (Path(context) / "Dockerfile").write_text(
                'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n'
            )
            image, _ = client.images.build(path=context, tag=PAUSE_IMAGE, rm=True, forcerm=True)
            progress.done(image.short_id)
        return f"{PAUSE_IMAGE} built"
    finally:
        client.close()


# --------------------------------------------------------------------------------------------------------------
# The local cluster's processes


@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    session: int
    exe: str
    argv: tuple[str, ...]


def list_processes() -> list[ProcessInfo]:
    """Every process this user can see, read from /proc (vanishing ones are skipped)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            # Field 6 (session) comes after the command name, which may hold spaces: split after its ')'.
            session = int(stat[stat.rindex(")") + 2:].split()[3])
            argv = tuple(a for a in (entry / "cmdline").read_bytes().decode(errors="replace").split("\0") if a)
            try:
                exe = os.readlink(entry / "exe")
            except OSError:
                exe = ""
        except (OSError, ValueError, IndexError):
            continue
        found.append(ProcessInfo(int(entry.name), session, exe, argv))
    return found


def cluster_processes(
    processes: list[ProcessInfo], *, session: int | None, bin_dirs: list[Path], etcd_dir: Path, own_pid: int
) -> list[int]:
    """The pids that belong to the local cluster: any process running one of our built binaries, the etcd
    serving our data dir, and the rest of the session local-up-cluster.sh started them in (sudo wrappers).
    The recorded session counts only while one of those still lives in it: a stale id may have been reused."""
    prefixes = tuple(str(folder).rstrip("/") + "/" for folder in bin_dirs)

    def runs_ours(info: ProcessInfo) -> bool:
        if info.exe.startswith(prefixes) or any(a.startswith(prefixes) for a in info.argv[:3]):
            return True
        return bool(info.argv) and Path(info.argv[0]).name == "etcd" and _flag_value(info.argv, "--data-dir") == str(etcd_dir)

    candidates = [p for p in processes if p.pid not in (own_pid, 1)]
    ours = {p.pid for p in candidates if runs_ours(p)}
    if session and any(p.session == session for p in candidates if p.pid in ours):
        ours |= {p.pid for p in candidates if p.session == session}
    return sorted(ours)


def _flag_value(argv: tuple[str, ...], flag: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(flag + "="):
            return arg[len(flag) + 1:]
    return None


def _recorded_session() -> int | None:
    try:
        return int(json.loads(session_file().read_text())["session"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def running_pids() -> list[int]:
    return cluster_processes(
        list_processes(),
        session=_recorded_session(),
        # local-up-cluster.sh starts them through the _output/bin symlink; /proc/PID/exe shows the real folder.
        bin_dirs=[binaries_dir(), source_tree() / "_output" / "bin"],
        etcd_dir=local_state() / "etcd",
        own_pid=os.getpid(),
    )


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _wait_gone(deadline: float) -> list[int]:
    while True:
        left = running_pids()
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.5)


def stop_local() -> str:
    """Stop every process of the local cluster, remove its pod containers and its state. Nothing stays running."""
    stopped = running_pids()
    _signal_all(stopped, signal.SIGTERM)
    left = _wait_gone(time.monotonic() + STOP_TIMEOUT)
    if left:
        _signal_all(left, signal.SIGKILL)
        left = _wait_gone(time.monotonic() + 10)
    if left:
        raise KubernetesError(
            f"processes {', '.join(map(str, left))} of the local cluster survived SIGKILL", "look at them with ps"
        )
    removed = remove_pod_containers()
    if stopped and (binaries_dir() / "kube-proxy").is_file():
        # Services' iptables rules (KUBE-* chains) would outlive kube-proxy; its own clean-up removes only those.
        proc.run([binaries_dir() / "kube-proxy", "--cleanup"], check=False, timeout=60)
    for leftover in (local_state() / "etcd", local_kubeconfig(), session_file()):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
    return f"stopped {len(stopped)} processes, removed {removed} pod containers"


def remove_pod_containers() -> int:
    """Remove the containers the kubelet created (dockershim names them k8s_*), running or not."""
    import docker

    try:
        client = docker.from_env(timeout=60)
    except docker.errors.DockerException:
        return 0  # no engine, no containers
    try:
        removed = 0
        for container in client.containers.list(all=True, filters={"name": "k8s_"}):
            if not container.name.startswith("k8s_") or "io.kubernetes.docker.type" not in container.labels:
                continue
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)
                removed += 1
        return removed
    finally:
        client.close()


# --------------------------------------------------------------------------------------------------------------
# Starting the local cluster


def local_up_environment(log_dir: Path, etcd_dir: Path, audit_policy: Path) -> dict[str, str]:
    """The environment hack/local-up-cluster.sh runs with (LAB.md §4)."""
    kubelet_flags = [
        f"--pod-infra-container-image={PAUSE_IMAGE}",
        "--fail-swap-on=false",
        # The Docker engine is shared: the kubelet must never garbage-collect other people's images.
        "--image-gc-high-threshold=100",
        "--image-gc-low-threshold=99",
    ]
    return {
        "ENABLE_DAEMON": "true",
        "KUBE_ENABLE_CLUSTER_DNS": "false",
        "LOG_DIR": str(log_dir),
        "ETCD_DIR": str(etcd_dir),
        "AUDIT_POLICY_FILE": str(audit_policy),
        "KUBELET_FLAGS": " ".join(kubelet_flags),
        # Evict only when the disk is really full: the engine also holds large images being built.
        "EVICTION_HARD": "memory.available<100Mi,nodefs.available<2%,nodefs.inodesFree<2%,imagefs.available<2%",
        "TERM": "dumb",  # its colour output calls tput
    }


def _ports_in_use() -> list[int]:
    import socket

    held = []
    for port in (APISERVER_PORT, ETCD_PORT):
        with socket.socket() as probe:
            probe.settimeout(1)
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                held.append(port)
    return held


def start_local(config: Config) -> str:
    with step("Starting the local Kubernetes cluster (hack/local-up-cluster.sh)") as progress:
        apt_install(RUN_PACKAGES, error=KubernetesError)
        if running_pids():
            progress.update("stopping what is left of an earlier local cluster")
            stop_local()
        held = _ports_in_use()
        if held:
            raise KubernetesError(
                f"ports {', '.join(map(str, held))} on 127.0.0.1 are taken by something that is not tfship's cluster",
                "stop that apiserver/etcd, or use kubernetes.provider: external with its context",
            )
        state = local_state()
        (state / "logs").mkdir(parents=True, exist_ok=True)
        etcd_dir = state / "etcd"
        etcd_dir.mkdir(exist_ok=True)
        log_path = state / "logs" / "local-up-cluster.log"
        audit_policy = state / "audit-policy.yaml"
        audit_policy.write_text(AUDIT_POLICY)
        (state / "logs" / "kube-apiserver-audit.log").unlink(missing_ok=True)  # the apiserver appends to it
        # Its own session: the cluster outlives this command, and the session id finds its processes again.
        script = proc.start_detached(["hack/local-up-cluster.sh", "-O"], log_path, cwd=source_tree(),
                                     env=local_up_environment(state / "logs", etcd_dir, audit_policy),
                                     truncate_log=True)
        session_file().write_text(json.dumps({"session": script.pid, "started": time.time()}))
        try:
            _follow_script(script, log_path, progress)
            write_local_kubeconfig(config)
            wait_node_ready(config, progress, READY_TIMEOUT)
        except BaseException:
            progress.update("start failed: stopping what was started")
            with contextlib.suppress(KubernetesError):
                stop_local()
            raise
        progress.done("node Ready")
    return f"local Kubernetes {KUBERNETES_VERSION} is Ready (context {LOCAL_CONTEXT}, logs in {state / 'logs'})"


def _follow_script(script: subprocess.Popen, log_path: Path, progress: Step) -> None:
    """Show the script's own progress lines while waiting (bounded) for it to return."""
    deadline = time.monotonic() + START_TIMEOUT
    shown = 0
    while True:
        finished = script.poll() is not None
        lines = log_path.read_text(errors="replace").splitlines()
        for line in lines[shown:]:
            if line.startswith(("Starting", "Waiting", "Local Kubernetes", "kubelet (", "!!!", "etcd", "The kubelet")):
                progress.update(line)
        shown = len(lines)
        if finished:
            break
        if time.monotonic() > deadline:
            raise KubernetesError(
                f"local-up-cluster.sh did not return within {START_TIMEOUT:.0f}s", f"see {log_path}"
            )
        time.sleep(1)
    if script.returncode != 0:
        tail = " | ".join(line.strip() for line in lines[-4:] if line.strip())
        raise KubernetesError(
            f"local-up-cluster.sh failed with exit code {script.returncode}: {tail}", f"see {log_path}"
        )


def write_local_kubeconfig(config: Config) -> Path:
    """A self-contained kubeconfig (certificates inlined) whose one context is `tfship-local`."""
    admin = CERT_DIR / "admin.kubeconfig"
    if not admin.is_file():
        raise KubernetesError(f"local-up-cluster.sh wrote no {admin}", f"see {local_state() / 'logs'}")
    flat = proc.run(
        [binaries_dir() / "kubectl", "--kubeconfig", admin, "config", "view", "--flatten", "--minify", "-o", "json"],
        timeout=30, error=KubernetesError,
    )
    target = local_kubeconfig()
    partial = target.with_suffix(".partial")
    partial.touch(mode=0o600)
    partial.write_text(yaml.safe_dump(rename_kubeconfig(json.loads(flat.stdout), LOCAL_CONTEXT)))
    partial.rename(target)
    return target


def rename_kubeconfig(kubeconfig: dict, name: str) -> dict:
    """Give a single-context kubeconfig's cluster, user and context our own names, and make it current."""
    cluster = kubeconfig["clusters"][0]["cluster"]
    user = kubeconfig["users"][0]["user"]
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": cluster}],
        "users": [{"name": f"{name}-admin", "user": user}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": f"{name}-admin"}}],
        "current-context": name,
        "preferences": {},
    }


# --------------------------------------------------------------------------------------------------------------
# Status


@dataclass
class NodeState:
    name: str
    ready: bool
    version: str
    reason: str = ""


@dataclass
class ClusterStatus:
    provider: str
    context: str
    server: str
    nodes: list[NodeState]

    @property
    def ready(self) -> bool:
        return any(node.ready for node in self.nodes)

    def describe(self) -> str:
        lines = [f"{self.provider} cluster at {self.server} (context {self.context or 'current'})"]
        for node in self.nodes:
            state = "Ready" if node.ready else f"NotReady ({node.reason or 'no reason given'})"
            lines.append(f"  node {node.name}: {state}, kubelet {node.version}")
        if not self.nodes:
            lines.append("  no nodes registered yet")
        return "\n".join(lines)


def parse_nodes(nodes_json: dict) -> list[NodeState]:
    """`kubectl get nodes -o json` to the Ready state of each node."""
    states = []
    for item in nodes_json.get("items", []):
        ready = next((c for c in item.get("status", {}).get("conditions", []) if c.get("type") == "Ready"), {})
        states.append(
            NodeState(
                name=item["metadata"]["name"],
                ready=ready.get("status") == "True",
                version=item.get("status", {}).get("nodeInfo", {}).get("kubeletVersion", "?"),
                reason=ready.get("message", "") if ready.get("status") != "True" else "",
            )
        )
    return states


def status(config: Config) -> ClusterStatus:
    """Ask the configured cluster for its nodes; a KubernetesError says why it does not answer."""
    if config.kubernetes.provider == "local" and not local_kubeconfig().is_file():
        raise KubernetesError("the local cluster is not running", "run: invoke cluster.up")
    kube = target(config)
    nodes = kube.run("get", "nodes", "-o", "json", "--request-timeout=10s", timeout=30, check=False)
    if nodes.returncode != 0:
        said = [line.strip() for line in (nodes.stderr or nodes.stdout).splitlines() if line.strip()]
        raise KubernetesError(
            f"the cluster of context {context_of(config) or '(current)'} does not answer: "
            f"{said[-1] if said else 'kubectl exited with ' + str(nodes.returncode)}",
            "run: invoke cluster.up" if config.kubernetes.provider != "external"
            else "set kubernetes.context in tfship.yaml, or check: kubectl config current-context",
        )
    server = kube.run("config", "view", "--minify", "-o", "jsonpath={.clusters[0].cluster.server}", timeout=30)
    return ClusterStatus(
        provider=config.kubernetes.provider,
        context=context_of(config),
        server=server.stdout.strip() or "?",
        nodes=parse_nodes(json.loads(nodes.stdout)),
    )


def is_ready(config: Config) -> bool:
    try:
        return status(config).ready
    except KubernetesError:
        return False


def wait_node_ready(config: Config, progress: Step, timeout: float) -> ClusterStatus:
    deadline = time.monotonic() + timeout
    last = "the apiserver did not answer"
    while time.monotonic() < deadline:
        try:
            current = status(config)
            if current.ready:
                return current
            last = current.describe().replace("\n", ";")
        except KubernetesError as error:
            last = error.message
        time.sleep(2)
    raise KubernetesError(
        f"no node became Ready within {timeout:.0f}s: {last}", f"see {local_state() / 'logs' / 'kubelet.log'}"
    )


# --------------------------------------------------------------------------------------------------------------
# kind


def kind_create_commands(registry_url: str, name: str = KIND_CLUSTER_NAME) -> tuple[list[str], str]:
    """The `kind create cluster` argv and its config (stdin), wired to the local registry the way
    kind-with-registry.sh does it: containerd on the node maps `registry_url` to the registry container."""
    host, _, port = registry_url.rpartition(":")
    node_config = {
        "kind": "Cluster",
        "apiVersion": "kind.x-k8s.io/v1alpha4",
        "containerdConfigPatches": [
            f'[plugins."io.containerd.grpc.v1.cri".registry.mirrors."{registry_url}"]\n'
            f'  endpoint = ["http://{KIND_REGISTRY_NAME}:{port or "5000"}"]\n'
        ],
    }
    return ["kind", "create", "cluster", "--name", name, "--config", "-"], yaml.safe_dump(node_config)


def kind_up(config: Config) -> str:
    if proc.which("kind") is None:
        raise KubernetesError("kubernetes.provider is kind but kind is not on PATH", "install kind, or use provider local")
    clusters = proc.run(["kind", "get", "clusters"], timeout=60, error=KubernetesError).stdout.split()
    if KIND_CLUSTER_NAME in clusters:
        return f"kind cluster {KIND_CLUSTER_NAME} already exists (context kind-{KIND_CLUSTER_NAME})"
    argv, node_config = kind_create_commands(config.registry.url)
    with step(f"Creating kind cluster {KIND_CLUSTER_NAME}") as progress:
        proc.run(argv, input=node_config, timeout=600, on_line=progress.update, error=KubernetesError,
                 hint="see kind's output above")
        # The node reaches the registry container by name on kind's network (kind-with-registry.sh).
        proc.run(["docker", "network", "connect", "kind", KIND_REGISTRY_NAME], check=False, timeout=60)
    return f"kind cluster {KIND_CLUSTER_NAME} created (context kind-{KIND_CLUSTER_NAME})"


def kind_down() -> str:
    if proc.which("kind") is None:
        return "kind is not installed: nothing to delete"
    proc.run(["kind", "delete", "cluster", "--name", KIND_CLUSTER_NAME], timeout=300, error=KubernetesError)
    return f"kind cluster {KIND_CLUSTER_NAME} deleted"


# --------------------------------------------------------------------------------------------------------------
# The tasks' entry points


def up(config: Config) -> str:
    """Make the configured cluster answer with a Ready node; a quick no-op when it already does."""
    provider = config.kubernetes.provider
    if provider == "external":
        current = status(config)
        if not current.ready:
            raise KubernetesError(f"no Ready node in context {context_of(config) or 'current'}", current.describe())
        return "external cluster is Ready; tfship does not manage it\n" + current.describe()
    if provider == "kind":
        return kind_up(config)
    if is_ready(config):
        return f"local Kubernetes {KUBERNETES_VERSION} already Ready (context {LOCAL_CONTEXT}); left as it is"
    ensure_engine(config)
    ensure_binaries()
    ensure_pause_image()
    with _exclusive("up"):
        if is_ready(config):  # another run started it while we waited
            return f"local Kubernetes {KUBERNETES_VERSION} already Ready (context {LOCAL_CONTEXT})"
        return start_local(config)


def down(config: Config) -> str:
    provider = config.kubernetes.provider
    if provider == "external":
        raise KubernetesError("kubernetes.provider is external: tfship does not stop clusters it did not start",
                              "stop it with its own tools")
    if provider == "kind":
        return kind_down()
    with _exclusive("up"):
        return "local cluster: " + stop_local()
