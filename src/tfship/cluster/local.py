"""The local cluster's processes: started with the Kubernetes source's own hack/local-up-cluster.sh on the Docker
engine (dockershim), found again through the process table, stopped leaving nothing running; and its kubeconfig,
context `tfship-local`, under ~/.local/share/tfship/kubernetes/ (LAB.md §4)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import yaml

from tfship import docker_client, engine
from tfship.cluster import local_build
from tfship.cluster.local_build import KUBERNETES_VERSION, PAUSE_IMAGE, binaries_dir, source_tree
from tfship.cluster.provider import Provider
from tfship.cluster.status import ClusterStatus, NodeState, wait_ready
from tfship.config import state_dir
from tfship.errors import DockerError, KubernetesError
from tfship.host import apt, proc, processes
from tfship.host.processes import ProcessInfo
from tfship.kubectl import Target
from tfship.progress import Step, step

RUN_PACKAGES = ["etcd-server", "golang-cfssl", "sudo", "socat", "conntrack", "iptables", "openssl"]
START_TIMEOUT = 300.0
READY_TIMEOUT = 180.0
STOP_TIMEOUT = 30.0

LOCAL_CONTEXT = "tfship-local"
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


# --------------------------------------------------------------------------------------------------------------
# Paths


def local_state() -> Path:
    """The running local cluster's state: logs, etcd data, kubeconfig, the session id of its processes."""
    return state_dir() / "kubernetes"


def local_kubeconfig() -> Path:
    return local_state() / "kubeconfig"


def session_file() -> Path:
    return local_state() / "session.json"


# --------------------------------------------------------------------------------------------------------------
# Finding and stopping its processes


def cluster_processes(
    found: list[ProcessInfo], *, session: int | None, bin_dirs: list[Path], etcd_dir: Path, own_pid: int
) -> list[int]:
    """The pids that belong to the local cluster: any process running one of our built binaries, the etcd
    serving our data dir, and the rest of the session local-up-cluster.sh started them in (sudo wrappers).
    The recorded session counts only while one of those still lives in it: a stale id may have been reused."""
    prefixes = tuple(str(folder).rstrip("/") + "/" for folder in bin_dirs)

    def runs_ours(info: ProcessInfo) -> bool:
        if info.exe.startswith(prefixes) or any(a.startswith(prefixes) for a in info.argv[:3]):
            return True
        return (bool(info.argv) and Path(info.argv[0]).name == "etcd"
                and processes.flag_value(info.argv, "--data-dir") == str(etcd_dir))

    candidates = [p for p in found if p.pid not in (own_pid, 1)]
    ours = {p.pid for p in candidates if runs_ours(p)}
    if session and any(p.session == session for p in candidates if p.pid in ours):
        ours |= {p.pid for p in candidates if p.session == session}
    return sorted(ours)


def _recorded_session() -> int | None:
    try:
        return int(json.loads(session_file().read_text())["session"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def running_pids() -> list[int]:
    return cluster_processes(
        processes.list_processes(),
        session=_recorded_session(),
        # local-up-cluster.sh starts them through the _output/bin symlink; /proc/PID/exe shows the real folder.
        bin_dirs=[binaries_dir(), source_tree() / "_output" / "bin"],
        etcd_dir=local_state() / "etcd",
        own_pid=os.getpid(),
    )


def stop_local() -> str:
    """Stop every process of the local cluster, remove its pod containers and its state. Nothing stays running."""
    stopped = running_pids()
    # Re-read the table while waiting: the script's sudo wrappers may still start a helper as it goes down.
    left = processes.terminate(stopped, STOP_TIMEOUT, still_running=running_pids)
    if left:
        raise KubernetesError(
            f"processes {', '.join(map(str, left))} of the local cluster survived SIGKILL", "look at them with ps"
        )
    removed = remove_pod_containers()
    if stopped and (binaries_dir() / "kube-proxy").is_file():
        # Services' iptables rules (KUBE-* chains) would outlive kube-proxy; its own clean-up removes only those.
        proc.run([binaries_dir() / "kube-proxy", "--cleanup"], check=False, timeout=60)
    # The guard too: without the cluster, containers may reach real 10.0.0.x hosts again.
    proc.run(["iptables", "-w", "-D", *SERVICE_GUARD], check=False, timeout=30)
    for leftover in (local_state() / "etcd", local_kubeconfig(), session_file()):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
    return f"stopped {len(stopped)} processes, removed {removed} pod containers"


def remove_pod_containers() -> int:
    """Remove the containers the kubelet created (dockershim names them k8s_*), running or not."""
    import docker.errors

    try:
        client = docker_client.engine(timeout=60)
    except DockerError:
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
# Starting it


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
        "SERVICE_CLUSTER_IP_RANGE": SERVICE_CIDR,
    }


# The Services' virtual IPs (local-up-cluster's default range, set explicitly so the guard below matches it).
SERVICE_CIDR = "10.0.0.0/24"
SERVICE_GUARD = ["DOCKER-USER", "-d", SERVICE_CIDR, "-m", "comment", "--comment",
                 "tfship: Service IPs never leave this node", "-j", "REJECT"]


def keep_service_traffic_local() -> None:
    """Refuse pod traffic to a Service IP that kube-proxy did not rewrite to a pod (a Service with no ready endpoint
    yet, or not synced yet). Docker's FORWARD rules accept it before kube-proxy's own REJECT is reached, and it would
    leave the machine for a real 10.0.0.x host. DOCKER-USER is Docker's chain for such rules: first in FORWARD, kept
    across engine restarts. Rewritten traffic (to a pod) and this machine's own connections never pass here."""
    # -w: wait for the xtables lock that Docker and kube-proxy take too, instead of failing on it
    if proc.run(["iptables", "-w", "-C", *SERVICE_GUARD], check=False, timeout=30).returncode != 0:
        proc.run(["iptables", "-w", "-I", *SERVICE_GUARD], timeout=30, error=KubernetesError,
                 hint="the local cluster needs iptables (root) to keep Service traffic on this machine")


def _ports_in_use() -> list[int]:
    held = []
    for port in (APISERVER_PORT, ETCD_PORT):
        with socket.socket() as probe:
            probe.settimeout(1)
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                held.append(port)
    return held


def start_local(provider: LocalProvider) -> str:
    with step("Starting the local Kubernetes cluster (hack/local-up-cluster.sh)") as progress:
        apt.ensure_packages(RUN_PACKAGES, error=KubernetesError, why="to run the local cluster")
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
            write_local_kubeconfig()
            wait_ready(provider.status, READY_TIMEOUT, f"see {state / 'logs' / 'kubelet.log'}")
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


def write_local_kubeconfig() -> Path:
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
# The provider


class LocalProvider(Provider):
    """A real single-node Kubernetes 1.20.2 on this machine, built from Debian's source (needs root)."""

    name = "local"

    @property
    def context(self) -> str:
        return self.config.kubernetes.context or LOCAL_CONTEXT

    def target(self) -> Target:
        """The kubectl built with the cluster (same version, no skew) and the cluster's own kubeconfig."""
        built = binaries_dir() / "kubectl"
        if not built.is_file():
            raise KubernetesError(f"the local cluster's kubectl is not built yet ({built} is missing)",
                                  "run: invoke cluster.up")
        if not local_kubeconfig().is_file():
            raise KubernetesError(f"the local cluster's kubeconfig {local_kubeconfig()} does not exist",
                                  "run: invoke cluster.up")
        return Target(str(built), local_kubeconfig(), self.context)

    def status(self) -> ClusterStatus:
        if not local_kubeconfig().is_file():
            raise KubernetesError("the local cluster is not running", "run: invoke cluster.up")
        return super().status()

    def is_ready(self) -> bool:
        try:
            return self.status().ready
        except KubernetesError:
            return False

    def up(self) -> str:
        if self.is_ready() or self._node_comes_back():
            keep_service_traffic_local()  # also after an engine restart
            return f"local Kubernetes {KUBERNETES_VERSION} already Ready (context {LOCAL_CONTEXT}); left as it is"
        if not apt.is_root():
            raise KubernetesError(
                "the local cluster needs root (its kubelet, iptables rules and apt packages)",
                "deploy to a cluster you have: kubectl config use-context NAME, with kubernetes.provider: auto",
            )
        engine.ensure_engine(self.config)
        local_build.ensure_binaries(self.config)
        local_build.ensure_pause_image()
        keep_service_traffic_local()  # before any pod runs
        with local_build.exclusive("up"):
            if self.is_ready():  # another run started it while we waited
                return f"local Kubernetes {KUBERNETES_VERSION} already Ready (context {LOCAL_CONTEXT})"
            return start_local(self)

    def _node_comes_back(self) -> bool:
        """A running cluster whose apiserver answers but whose node is not Ready (its kubelet reconnecting after an
        engine restart): wait for it, bounded, rather than start a new cluster, which would lose every object."""
        if not running_pids():
            return False
        try:
            self.status()
        except KubernetesError:
            return False  # no apiserver: start again
        try:
            wait_ready(self.status, READY_TIMEOUT, "")
        except KubernetesError:
            return False
        return True

    def down(self) -> str:
        with local_build.exclusive("up"):
            return "local cluster: " + stop_local()

    def registry_problem(self, registry_url: str, nodes: list[NodeState]) -> str | None:
        return None  # the node is this machine, and pulls go through this machine's Docker engine
