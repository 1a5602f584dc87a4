"""deploy's decisions against a fake kubectl: diagnosing pods, when a rollout is complete, what is rolled back,
and that the registry password only ever travels through stdin. The real thing is tests/e2e/test_deploy.py."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from fake_clock import FakeClock

from tfship import artifacts as tfartifacts
from tfship import config as tfconfig
from tfship import deploy, images, kubectl, render, rollout
from tfship.artifacts import Artifacts, ImageArtifact
from tfship.errors import KubernetesError, RegistryError

DIGEST_OLD = "sha256:" + "01" * 32
DIGEST_NEW = "sha256:" + "02" * 32
REPOSITORY = "127.0.0.1:5000/tfship/tfship-serving"
SELECTOR = {"app.kubernetes.io/name": "tfship-serving", "app.kubernetes.io/instance": "tfship"}
OWNED = {"app.kubernetes.io/part-of": "tfship", "app.kubernetes.io/managed-by": "tfship"}


def deployment(revision: int, digest: str, replicas: int = 3, ready: int = 3, updated: int = 3, total: int = 3,
               generation: int = 2, observed: int = 2, conditions: list | None = None) -> dict:
    return {
        "kind": "Deployment",
        "metadata": {"name": "tfship-serving", "generation": generation, "labels": {**SELECTOR, **OWNED},
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
    assert [args[:2] for args, _ in fake.calls[:4]] == [("api-versions", kubectl.REQUEST_TIMEOUT),
                                                         ("get", "namespace"), ("get", "deployment"), ("apply", "-f")]
    assert "kind: Namespace" in fake.calls[3][1], "the namespace is applied first, on its own"
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


def test_a_pull_that_fails_once_and_then_works_is_waited_for(cfg):
    """The kubelet may pull before it can read a just-created pull secret, and pulls again ~10 s later."""
    fake = FakeKubectl(before=OLD[0], watch_states=[ROLLING, PULL_FAILING, PULL_FAILING, ROLLING, DONE])
    result = run_deploy(cfg, fake)
    assert (result.ready, result.digest) == (3, DIGEST_NEW)


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


class InterruptedWatch(FakeKubectl):
    """The watch is cut short: Ctrl-C/SIGTERM arrives, or kubectl fails, while pods are being read."""

    def __init__(self, stop: BaseException, **kwargs):
        super().__init__(**kwargs)
        self.stop = stop
        self.stopped = False

    def run(self, *args: str, **kwargs):
        if args[:2] == ("get", "deployments,replicasets,pods") and not self.stopped:
            self.stopped = True
            raise self.stop
        return super().run(*args, **kwargs)


def test_ctrl_c_while_watching_rolls_back_says_so_and_still_interrupts(cfg, capsys):
    fake = InterruptedWatch(KeyboardInterrupt(), before=OLD[0], watch_states=[ROLLING], after_undo=ROLLED_BACK)
    with pytest.raises(KeyboardInterrupt):
        run_deploy(cfg, fake)
    undo = [args for args, _ in fake.calls if args[0] == "rollout"]
    assert undo == [("rollout", "undo", "deployment/tfship-serving", "-n", "tfship", "--to-revision=1")]
    said = capsys.readouterr().err
    assert "the rollout was interrupted before it completed; rolled back to revision 1" in said


def test_ctrl_c_under_keep_failed_leaves_the_rollout_and_says_so(cfg, capsys):
    fake = InterruptedWatch(KeyboardInterrupt(), before=OLD[0], watch_states=[ROLLING])
    with pytest.raises(KeyboardInterrupt):
        run_deploy(cfg, fake, keep_failed=True)
    assert not any(args[0] in ("rollout", "scale") for args, _ in fake.calls)
    assert "left in place (--keep-failed)" in capsys.readouterr().err


def test_a_kubectl_failure_while_watching_rolls_back_with_one_error(cfg):
    fake = InterruptedWatch(KubernetesError("'kubectl get' did not finish within 20s"), before=OLD[0],
                            watch_states=[ROLLING], after_undo=ROLLED_BACK)
    with pytest.raises(KubernetesError) as failed:
        run_deploy(cfg, fake)
    assert "the rollout was stopped ('kubectl get' did not finish within 20s)" in failed.value.message
    assert "rolled back to revision 1" in failed.value.message


def test_a_deployment_tfship_did_not_make_is_never_taken_over(cfg):
    theirs = deployment(1, DIGEST_OLD)
    theirs["metadata"]["labels"] = {**SELECTOR, "app.kubernetes.io/managed-by": "helm"}
    fake = FakeKubectl(before=theirs, watch_states=[DONE])
    with pytest.raises(KubernetesError, match=r"deployment tfship/tfship-serving exists and is not tfship's for "
                                              r"project tfship \(managed-by helm\)") as refused:
        run_deploy(cfg, fake)
    assert "kubectl delete deployment tfship-serving -n tfship" in refused.value.hint
    assert not [args for args, _ in fake.calls if args[0] in ("apply", "delete", "rollout", "scale")]


def test_someone_elses_namespace_is_used_but_never_relabelled(cfg, capsys):
    fake = FakeKubectl(before=OLD[0], watch_states=[ROLLING, DONE])
    fake.namespace_states = [json.dumps({"metadata": {"name": "tfship", "labels": {"team": "ml"}}})]
    run_deploy(cfg, fake)
    applied = [text for args, text in fake.calls if args[0] == "apply"]
    assert applied and not [text for text in applied if "kind: Namespace" in text]
    assert "namespace tfship is not tfship's (no app.kubernetes.io/managed-by label): used as it is" in \
        capsys.readouterr().err


def test_destroy_deletes_only_tfships_objects_and_a_namespace_it_made(cfg):
    class Recorder(FakeKubectl):
        def run(self, *args, **kwargs):
            if args[0] == "delete" or args[:2] == ("get", "pods") or args[:2] == ("get", "deployments,services,configmaps,secrets,jobs"):
                self.calls.append((args, None))
                return self._done("")
            return super().run(*args, **kwargs)

    fake = Recorder(before=None, watch_states=[[]])
    fake.namespace_states = [json.dumps({"metadata": {"name": "tfship", "labels": OWNED}})]
    deploy.destroy(cfg, target=fake, clock=FakeClock(), sleep=lambda s: None)
    deletes = [args for args, _ in fake.calls if args[0] == "delete"]
    assert deletes[0][deletes[0].index("-l") + 1] == (
        "app.kubernetes.io/name=tfship-serving,app.kubernetes.io/instance=tfship,"
        "app.kubernetes.io/part-of=tfship,app.kubernetes.io/managed-by=tfship")
    assert ("delete", "namespace", "tfship", "--wait=false") in deletes

    theirs = Recorder(before=None, watch_states=[[]])
    theirs.namespace_states = [json.dumps({"metadata": {"name": "tfship", "labels": {"team": "ml"}}})]
    deploy.destroy(cfg, target=theirs, clock=FakeClock(), sleep=lambda s: None)
    assert not [args for args, _ in theirs.calls if args[:2] == ("delete", "namespace")]
