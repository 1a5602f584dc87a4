"""Release decisions without a cluster: the gate's limits and messages, measuring with fake clients, the canary's
manifests (never selected by the Service), promote / reject / interrupt against a fake kubectl, and the history
ConfigMap's records. The real thing is tests/e2e/test_release.py."""

from __future__ import annotations

import datetime
import json
import subprocess
from pathlib import Path

import pytest
import yaml

from tfship import artifacts as tfartifacts
from tfship import config as tfconfig
from tfship import deploy, gate, history, kubectl, release, render, rollout, smoke
from tfship.artifacts import Artifacts, ImageArtifact, ServingRecord, SmokeRecord
from tfship.errors import ConfigError, KubernetesError

DIGEST_OLD = "sha256:" + "01" * 32
DIGEST_NEW = "sha256:" + "02" * 32
REPOSITORY = "127.0.0.1:5000/tfship/tfship-serving"
API_1_20 = "v1\napps/v1\npolicy/v1beta1\n"


# --------------------------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture
def cfg(tmp_path: Path) -> tfconfig.Config:
    (tmp_path / "tfship.yaml").write_text("models:\n  - name: digits\n    exporter: digits\n"
                                          "kubernetes:\n  namespace: shop\n")
    config = tfconfig.load(tmp_path / "tfship.yaml", environ={})
    tfartifacts.save(config.artifacts_path, artifacts(DIGEST_NEW, {"digits": [2]}))
    return config


def artifacts(digest: str, models: dict[str, list[int]], auth: bool = False) -> Artifacts:
    serving = ImageArtifact(role="serving", name="tfship-serving", tag="t" + digest[-4:], image_id="sha256:" + "22" * 32,
                            user=10001, runtime="python", repository=REPOSITORY, digest=digest)
    record = ServingRecord(model_name="digits", smoke={"digits": SmokeRecord(signatures=["serving_default"])})
    return Artifacts(images={"serving": serving}, models=models, serving=record, registry="127.0.0.1:5000",
                     registry_auth=auth)


def side(pod: str, wrong_per_class: dict[str, int] | None = None, latencies: list[float] | None = None,
         per_class_total: int = 5, failed: int = 0) -> gate.Side:
    """A measured side over 10 classes of `per_class_total` examples each."""
    wrong_per_class = wrong_per_class or {}
    result = gate.Side(pod)
    for label in map(str, range(10)):
        wrong = wrong_per_class.get(label, 0)
        result.per_class[label] = [per_class_total - wrong, per_class_total]
        result.wrong += wrong
        result.requests += per_class_total
    result.failed = failed
    result.latencies_ms = latencies if latencies is not None else [10.0] * result.requests
    return result


# --------------------------------------------------------------------------------------------------------------
# The gate's judgement


def test_the_same_quality_passes_every_check(cfg):
    checks = gate.compare(cfg, "digits", side("canary", {"3": 1}), side("serving", {"3": 1}))
    assert [(c.name, c.ok) for c in checks] == [("error rate", True), ("per-class accuracy", True),
                                                ("p99 latency", True)]


def test_a_worse_error_rate_is_rejected_with_both_numbers_and_the_limit(cfg):
    bad = side("canary", {str(label): 4 for label in range(10)})  # 40 of 50 wrong
    checks = gate.compare(cfg, "digits", bad, side("serving", {"3": 1}))
    assert not checks[0].ok
    assert checks[0].line == "error rate 0.80 vs 0.02 serving, limit +0.02"
    assert (checks[0].canary, checks[0].serving) == (0.8, 0.02)


def test_the_absolute_limit_applies_even_when_the_serving_version_is_as_bad(cfg):
    both_bad = {"1": 2, "2": 2, "3": 1}  # 5 of 50 = 0.10, above smoke.max_error_rate 0.05
    [rate, *_] = gate.compare(cfg, "digits", side("canary", both_bad), side("serving", both_bad))
    assert not rate.ok
    assert rate.line == "error rate 0.10 vs 0.10 serving, limit 0.05 (smoke.max_error_rate)"


def test_one_class_collapsing_is_caught_even_within_the_overall_limit(cfg):
    cfg.release.max_error_rate_increase = 0.5  # the overall rate alone would let this through
    checks = gate.compare(cfg, "digits", side("canary", {"7": 3}), side("serving"))
    per_class = next(c for c in checks if c.name == "per-class accuracy")
    assert not per_class.ok
    assert per_class.line == "class 7 accuracy 0.40 vs 1.00 serving, limit -0.25"


def test_a_slower_canary_is_rejected_on_p99_but_jitter_within_the_slack_is_not(cfg):
    serving = side("serving", latencies=[10.0] * 50)
    slow = gate.compare(cfg, "digits", side("canary", latencies=[300.0] * 50), serving)[-1]
    assert (slow.name, slow.ok) == ("p99 latency", False)
    assert slow.line == "p99 latency 300 ms vs 10 ms serving, limit x2 (+50 ms)"
    jitter = gate.compare(cfg, "digits", side("canary", latencies=[10.0] * 49 + [45.0]), serving)[-1]
    assert jitter.ok, "4.5 times slower at p99 but only 35 ms: port-forward jitter, not a slow model"


def test_the_first_release_has_only_the_absolute_limit(cfg):
    checks = gate.compare(cfg, "digits", side("canary", {"1": 1}), None)
    assert [(c.name, c.ok) for c in checks] == [("error rate", True)]
    assert checks[0].line == "error rate 0.02 (nothing serving to compare), limit 0.05"


def test_failed_requests_count_as_errors_and_are_named(cfg):
    canary = side("canary", {"0": 5, "1": 5}, failed=10)
    canary.first_failure = "gRPC UNAVAILABLE: connection refused"
    [rate, *_] = gate.compare(cfg, "digits", canary, side("serving"))
    assert not rate.ok and "10 of 50 requests failed: gRPC UNAVAILABLE" in rate.line


def test_a_failed_smoke_check_fails_the_gate_after_the_comparisons(cfg):
    replica = smoke.ReplicaResult("canary-pod", checks=[smoke.Check("digits status", False, "version 3 is MISSING")])
    result = gate.judge(cfg, replica, {"digits": (side("canary"), side("serving"))})
    assert not result.ok
    assert result.failure.line == "smoke test digits status: version 3 is MISSING"
    summary = result.summary()
    assert summary["models"]["digits"]["canary"]["requests"] == 50
    json.dumps(summary)  # the record must be JSON


def test_release_limits_are_validated(tmp_path):
    (tmp_path / "tfship.yaml").write_text("release:\n  max_p99_ratio: 0.5\n")
    with pytest.raises(ConfigError, match="release.max_p99_ratio"):
        tfconfig.load(tmp_path / "tfship.yaml", environ={})
    config = tfconfig.load(tmp_path / "tfship.yaml", environ={"TFSHIP_RELEASE_MAX_P99_RATIO": "3",
                                                              "TFSHIP_RELEASE_CANARY_TRAFFIC": "true"})
    assert (config.release.max_p99_ratio, config.release.canary_traffic) == (3.0, True)


# --------------------------------------------------------------------------------------------------------------
# Measuring


class FakeClient:
    """Predicts class `label` for every row (or raises), one tick of the fake timer per request."""

    def __init__(self, name: str, answer, calls: list, ticks: list[float], cost: float):
        self.name, self.answer, self.calls, self.ticks, self.cost = name, answer, calls, ticks, cost

    def predict(self, case: smoke.SmokeCase) -> list:
        self.calls.append((self.name, len(case.rows)))
        self.ticks[0] += self.cost
        if isinstance(self.answer, Exception):
            raise self.answer
        label = self.answer(case)
        return [[1.0 if i == label else 0.0 for i in range(10)]]


def digits_case(labels: list[int]) -> smoke.SmokeCase:
    return smoke.SmokeCase(model="digits", version=2, signatures=["serving_default"], input_key="pixels",
                           output_key="probabilities", rows=[[float(i)] * 64 for i in range(len(labels))],
                           expected_labels=labels, max_error_rate=0.05)


def test_measure_sends_each_example_to_both_sides_alternately_and_scores_it():
    labels = [0, 1, 2, 3]
    case = digits_case(labels)
    calls: list = []
    ticks = [0.0]
    canary = FakeClient("canary", lambda c: 9, calls, ticks, cost=0.2)  # always wrong, slow
    serving = FakeClient("serving", lambda c: c.expected_labels[0], calls, ticks, cost=0.01)
    got_canary, got_serving = gate.measure(case, canary, serving, canary_pod="c", serving_pod="s", rounds=2,
                                           timer=lambda: ticks[0])
    measured = calls[2 * gate.WARMUP_REQUESTS:]
    assert len(measured) == 2 * 2 * len(labels) and all(rows == 1 for _, rows in measured), "one example a request"
    assert [name for name, _ in measured[:4]] == ["canary", "serving", "serving", "canary"], "who goes first alternates"
    assert (got_canary.requests, got_canary.wrong, got_canary.error_rate) == (8, 8, 1.0)
    assert (got_serving.requests, got_serving.wrong) == (8, 0)
    assert got_serving.per_class == {"0": [2, 2], "1": [2, 2], "2": [2, 2], "3": [2, 2]}
    assert got_canary.p99_ms == pytest.approx(200.0) and got_serving.p99_ms == pytest.approx(10.0)


def test_measure_counts_failed_requests_and_works_without_a_serving_side():
    ticks = [0.0]
    down = FakeClient("canary", RuntimeError("connection reset"), [], ticks, cost=0.001)
    canary, serving = gate.measure(digits_case([4, 5]), down, None, canary_pod="c", rounds=1, timer=lambda: ticks[0])
    assert serving is None
    assert (canary.requests, canary.failed, canary.wrong) == (2, 2, 2)
    assert "connection reset" in canary.first_failure


def test_row_cases_split_exact_outputs_per_row():
    case = smoke.SmokeCase(model="half_plus_two", version=1, signatures=[], input_key="x", output_key="y",
                           rows=[[1.0], [2.0], [5.0]], expected_outputs=[2.5, 3.0, 4.5])
    rows = gate.row_cases(case)
    assert [(label, c.rows, c.expected_outputs) for label, c in rows] == [
        ("", [[1.0]], [2.5]), ("", [[2.0]], [3.0]), ("", [[5.0]], [4.5])]
    assert smoke.score(rows[1][1], [[3.0]])[0] and not smoke.score(rows[1][1], [[3.5]])[0]


# --------------------------------------------------------------------------------------------------------------
# The canary's manifests


def test_the_canary_is_never_selected_by_the_service_pdb_or_serving_deployment(cfg):
    api = render.select_api_versions(API_1_20.split())
    text = release.canary_manifests(cfg, artifacts(DIGEST_NEW, {"digits": [2]}), api)
    [canary] = [doc for doc in yaml.safe_load_all(text) if doc["kind"] == "Deployment"]
    served = render.render(cfg, artifacts(DIGEST_NEW, {"digits": [2]}), api)
    service = yaml.safe_load(served["20-service.yaml"])
    pdb = yaml.safe_load(served["30-pdb.yaml"])
    stable = yaml.safe_load(served["40-deployment.yaml"])
    pod_labels = canary["spec"]["template"]["metadata"]["labels"]

    def selects(selector: dict) -> bool:
        return all(pod_labels.get(key) == value for key, value in selector.items())

    assert canary["metadata"]["name"] == "tfship-serving-canary"
    assert not selects(service["spec"]["selector"])
    assert not selects(pdb["spec"]["selector"]["matchLabels"])
    assert not selects(stable["spec"]["selector"]["matchLabels"])
    assert selects(canary["spec"]["selector"]["matchLabels"])
    assert pod_labels[release.TRACK_LABEL] == "canary"
    assert canary["spec"]["replicas"] == cfg.release.canary_replicas
    assert canary["spec"]["template"]["spec"]["containers"][0]["image"] == f"{REPOSITORY}@{DIGEST_NEW}"
    assert stable["spec"]["selector"]["matchLabels"] == render.selector_labels(cfg), "serving selector unchanged"


def test_with_canary_traffic_the_canary_serves_prometheus_metrics(cfg):
    cfg.release.canary_traffic = True
    api = render.select_api_versions(API_1_20.split())
    docs = list(yaml.safe_load_all(release.canary_manifests(cfg, artifacts(DIGEST_NEW, {"digits": [2]}), api)))
    assert [doc["kind"] for doc in docs] == ["ConfigMap", "Deployment"]
    container = docs[1]["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][-1] == f"--monitoring_config_file={release.MONITORING_DIR}/{release.MONITORING_FILE}"
    assert "prometheus_config { enable: true" in docs[0]["data"][release.MONITORING_FILE]
    assert docs[0]["metadata"]["labels"]["app.kubernetes.io/name"] == "tfship-serving-canary", "deleted with it"


def test_request_counts_are_read_from_the_prometheus_text():
    text = ('# TYPE :tensorflow:serving:request_count counter\n'
            ':tensorflow:serving:request_count{model_name="digits",status="OK"} 40\n'
            ':tensorflow:serving:request_count{model_name="digits",status="INVALID_ARGUMENT"} 2\n')
    assert release.request_counts(text) == {"OK": 40, "INVALID_ARGUMENT": 2}
    check = release.observation_check({"OK": 10}, {"OK": 40, "INVALID_ARGUMENT": 2}, 60)
    assert not check.ok and check.line == "2 errors in 32 requests through the Service in 60s"
    assert release.observation_check({}, {"OK": 5}, 60).ok


# --------------------------------------------------------------------------------------------------------------
# The release against a fake cluster


def serving_deployment(digest: str, replicas: int = 3) -> dict:
    return {"kind": "Deployment", "metadata": {"name": "tfship-serving", "generation": 1, "annotations": {}},
            "spec": {"replicas": replicas,
                     "template": {"spec": {"containers": [{"name": "serving", "image": f"{REPOSITORY}@{digest}"}]}}},
            "status": {"observedGeneration": 1, "replicas": replicas, "readyReplicas": replicas}}


class FakeCluster(kubectl.Reads):
    """kubectl against a tiny in-memory cluster: the serving Deployment, applied manifests, deletions, and the
    history ConfigMap with real JSON merge-patch semantics."""

    def __init__(self, stable: dict | None):
        self.stable = stable
        self.applied: list[str] = []
        self.deleted: list[tuple[str, ...]] = []
        self.config_maps: dict[str, dict[str, str]] = {}
        self.events: list[str] = []

    def argv(self, *args: str) -> list[str]:
        return ["kubectl", *args]

    def run(self, *args: str, input: str | None = None, check: bool = True, timeout: float | None = None):
        verb = args[0]
        if verb == "api-versions":
            return self._ok(API_1_20)
        if verb == "get" and args[1] == "namespace":
            return self._ok("")
        if verb == "get" and args[1] == "deployment":
            return self._ok(json.dumps(self.stable) if self.stable else "")
        if verb == "apply":
            kinds = [doc["kind"] for doc in yaml.safe_load_all(input)]
            self.applied.append(input)
            self.events.append("apply " + ",".join(kinds))
            return self._ok("applied\n")
        if verb == "delete":
            self.deleted.append(args)
            self.events.append("delete canary" if "tfship-serving-canary" in " ".join(args) else "delete")
            return self._ok("")
        if verb == "get" and args[1] == "pods":
            return self._ok(json.dumps({"items": []}))
        if verb == "create":
            name = json.loads(input)["metadata"]["name"]
            if name in self.config_maps:
                return subprocess.CompletedProcess(["kubectl"], 1, "", f'configmaps "{name}" AlreadyExists')
            self.config_maps[name] = {}
            return self._ok("created")
        if verb == "patch" and args[1] == "configmap":
            data = self.config_maps[args[2]]
            for key, value in json.loads(args[args.index("-p") + 1])["data"].items():
                if value is None:
                    data.pop(key, None)
                else:
                    data[key] = value
            return self._ok("patched")
        if verb == "get" and args[1] == "configmap":
            data = self.config_maps.get(args[2])
            return self._ok(json.dumps({"data": data}) if data is not None else "")
        raise AssertionError(f"unexpected kubectl call {args}")

    @staticmethod
    def _ok(stdout: str) -> subprocess.CompletedProcess:
        return subprocess.CompletedProcess(["kubectl"], 0, stdout, "")


@pytest.fixture
def no_waiting(monkeypatch):
    """The canary becomes Ready at once; deploy.deploy is recorded instead of run."""
    deployed = []
    monkeypatch.setattr(rollout.App, "wait", lambda self, deadline, progress=None: {})

    def fake_deploy(config, replicas, *, target, clock, sleep, artifacts):
        target.events.append(f"deploy {replicas} of {artifacts.image('serving').digest}")
        deployed.append((replicas, artifacts.image("serving").digest))
        return deploy.DeployResult("shop", "tfship-serving", replicas, replicas, artifacts.image("serving").pinned_ref,
                                   "2", 1.0)

    monkeypatch.setattr(deploy, "deploy", fake_deploy)
    return deployed


def pods(config, kube) -> list[str]:
    return [f"{config.kubernetes.app}-abc"]


def gate_of(*checks: gate.Check):
    def run_gate(config, kube, ports, cases, serving_pod, canary_pod):
        assert ports == (8500, 8501)
        run_gate.seen = (serving_pod, canary_pod)
        return gate.GateResult(checks=list(checks),
                               sides={"digits": {"canary": side(canary_pod), "serving": side(serving_pod or "")}})
    return run_gate


def test_a_rejected_release_never_touches_the_serving_deployment(cfg, no_waiting):
    fake = FakeCluster(serving_deployment(DIGEST_OLD))
    bad = gate.Check("digits", "error rate", False, "error rate 0.88 vs 0.02 serving, limit +0.02", 0.88, 0.02)
    runner = gate_of(bad)
    with pytest.raises(release.ReleaseRejected) as rejected:
        release.release(cfg, target=fake, gate_runner=runner, ready_pods=pods)
    line = rejected.value.one_line()
    assert "rejected, digits: error rate 0.88 vs 0.02 serving, limit +0.02" in line
    assert DIGEST_OLD[:19] in line, "says what still serves"
    assert runner.seen == ("tfship-serving-abc", "tfship-serving-canary-abc")
    assert not no_waiting, "no rollout of the serving Deployment"
    assert all("name: tfship-serving\n" not in text or "kind: Namespace" in text for text in fake.applied)
    assert fake.events[-1] == "delete canary"
    [record] = history.load(cfg, fake)
    assert (record.outcome, record.digest, record.previous, record.artifacts) == ("rejected", DIGEST_NEW,
                                                                                  DIGEST_OLD, {})
    assert "error rate 0.88 vs 0.02" in record.reason


def test_a_promoted_release_rolls_the_serving_deployment_then_deletes_the_canary(cfg, no_waiting):
    fake = FakeCluster(serving_deployment(DIGEST_OLD, replicas=2))
    good = gate.Check("digits", "error rate", True, "error rate 0.02 vs 0.02 serving, limit +0.02", 0.02, 0.02)
    result = release.release(cfg, target=fake, gate_runner=gate_of(good), ready_pods=pods)
    assert result.outcome == "promoted"
    assert no_waiting == [(2, DIGEST_NEW)], "as many replicas as served before"
    canary_applied = fake.events.index("apply Deployment")
    assert fake.events.index(f"deploy 2 of {DIGEST_NEW}") > canary_applied
    assert fake.events[-1] == "delete canary", "the canary goes after the promotion"
    [record] = history.load(cfg, fake)
    assert record.outcome == "promoted" and record.release_artifacts().image("serving").digest == DIGEST_NEW
    assert "digits: error 0.00 vs 0.00, p99 10 vs 10 ms" in history.format_table([record])


def test_the_first_release_has_no_serving_replica_to_compare_with(cfg, no_waiting):
    fake = FakeCluster(None)
    runner = gate_of(gate.Check("digits", "error rate", True, "fine"))
    release.release(cfg, target=fake, gate_runner=runner, ready_pods=pods)
    assert runner.seen == (None, "tfship-serving-canary-abc")
    assert no_waiting == [(cfg.kubernetes.replicas, DIGEST_NEW)]
    assert fake.events[0] == "delete canary", "a leftover canary of a killed run goes first"
    assert fake.events[1] == "apply Namespace"


def test_a_canary_that_never_becomes_ready_is_rejected_with_the_cause(cfg, no_waiting, monkeypatch):
    def crash(app, deadline, progress=None):
        assert app.name == "tfship-serving-canary"
        raise deploy.RolloutFailed("pod tfship-serving-canary-x keeps crashing, CrashLoopBackOff (Error, exit code 1)",
                                   "fix the image")

    monkeypatch.setattr(rollout.App, "wait", crash)
    fake = FakeCluster(serving_deployment(DIGEST_OLD))
    with pytest.raises(release.ReleaseRejected, match="never became Ready: pod tfship-serving-canary-x keeps crashing"):
        release.release(cfg, target=fake, gate_runner=gate_of(), ready_pods=pods)
    assert not no_waiting
    assert fake.events[-1] == "delete canary"
    assert history.load(cfg, fake)[0].outcome == "rejected"


def test_an_interrupt_during_the_gate_still_deletes_the_canary(cfg, no_waiting):
    fake = FakeCluster(serving_deployment(DIGEST_OLD))

    def interrupted(config, kube, ports, cases, serving_pod, canary_pod):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        release.release(cfg, target=fake, gate_runner=interrupted, ready_pods=pods)
    assert fake.events[-1] == "delete canary"
    assert not no_waiting and history.load(cfg, fake) == []


def test_releasing_what_already_serves_changes_nothing(cfg, no_waiting):
    fake = FakeCluster(serving_deployment(DIGEST_NEW))
    result = release.release(cfg, target=fake, gate_runner=gate_of(), ready_pods=pods)
    assert result.outcome == "unchanged" and not fake.events


# --------------------------------------------------------------------------------------------------------------
# History


def test_history_keeps_the_newest_records_up_to_the_limit(cfg):
    cfg.release.history_limit = 3
    fake = FakeCluster(None)
    start = datetime.datetime(2026, 11, 25, 13, 0, tzinfo=datetime.timezone.utc)
    for minute in range(5):
        digest = "sha256:" + f"{minute:02d}" * 32
        history.append(cfg, fake, history.new_record("promoted", artifacts(digest, {"digits": [minute + 1]}),
                                                     now=start + datetime.timedelta(minutes=minute)))
    records = history.load(cfg, fake)
    assert [r.models["digits"] for r in records] == [[3], [4], [5]], "oldest first, the two oldest dropped"
    assert records[0].id == "20261125T130200Z-020202020202"


def test_rollback_finds_a_promoted_release_and_refuses_a_rejected_one(cfg, no_waiting):
    fake = FakeCluster(serving_deployment(DIGEST_NEW, replicas=2))
    now = datetime.datetime(2026, 11, 25, 13, 0, tzinfo=datetime.timezone.utc)
    promoted = history.new_record("promoted", artifacts(DIGEST_OLD, {"digits": [1]}), now=now)
    rejected = history.new_record("rejected", artifacts("sha256:" + "0f" * 32, {"digits": [3]}),
                                  now=now + datetime.timedelta(minutes=1))
    for record in (promoted, rejected):
        history.append(cfg, fake, record)
    with pytest.raises(KubernetesError, match="was rejected, not promoted"):
        release.rollback_to(cfg, rejected.id, target=fake)
    deployed, record = release.rollback_to(cfg, promoted.id[:12], target=fake)
    assert no_waiting == [(2, DIGEST_OLD)]
    assert history.find(history.load(cfg, fake), promoted.id).release_artifacts().serving.model_name == "digits", \
        "the serving contract travels with the record: another machine can render it"
    assert (record.outcome, record.reason, record.previous) == ("rollback", f"back to release {promoted.id}",
                                                                DIGEST_NEW)
    with pytest.raises(KubernetesError, match="no release 'nope'"):
        release.rollback_to(cfg, "nope", target=fake)
    assert "rollback" in history.format_table(history.load(cfg, fake))


@pytest.mark.parametrize("serving, expected", [(None, "deploy"), (DIGEST_NEW, "deploy"), (DIGEST_OLD, "release")])
def test_up_releases_a_new_image_over_a_serving_one_and_deploys_otherwise(cfg, monkeypatch, serving, expected):
    fake = FakeCluster(serving_deployment(serving) if serving else None)
    used = []
    monkeypatch.setattr(deploy, "deploy", lambda config, **kw: used.append("deploy") or "deployed")
    monkeypatch.setattr(release, "release", lambda config, replicas, **kw: used.append("release") or
                        release.ReleaseResult("promoted", DIGEST_NEW, DIGEST_OLD, deployed="promoted"))
    release.deploy_or_release(cfg, target=fake)
    assert used == [expected]


def test_destroy_also_removes_a_canary_left_by_a_killed_release(cfg):
    fake = FakeCluster(serving_deployment(DIGEST_OLD))
    deploy.destroy(cfg, target=fake, clock=lambda: 0.0, sleep=lambda seconds: None)
    selectors = [args[args.index("-l") + 1] for args in fake.deleted]
    assert render.selector(release.canary_config(cfg)) in selectors
    assert render.owned_selector(cfg) in selectors
