"""Pure parts of the cluster package: process selection, kubeconfig renaming, node parsing, kind, kubectl target."""

from __future__ import annotations

import importlib
import json
import subprocess
from pathlib import Path

import pytest
import yaml

from tfship import cluster
from tfship.cluster import kind, local, local_build
from tfship.cluster.status import ClusterStatus, parse_nodes
from tfship.host import processes
from tfship.host.processes import ProcessInfo
from tfship.config import Config, KubernetesConfig
from tfship.errors import KubernetesError

BIN = Path("/cache/kubernetes-1.20.2/src/_output/local/bin/linux/amd64")
BIN_LINK = Path("/cache/kubernetes-1.20.2/src/_output/bin")
ETCD_DIR = Path("/state/kubernetes/etcd")


def select(processes: list[ProcessInfo], session: int | None = 500) -> list[int]:
    return local.cluster_processes(
        processes, session=session, bin_dirs=[BIN, BIN_LINK], etcd_dir=ETCD_DIR, own_pid=42
    )


def test_the_recorded_session_counts_while_our_binaries_live_in_it():
    processes = [
        ProcessInfo(501, 500, "/usr/bin/sudo", ("sudo", "-E", "kubelet")),
        ProcessInfo(502, 500, str(BIN / "kube-proxy"), ("kube-proxy",)),
        ProcessInfo(600, 600, "/usr/bin/bash", ("bash",)),
    ]
    assert select(processes) == [501, 502]


def test_a_stale_session_id_reused_by_someone_else_is_ignored():
    processes = [
        ProcessInfo(500, 500, "/usr/bin/bash", ("bash",)),
        ProcessInfo(501, 500, "/usr/bin/vim", ("vim",)),
    ]
    assert select(processes) == []


def test_our_binaries_are_found_outside_the_session():
    processes = [
        ProcessInfo(700, 1, str(BIN / "kube-apiserver"), (str(BIN / "kube-apiserver"), "--v=3")),
        ProcessInfo(701, 1, "/usr/local/bin/kube-apiserver", ("/usr/local/bin/kube-apiserver",)),
        # sudo wrapping our kubelet: its exe is sudo, but its argv names our binary.
        ProcessInfo(702, 1, "/usr/bin/sudo", ("sudo", "-E", str(BIN_LINK / "kubelet"))),
    ]
    assert select(processes, session=None) == [700, 702]


def test_only_the_etcd_serving_our_data_dir_is_ours():
    processes = [
        ProcessInfo(800, 1, "/usr/bin/etcd", ("etcd", "--data-dir", str(ETCD_DIR), "--log-level=debug")),
        ProcessInfo(801, 1, "/usr/bin/etcd", ("etcd", f"--data-dir={ETCD_DIR}")),
        ProcessInfo(802, 1, "/usr/bin/etcd", ("etcd", "--data-dir", "/var/lib/etcd")),
    ]
    assert select(processes, session=None) == [800, 801]


def test_never_selects_itself_init_or_session_zero():
    processes = [
        ProcessInfo(42, 500, str(BIN / "kubectl"), ()),
        ProcessInfo(1, 0, "/sbin/init", ("init",)),
        ProcessInfo(900, 0, "/usr/bin/kthreadd", ()),
    ]
    assert select(processes, session=0) == []


def test_list_processes_sees_this_process():
    import os

    mine = [p for p in processes.list_processes() if p.pid == os.getpid()]
    assert len(mine) == 1 and mine[0].session == os.getsid(0)


def test_rename_kubeconfig_makes_one_self_contained_context():
    admin = {
        "clusters": [{"name": "local-up-cluster", "cluster": {"server": "https://localhost:6443",
                                                              "certificate-authority-data": "Q0E="}}],
        "users": [{"name": "local-up-cluster", "user": {"client-certificate-data": "Q0VSVA==",
                                                        "client-key-data": "S0VZ"}}],
        "contexts": [{"name": "local-up-cluster", "context": {"cluster": "local-up-cluster", "user": "local-up-cluster"}}],
    }
    renamed = local.rename_kubeconfig(admin, "tfship-local")
    assert renamed["current-context"] == "tfship-local"
    assert renamed["contexts"] == [{"name": "tfship-local", "context": {"cluster": "tfship-local", "user": "tfship-local-admin"}}]
    assert renamed["clusters"][0]["cluster"]["server"] == "https://localhost:6443"
    assert renamed["users"][0]["user"]["client-key-data"] == "S0VZ"


def test_parse_nodes_reads_ready_and_the_reason_when_not():
    nodes = {
        "items": [
            {"metadata": {"name": "127.0.0.1"},
             "status": {"conditions": [{"type": "MemoryPressure", "status": "False"},
                                       {"type": "Ready", "status": "True", "message": "kubelet is posting ready status"}],
                        "nodeInfo": {"kubeletVersion": "v1.20.2"}}},
            {"metadata": {"name": "other"},
             "status": {"conditions": [{"type": "Ready", "status": "False", "message": "container runtime is down"}]}},
        ]
    }
    parsed = parse_nodes(nodes)
    assert [(n.name, n.ready, n.version) for n in parsed] == [("127.0.0.1", True, "v1.20.2"), ("other", False, "?")]
    assert parsed[1].reason == "container runtime is down"
    status = ClusterStatus("local", "tfship-local", "https://localhost:6443", parsed)
    assert status.ready
    assert "NotReady (container runtime is down)" in status.describe()
    assert not ClusterStatus("local", "", "?", parse_nodes({"items": []})).ready


def test_local_up_environment_follows_the_lab_recipe():
    env = local.local_up_environment(Path("/logs"), ETCD_DIR, Path("/state/audit.yaml"))
    assert env["AUDIT_POLICY_FILE"] == "/state/audit.yaml"
    assert yaml.safe_load(local.AUDIT_POLICY)["rules"][-1] == {"level": "Metadata"}
    assert env["ENABLE_DAEMON"] == "true"
    assert env["KUBE_ENABLE_CLUSTER_DNS"] == "false"
    assert env["LOG_DIR"] == "/logs"
    flags = env["KUBELET_FLAGS"].split()
    assert f"--pod-infra-container-image={local_build.PAUSE_IMAGE}" in flags
    assert "--fail-swap-on=false" in flags
    assert "--image-gc-high-threshold=100" in flags  # never collect other people's images on a shared engine


def test_deb_src_entry_names_bookworm_sources_on_the_mirror():
    entry = local_build.deb_src_entry("http://mirror.example/debian")
    assert "Types: deb-src" in entry and "URIs: http://mirror.example/debian" in entry and "Suites: bookworm" in entry


def test_kind_cluster_is_wired_to_the_local_registry():
    argv, node_config = kind.kind_create_commands("127.0.0.1:5000", "tfship-registry-5000", 5000)
    assert argv == ["kind", "create", "cluster", "--name", "tfship", "--config", "-"]
    parsed = yaml.safe_load(node_config)
    assert parsed["kind"] == "Cluster" and parsed["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    patch = parsed["containerdConfigPatches"][0]
    assert 'registry.mirrors."127.0.0.1:5000"' in patch
    assert 'endpoint = ["http://tfship-registry-5000:5000"]' in patch


def config_for(provider: str, context: str = "") -> Config:
    return Config(kubernetes=KubernetesConfig(provider=provider, context=context))


def test_context_defaults_per_provider():
    assert cluster.context_of(config_for("local")) == "tfship-local"
    assert cluster.context_of(config_for("kind")) == "kind-tfship"
    assert cluster.context_of(config_for("external")) == ""
    assert cluster.context_of(config_for("external", "prod")) == "prod"
    assert cluster.context_of(config_for("local", "mine")) == "mine"


def test_kubectl_argv_for_the_local_cluster(tmp_path, monkeypatch):
    monkeypatch.setenv("TFSHIP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TFSHIP_STATE_DIR", str(tmp_path / "state"))
    with pytest.raises(KubernetesError, match="not built yet"):
        cluster.target(config_for("local")).argv("get", "nodes")
    local_build.binaries_dir().mkdir(parents=True)
    (local_build.binaries_dir() / "kubectl").write_text("")
    with pytest.raises(KubernetesError, match="kubeconfig .* does not exist") as raised:
        cluster.target(config_for("local")).argv("get", "nodes")
    assert raised.value.hint == "run: invoke cluster.up"
    local.local_kubeconfig().parent.mkdir(parents=True)
    local.local_kubeconfig().write_text("")
    assert cluster.target(config_for("local")).argv("get", "nodes") == [
        str(local_build.binaries_dir() / "kubectl"), "--kubeconfig", str(local.local_kubeconfig()),
        "--context", "tfship-local", "get", "nodes",
    ]


def test_kubectl_argv_for_an_external_cluster(tmp_path, monkeypatch):
    fake = tmp_path / "bin" / "kubectl"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake.parent))
    assert cluster.target(config_for("external")).argv("version") == [str(fake), "version"]
    assert cluster.target(config_for("external", "prod")).argv("version") == [str(fake), "--context", "prod", "version"]
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    with pytest.raises(KubernetesError, match="not on PATH"):
        cluster.target(config_for("external")).argv("version")


def test_local_status_without_a_kubeconfig_says_run_cluster_up(tmp_path, monkeypatch):
    monkeypatch.setenv("TFSHIP_STATE_DIR", str(tmp_path / "state"))
    with pytest.raises(KubernetesError, match="not running") as raised:
        cluster.status(config_for("local"))
    assert "invoke cluster.up" in raised.value.hint
    assert cluster.is_ready(config_for("local")) is False


def test_down_refuses_an_external_cluster():
    with pytest.raises(KubernetesError, match="does not stop clusters it did not start"):
        cluster.down(config_for("external"))


class RecordingStep:
    def __init__(self):
        self.lines: list[str] = []

    def update(self, line: str) -> None:
        self.lines.append(line)


def test_build_progress_shows_milestones_and_counts_packages():
    recorder = RecordingStep()
    on_line = local_build.BuildProgress(recorder, every=2)
    for line in ["+++ [1121 10:40:19] Building go targets for linux/amd64:", "    k8s.io/kubernetes/cmd/kubelet",
                 "k8s.io/kubernetes/vendor/golang.org/x/net/http2", "k8s.io/kubernetes/pkg/api", "runtime",
                 "# some warning about a/b c", "k8s.io/kubernetes/cmd/kubectl"]:
        on_line(line)
    assert recorder.lines == ["+++ [1121 10:40:19] Building go targets for linux/amd64:", "compiled 2 Go packages"]
    assert on_line.packages == 3


def run_script(tmp_path, body: str):
    import subprocess

    log_path = tmp_path / "local-up-cluster.log"
    with log_path.open("wb") as log:
        script = subprocess.Popen(["sh", "-c", body], stdout=log, stderr=subprocess.STDOUT)
    recorder = RecordingStep()
    try:
        local._follow_script(script, log_path, recorder)
    finally:
        script.kill()
        script.wait()
    return recorder, log_path


def test_follow_script_shows_its_milestones(tmp_path):
    recorder, _ = run_script(tmp_path, "echo Starting etcd; echo noise; echo Local Kubernetes cluster is running.")
    assert recorder.lines == ["Starting etcd", "Local Kubernetes cluster is running."]


def test_a_failing_script_is_an_error_naming_its_log(tmp_path):
    with pytest.raises(KubernetesError, match=r"exit code 3: .*port 2379 is in use") as raised:
        run_script(tmp_path, "echo Starting etcd; echo 'unable to start etcd as port 2379 is in use'; exit 3")
    assert raised.value.hint == f"see {tmp_path / 'local-up-cluster.log'}"


def test_a_script_that_does_not_return_is_stopped_waiting_for(tmp_path, monkeypatch):
    monkeypatch.setattr(local, "START_TIMEOUT", 0.5)
    with pytest.raises(KubernetesError, match="did not return within"):
        run_script(tmp_path, "sleep 30")


def test_an_unreachable_external_cluster_is_one_clear_line(tmp_path, monkeypatch):
    fake = tmp_path / "kubectl"
    fake.write_text("#!/bin/sh\necho 'E1121 memcache.go: noise' >&2\n"
                    "echo 'The connection to the server localhost:8080 was refused' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(KubernetesError) as raised:
        cluster.status(config_for("external", "prod"))
    assert raised.value.message == (
        "the cluster of context prod does not answer: The connection to the server localhost:8080 was refused"
    )
    assert "kubernetes.context" in raised.value.hint


# --------------------------------------------------------------------------------------------------------------
# Known defects of issue 9, each proven by a test that failed before the fix


def test_the_source_download_uses_the_configured_debian_mirror(tmp_path, monkeypatch):
    """Before: the build read a default Config() and so the host's mirror, whatever base.debian_mirror said."""
    from tfship.config import BaseConfig
    from tfship.host import apt, proc

    monkeypatch.setenv("TFSHIP_CACHE_DIR", str(tmp_path / "cache"))
    sources_file = tmp_path / "tfship-bookworm-src.sources"
    monkeypatch.setattr(local_build, "APT_SOURCES_FILE", sources_file)
    monkeypatch.setattr(apt, "is_root", lambda: True)
    ran: list[list[str]] = []

    def fake_run(argv, **kwargs):
        argv = [str(a) for a in argv]
        ran.append(argv)
        if argv[:2] == ["apt-get", "source"]:
            (Path(kwargs["cwd"]) / "kubernetes_1.20.2.orig.tar.xz").write_text("")
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(proc, "run", fake_run)
    config = Config(base=BaseConfig(debian_mirror="http://mirror.example/debian"))
    tarball = local_build.download_source(RecordingStep(), config)
    assert "URIs: http://mirror.example/debian\n" in sources_file.read_text()
    assert ran == [["apt-get", "update", "-qq"], ["apt-get", "source", "--download-only", "kubernetes/bookworm"]]
    assert tarball.name == "kubernetes_1.20.2.orig.tar.xz"


class FakeDocker:
    """Answers the docker and kind commands the kind provider runs; records them."""

    def __init__(self, published: str = "tfship-registry-5000\n", connect: tuple[int, str] = (0, ""),
                 clusters: str = ""):
        self.published = published
        self.connect = connect
        self.clusters = clusters
        self.ran: list[list[str]] = []
        self.inputs: list[str | None] = []

    def __call__(self, argv, *, check=True, error=KubernetesError, hint=None, input=None, **kwargs):
        argv = [str(a) for a in argv]
        self.ran.append(argv)
        self.inputs.append(input)
        code, out, err = 0, "", ""
        if argv[:2] == ["docker", "ps"]:
            out = self.published
        elif argv[:2] == ["docker", "inspect"]:
            out = json.dumps({"5000/tcp": [{"HostIp": "127.0.0.1", "HostPort": "5000"}]})
        elif argv[:3] == ["docker", "network", "connect"]:
            code, err = self.connect
        elif argv[:3] == ["kind", "get", "clusters"]:
            out = self.clusters
        if check and code:
            raise error(f"'{' '.join(argv[:4])}' failed with exit code {code}: {err}", hint)
        return subprocess.CompletedProcess(argv, code, out, err)


def kind_provider(fake: FakeDocker) -> kind.KindProvider:
    return kind.KindProvider(config_for("kind"), run=fake, which=lambda name: f"/usr/local/bin/{name}")


def test_kind_wires_the_registry_container_that_really_runs():
    """Before: the mirror named tfship-kind-registry, a container nothing created."""
    fake = FakeDocker()
    result = kind_provider(fake).up()
    create = fake.ran.index(["kind", "create", "cluster", "--name", "tfship", "--config", "-"])
    patch = yaml.safe_load(fake.inputs[create])["containerdConfigPatches"][0]
    assert 'endpoint = ["http://tfship-registry-5000:5000"]' in patch
    assert ["docker", "network", "connect", "kind", "tfship-registry-5000"] in fake.ran[create:]
    assert "created (context kind-tfship)" in result and "joined network kind" in result


def test_kind_without_a_registry_container_says_so_before_creating_anything():
    fake = FakeDocker(published="")
    with pytest.raises(KubernetesError, match="no running container publishes registry port 5000") as raised:
        kind_provider(fake).up()
    assert "registry.server: container" in raised.value.hint
    assert not any(argv[:2] == ["kind", "create"] for argv in fake.ran)


def test_a_failed_docker_network_connect_is_an_error():
    """Before: its failure was ignored (check=False, result dropped) and pulls failed later on the node."""
    fake = FakeDocker(connect=(1, "Error response from daemon: network kind not found"))
    with pytest.raises(KubernetesError) as raised:
        kind_provider(fake).up()
    assert raised.value.message == ("could not connect registry container tfship-registry-5000 to kind's network: "
                                    "Error response from daemon: network kind not found")
    assert raised.value.hint == "run it by hand: docker network connect kind tfship-registry-5000"


def test_a_registry_already_on_kinds_network_is_fine_and_an_existing_cluster_is_kept():
    fake = FakeDocker(connect=(1, "Error response from daemon: endpoint with name tfship-registry-5000 already "
                                  "exists in network kind"), clusters="tfship\n")
    result = kind_provider(fake).up()
    assert "already exists" in result and "already on network kind" in result
    assert not any(argv[:2] == ["kind", "create"] for argv in fake.ran)


# --------------------------------------------------------------------------------------------------------------
# kubernetes.provider auto, and a registry the cluster cannot reach (issue 11)


def fake_kubectl_on_path(tmp_path, monkeypatch, *, current: str = "prod", answers: bool = True,
                         node_addresses: tuple[str, ...] = ("10.255.255.1",)) -> None:
    """A real executable named kubectl on PATH: a current context, a cluster that answers or not, one node."""
    import sys

    nodes = {"items": [{"metadata": {"name": "worker-1"},
                        "status": {"conditions": [{"type": "Ready", "status": "True"}],
                                   "nodeInfo": {"kubeletVersion": "v1.29.0"},
                                   "addresses": [{"type": "InternalIP", "address": a} for a in node_addresses]}}]}
    script = tmp_path / "bin" / "kubectl"
    script.parent.mkdir(exist_ok=True)
    script.write_text(f"""#!{sys.executable}
import json, sys
args = sys.argv[1:]
if args[:2] == ["config", "current-context"]:
    print({current!r}) if {current!r} else sys.exit("error: current-context is not set")
elif "--raw" in args or ("get" in args and "nodes" in args):
    if not {answers!r}:
        sys.exit("Unable to connect to the server: dial tcp 10.0.0.9:6443: i/o timeout")
    print("{{}}" if "--raw" in args else json.dumps({nodes!r}))
elif "view" in args:
    print("https://10.0.0.9:6443")
""")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", str(script.parent))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    # Should a broken choice fall back to the local provider, it must not touch this machine's real cluster.
    monkeypatch.setenv("TFSHIP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TFSHIP_STATE_DIR", str(tmp_path / "state"))
    from tfship.host import apt

    monkeypatch.setattr(apt, "is_root", lambda: False)
    monkeypatch.setattr(cluster.auto, "_chosen", {})
    monkeypatch.setattr(cluster, "_said", set())


def test_auto_uses_the_current_context_when_it_answers_and_says_so(tmp_path, monkeypatch, capsys):
    fake_kubectl_on_path(tmp_path, monkeypatch)
    chosen = cluster.provider_for(config_for("auto"))
    assert (chosen.name, chosen.context) == ("external", "prod")
    assert cluster.target(config_for("auto")).argv("get", "pods") == [
        str(tmp_path / "bin" / "kubectl"), "--context", "prod", "get", "pods"]
    said = capsys.readouterr().err.splitlines()
    assert said == ["cluster: external, kubectl context prod "
                    "(kubernetes.provider auto chose external: the current kubectl context prod answers)"]


def test_auto_falls_back_to_the_local_cluster_and_says_why(tmp_path, monkeypatch):
    fake_kubectl_on_path(tmp_path, monkeypatch, answers=False)
    chosen = cluster.provider_for(config_for("auto"))
    assert (chosen.name, chosen.context) == ("local", "tfship-local")
    assert chosen.chosen_because == (
        "kubernetes.provider auto chose local: the current kubectl context prod does not answer "
        "(Unable to connect to the server: dial tcp 10.0.0.9:6443: i/o timeout)")
    fake_kubectl_on_path(tmp_path, monkeypatch, current="")
    assert cluster.provider_for(config_for("auto")).chosen_because.endswith("kubectl has no current context")
    fake_kubectl_on_path(tmp_path, monkeypatch, current="tfship-local")
    assert cluster.provider_for(config_for("auto")).name == "local"
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    monkeypatch.setattr(cluster.auto, "_chosen", {})
    assert cluster.provider_for(config_for("auto")).chosen_because.endswith("no kubectl on PATH")


def test_auto_with_a_named_context_uses_it():
    assert cluster.auto.choose(config_for("auto", "staging"), which=lambda name: None).provider == "external"
    assert cluster.auto.choose(config_for("auto", "tfship-local"), which=lambda name: None).provider == "local"


def test_up_and_status_name_the_context_in_use(tmp_path, monkeypatch, capsys):
    fake_kubectl_on_path(tmp_path, monkeypatch)
    said = cluster.up(config_for("auto"))
    assert "external (auto) cluster at https://10.0.0.9:6443 (context prod)" in said
    assert capsys.readouterr().err.startswith("cluster: external, kubectl context prod (kubernetes.provider auto")
    assert cluster.status(config_for("auto")).describe().startswith(
        "external (auto) cluster at https://10.0.0.9:6443 (context prod)")


def test_a_loopback_registry_and_a_node_elsewhere_is_one_line_before_deploy(tmp_path, monkeypatch):
    fake_kubectl_on_path(tmp_path, monkeypatch)
    with pytest.raises(KubernetesError) as raised:
        cluster.check_pull(config_for("auto"), "127.0.0.1:5000/tfship/tfship-serving@sha256:" + "a" * 64)
    assert raised.value.message == ("registry 127.0.0.1:5000 is on this machine's loopback, but node worker-1 "
                                    "(10.255.255.1) is another machine and cannot pull from it")
    assert "context prod" in raised.value.hint
    assert "\n" not in raised.value.one_line()
    # A registry the node can reach by name, and Docker Hub, pass.
    cluster.check_pull(config_for("auto"), "registry.example.com:5000/tfship/tfship-serving:1")
    cluster.check_pull(config_for("auto"), "tfship/tfship-serving:1")


def test_a_node_on_this_machine_reaches_a_loopback_registry(tmp_path, monkeypatch):
    fake_kubectl_on_path(tmp_path, monkeypatch, node_addresses=("127.0.0.1",))
    cluster.check_pull(config_for("external", "prod"), "127.0.0.1:5000/tfship/tfship-serving:1")


def test_registry_host_of_references():
    from tfship.cluster.reach import registry_host

    assert registry_host("127.0.0.1:5000") == "127.0.0.1"
    assert registry_host("localhost:5000/team") == "localhost"
    assert registry_host("[::1]:5000") == "::1"
    assert registry_host("ghcr.io/org") == "ghcr.io"


def test_the_local_cluster_as_an_ordinary_user_is_one_line_and_starts_nothing(tmp_path, monkeypatch):
    from tfship import engine
    from tfship.host import apt

    monkeypatch.setenv("TFSHIP_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setattr(apt, "is_root", lambda: False)
    monkeypatch.setattr(engine, "ensure_engine", lambda config=None: pytest.fail("must not touch the engine"))
    with pytest.raises(KubernetesError, match="the local cluster needs root") as raised:
        cluster.up(config_for("local"))
    assert "kubernetes.provider: auto" in raised.value.hint


def test_up_waits_for_a_running_clusters_node_instead_of_starting_a_new_one(monkeypatch):
    """After an engine restart the apiserver answers while the node is NotReady: waiting keeps every object; starting a
    new cluster would wipe etcd."""
    from tfship.cluster.status import NodeState

    answers = iter([False, False, True])  # NotReady twice, then Ready
    provider = local.LocalProvider(config_for("local"))
    monkeypatch.setattr(local, "running_pids", lambda: [4242])
    monkeypatch.setattr(provider, "status", lambda: ClusterStatus(
        "local", "tfship-local", "https://localhost:6443", [NodeState("127.0.0.1", next(answers, True), "v1.20.2")]))
    monkeypatch.setattr(local, "keep_service_traffic_local", lambda: None)
    monkeypatch.setattr(importlib.import_module("tfship.cluster.status").time, "sleep", lambda seconds: None)
    started = []
    monkeypatch.setattr(local, "start_local", lambda provider: started.append(provider))
    assert "already Ready" in provider.up()
    assert not started


def test_up_starts_again_when_nothing_of_the_cluster_runs(monkeypatch):
    provider = local.LocalProvider(config_for("local"))
    monkeypatch.setattr(provider, "is_ready", lambda: False)
    monkeypatch.setattr(local, "running_pids", lambda: [])
    monkeypatch.setattr(local.apt, "is_root", lambda: True)
    for name in ("ensure_binaries", "ensure_pause_image"):
        monkeypatch.setattr(local.local_build, name, lambda *args: None)
    monkeypatch.setattr(local.engine, "ensure_engine", lambda *args: None)
    monkeypatch.setattr(local, "keep_service_traffic_local", lambda: None)
    monkeypatch.setattr(local, "start_local", lambda provider: "started")
    assert provider.up() == "started"
