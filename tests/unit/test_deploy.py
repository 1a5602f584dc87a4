"""deploy's decisions against a fake kubectl: diagnosing pods, when a rollout is complete, what is rolled back,
and that the registry password only ever travels through stdin. The real thing is tests/e2e/test_deploy.py."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tfship import artifacts as tfartifacts
from tfship import config as tfconfig
from tfship import deploy, images, kubectl, render, rollout
from tfship.artifacts import Artifacts, ImageArtifact
from tfship.errors import KubernetesError, RegistryError

DIGEST_OLD = "sha256:" + "01" * 32
DIGEST_NEW = "sha256:" + "02" * 32
REPOSITORY = "127.0.0.1:5000/tfship/tfship-serving"
SELECTOR = {"app.kubernetes.io/name": "tfship-serving", "app.kubernetes.io/instance": "tfship"}


def deployment(revision: int, digest: str, replicas: int = 3, ready: int = 3, updated: int = 3, total: int = 3,
               generation: int = 2, observed: int = 2, conditions: list | None = None) -> dict:
    return {
        "kind": "Deployment",
        "metadata": {"name": "tfship-serving", "generation": generation, "labels": SELECTOR,
                     "annotations": {rollout.REVISION_ANNOTATION: str(revision)}},
        "spec": {"replicas": replicas,
                 "template": {"spec": {"containers": [{"name": "serving", "image": f"{REPOSITORY}@{digest}"}]}}},
        "status": {"observedGeneration": observed, "replicas": total, "updatedReplicas": updated,
                   "readyReplicas": ready, "availableReplicas": ready, "conditions": conditions or []},
    }


def replica_set(revision: int, template_hash: str) -> dict:
    return {"kind": "ReplicaSet", "metadata": {"name": f"tfship-serving-{template_hash}",
                                               "labels": {**SELECTOR, "pod-template-hash": template_hash},
                                               "annotations": {rollout.REVISION_ANNOTATION: str(revision)}}}


def pod(name: str, template_hash: str, waiting: dict | None = None, last_terminated: dict | None = None,
        conditions: list | None = None) -> dict:
    status: dict = {"phase": "Pending", "conditions": conditions or []}
    if waiting or last_terminated:
        status["containerStatuses"] = [{
            "name": "serving", "ready": False, "restartCount": 2 if last_terminated else 0,
            "state": {"waiting": waiting} if waiting else {"running": {}},
            "lastState": {"terminated": last_terminated} if last_terminated else {},
        }]
    return {"kind": "Pod", "metadata": {"name": name, "labels": {**SELECTOR, "pod-template-hash": template_hash}},
            "status": status}


class FakeKubectl(kubectl.Reads):
    """A kubectl target that answers the calls deploy makes from scripted cluster states; records every call."""

    def __init__(self, before: dict | None, watch_states: list[list[dict]], after_undo: list[dict] | None = None,
                 events: list[dict] | None = None, logs: str = "", api_versions: str = "v1\napps/v1\npolicy/v1beta1\n"):
        self.current = before
        self.watch_states = list(watch_states)
        self.after_undo = after_undo
        self.events = events or []
        self.logs = logs
        self.api_versions = api_versions
        self.calls: list[tuple[tuple[str, ...], str | None]] = []
        self.applied_after_namespace = False
        self.namespace_states: list[str] = []  # kubectl get namespace answers, then "" (not found)

    def run(self, *args: str, input: str | None = None, check: bool = True, timeout: float | None = None):
        self.calls.append((args, input))
        verb = args[0]
        if verb == "api-versions":
            return self._done(self.api_versions)
        if verb == "apply":
            if "kind: Deployment" in (input or ""):
                # What the API server does on apply: the deployment now exists, at the next generation.
                self.applied_after_namespace = True
                self._advance()
            return self._done("applied\n")
        if verb == "get" and args[1] == "namespace":
            return self._done(self.namespace_states.pop(0) if self.namespace_states else "")
        if verb == "get" and args[1] == "deployment":
            return self._done(json.dumps(self.current) if self.current else "")
        if verb == "get" and args[1] == "deployments,replicasets,pods":
            items = self._advance()
            return self._done(json.dumps({"items": items}))
        if verb == "get" and args[1] == "replicasets":
            return self._done(json.dumps({"items": [replica_set(1, "aaa"), replica_set(2, "bbb")]}))
        if verb == "get" and args[1] == "events":
            return self._done(json.dumps({"items": self.events}))
        if verb == "logs":
            return self._done(self.logs)
        if verb in ("rollout", "scale"):
            self.watch_states = [self.after_undo or []]
            self.current = next((o for o in self.after_undo or [] if o["kind"] == "Deployment"), self.current)
            return self._done("rolled back\n")
        raise AssertionError(f"unexpected kubectl call {args}")

    def _advance(self) -> list[dict]:
        items = self.watch_states.pop(0) if len(self.watch_states) > 1 else self.watch_states[0]
        self.current = next((o for o in items if o["kind"] == "Deployment"), self.current)
        return items

    @staticmethod
    def _done(stdout: str) -> subprocess.CompletedProcess:
        return subprocess.CompletedProcess(["kubectl"], 0, stdout, "")


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def cfg(tmp_path: Path) -> tfconfig.Config:
    (tmp_path / "tfship.yaml").write_text("models:\n  - name: half_plus_two\n")
    config = tfconfig.load(tmp_path / "tfship.yaml", environ={})
    save_artifacts(config, auth=False)
    return config


def save_artifacts(config: tfconfig.Config, auth: bool) -> None:
    serving = ImageArtifact(role="serving", name="tfship-serving", tag="t2", image_id="sha256:" + "22" * 32,
                            user=10001, runtime="python", repository=REPOSITORY, digest=DIGEST_NEW)
    tfartifacts.save(config.artifacts_path, Artifacts(images={"serving": serving}, models={"half_plus_two": [1]},
                                                      serving=images.serving_record(config, {"half_plus_two": [1]}, keep_samples=False),
                                                      registry="127.0.0.1:5000", registry_auth=auth))


def run_deploy(cfg, fake, **kwargs):
    clock = FakeClock()
    return deploy.deploy(cfg, 3, target=fake, clock=clock, sleep=clock.sleep, **kwargs)


OLD = [deployment(1, DIGEST_OLD), replica_set(1, "aaa")]
ROLLING = [deployment(2, DIGEST_NEW, ready=3, updated=1, total=4, generation=3, observed=3),
           replica_set(1, "aaa"), replica_set(2, "bbb")]
DONE = [deployment(2, DIGEST_NEW, generation=3, observed=3), replica_set(2, "bbb")]
PULL_FAILING = ROLLING + [pod("tfship-serving-bbb-x", "bbb", waiting={"reason": "ImagePullBackOff",
                                                                      "message": "Back-off pulling image"})]
ROLLED_BACK = [deployment(3, DIGEST_OLD, generation=4, observed=4), replica_set(3, "aaa")]


def test_a_successful_rollout_reports_ready_replicas_and_the_digest(cfg):
    fake = FakeKubectl(before=OLD[0], watch_states=[ROLLING, ROLLING, DONE])
    result = run_deploy(cfg, fake)
    assert (result.ready, result.replicas, result.digest, result.revision) == (3, 3, DIGEST_NEW, "2")
    assert [args[:2] for args, _ in fake.calls[:3]] == [("api-versions", kubectl.REQUEST_TIMEOUT),
                                                         ("get", "namespace"), ("apply", "-f")]
    assert "kind: Namespace" in fake.calls[2][1], "the namespace is applied first, on its own"
    assert not any(args[0] == "rollout" for args, _ in fake.calls)
    assert (cfg.build_path / "k8s" / "30-pdb.yaml").read_text().startswith("apiVersion: policy/v1beta1")


def test_a_pull_failure_names_the_kubelet_error_and_rolls_back(cfg):
    events = [{"reason": "Failed", "lastTimestamp": "2026-01-01T00:00:01Z",
               "message": 'Failed to pull image "x": rpc error: manifest unknown'},
              {"reason": "Failed", "lastTimestamp": "2026-01-01T00:00:02Z", "message": "Error: ErrImagePull"},
              {"reason": "Failed", "lastTimestamp": "2026-01-01T00:00:09Z", "message": "Error: ImagePullBackOff"}]
    fake = FakeKubectl(before=OLD[0], watch_states=[ROLLING, PULL_FAILING], after_undo=ROLLED_BACK, events=events)
    with pytest.raises(KubernetesError) as failed:
        run_deploy(cfg, fake)
    message = failed.value.message
    assert "cannot pull its image" in message and "manifest unknown" in message
    assert f"rolled back to revision 1, which is serving {DIGEST_OLD}" in message
    undo = [args for args, _ in fake.calls if args[0] == "rollout"]
    assert undo == [("rollout", "undo", "deployment/tfship-serving", "-n", "tfship", "--to-revision=1")]


def test_keep_failed_leaves_the_failed_rollout(cfg):
    fake = FakeKubectl(before=OLD[0], watch_states=[ROLLING, PULL_FAILING])
    with pytest.raises(KubernetesError, match="left in place") as failed:
        run_deploy(cfg, fake, keep_failed=True)
    assert "invoke rollback" in failed.value.hint
    assert not any(args[0] in ("rollout", "scale") for args, _ in fake.calls)


def test_a_failed_first_deploy_says_there_is_nothing_to_roll_back_to(cfg):
    crashing = ROLLING[:1] + [replica_set(2, "bbb"), pod("tfship-serving-bbb-y", "bbb",
                                                         waiting={"reason": "CrashLoopBackOff"},
                                                         last_terminated={"reason": "Error", "exitCode": 1})]
    fake = FakeKubectl(before=None, watch_states=[crashing],
                       logs="loading model\nI0000 cudart_stub.cc:31] Could not find cuda drivers\n"
                            "Error: Failed to load servable half_plus_two: no SavedModel found\nexiting\n")
    with pytest.raises(KubernetesError) as failed:
        run_deploy(cfg, fake)
    message = failed.value.message
    assert "keeps crashing, CrashLoopBackOff (Error, exit code 1)" in message
    assert "Failed to load servable half_plus_two: no SavedModel found" in message
    assert "cuda" not in message, "start-up chatter is left out when error lines exist"
    assert "no previous revision to roll back to" in message
    logs_call = next(args for args, _ in fake.calls if args[0] == "logs")
    assert "--previous" in logs_call
    assert not any(args[0] == "rollout" for args, _ in fake.calls)


def test_a_failed_scale_up_restores_the_replica_count_only(cfg):
    before = deployment(2, DIGEST_NEW, replicas=1, ready=1, updated=1, total=1)
    unschedulable = [deployment(2, DIGEST_NEW, replicas=3, ready=1, updated=3, total=3, generation=3, observed=3),
                     replica_set(2, "bbb"),
                     pod("tfship-serving-bbb-z", "bbb", conditions=[{
                         "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                         "message": "0/1 nodes are available: 1 Insufficient cpu."}])]
    scaled_back = [deployment(2, DIGEST_NEW, replicas=1, ready=1, updated=1, total=1, generation=4, observed=4),
                   replica_set(2, "bbb")]
    fake = FakeKubectl(before=before, watch_states=[unschedulable], after_undo=scaled_back)
    with pytest.raises(KubernetesError) as failed:
        run_deploy(cfg, fake)
    assert "cannot be scheduled: 0/1 nodes are available: 1 Insufficient cpu." in failed.value.message
    restoring = [args for args, _ in fake.calls if args[0] in ("rollout", "scale")]
    assert restoring == [("scale", "deployment/tfship-serving", "-n", "tfship", "--replicas=1")]


def test_the_rollout_deadline_is_bounded(cfg):
    stuck = ROLLING + [pod("tfship-serving-bbb-w", "bbb")]
    fake = FakeKubectl(before=OLD[0], watch_states=[stuck], after_undo=ROLLED_BACK,
                       events=[{"reason": "Unhealthy", "message": "Readiness probe failed: HTTP probe failed with statuscode: 404"}])
    with pytest.raises(KubernetesError, match="not complete within kubernetes.rollout_timeout") as failed:
        run_deploy(cfg, fake)
    assert "statuscode: 404" in failed.value.message
    polls = sum(1 for args, _ in fake.calls if args[:2] == ("get", "deployments,replicasets,pods"))
    assert polls <= cfg.kubernetes.rollout_timeout / rollout.POLL_SECONDS + 2


def test_the_pull_secret_goes_through_stdin_only(cfg, monkeypatch):
    save_artifacts(cfg, auth=True)
    monkeypatch.setattr("tfship.registry.credentials", lambda config: ("tfship", "pw-Zq81"))
    fake = FakeKubectl(before=OLD[0], watch_states=[DONE])
    run_deploy(cfg, fake)
    secret_inputs = [text for _, text in fake.calls if text and "kind: Secret" in text]
    assert len(secret_inputs) == 1
    assert all("pw-Zq81" not in " ".join(args) for args, _ in fake.calls)
    assert not any("pw-Zq81" in path.read_text() or "kind: Secret" in path.read_text()
                   for path in (cfg.build_path / "k8s").iterdir())


def test_missing_registry_credentials_stop_before_anything_rolls(cfg, monkeypatch):
    save_artifacts(cfg, auth=True)
    monkeypatch.setattr("tfship.registry.credentials", lambda config: None)
    fake = FakeKubectl(before=OLD[0], watch_states=[DONE])
    with pytest.raises(RegistryError, match="needs credentials"):
        run_deploy(cfg, fake)
    assert not fake.applied_after_namespace


def test_rollout_complete_follows_kubectl_rollout_status():
    assert rollout.rollout_complete(deployment(2, DIGEST_NEW))
    assert not rollout.rollout_complete(deployment(2, DIGEST_NEW, generation=3, observed=2))
    assert not rollout.rollout_complete(deployment(2, DIGEST_NEW, updated=2, total=4))
    assert not rollout.rollout_complete(deployment(2, DIGEST_NEW, ready=2))
    assert rollout.rollout_complete(deployment(2, DIGEST_NEW, replicas=0, ready=0, updated=0, total=0))


def test_diagnose_ignores_pods_that_are_just_starting():
    assert rollout.diagnose([pod("p", "h", waiting={"reason": "ContainerCreating"})]) is None
    problem = rollout.diagnose([pod("p", "h", waiting={"reason": "CreateContainerConfigError",
                                                      "message": 'configmap "x" not found'})])
    assert problem is not None and problem.kind == "config" and 'configmap "x" not found' in problem.detail


def test_render_asks_the_cluster_and_falls_back_to_current_api_versions(cfg):
    from_cluster = render.render_manifests(cfg, target=FakeKubectl(before=None, watch_states=[[]]))
    assert (from_cluster.source, from_cluster.api_versions.pdb) == ("from the cluster", "policy/v1beta1")

    class Unreachable(kubectl.Reads):
        def run(self, *args, input=None, check=True, timeout=None):
            raise KubernetesError("the connection to the server 127.0.0.1:6443 was refused")

    offline = render.render_manifests(cfg, target=Unreachable())
    assert offline.source.startswith("offline defaults") and offline.api_versions.pdb == "policy/v1"
    assert (cfg.build_path / "k8s" / "30-pdb.yaml").read_text().startswith("apiVersion: policy/v1\n")


def test_deploy_waits_for_a_namespace_being_deleted(cfg):
    fake = FakeKubectl(before=None, watch_states=[DONE])
    terminating = json.dumps({"metadata": {"name": "tfship"}, "status": {"phase": "Terminating"}})
    fake.namespace_states = [terminating, terminating]
    run_deploy(cfg, fake)
    namespace_reads = [i for i, (args, _) in enumerate(fake.calls) if args[:2] == ("get", "namespace")]
    first_apply = next(i for i, (args, _) in enumerate(fake.calls) if args[0] == "apply")
    assert len(namespace_reads) == 3 and namespace_reads[-1] < first_apply
