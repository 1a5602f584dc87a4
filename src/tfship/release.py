"""`invoke release`: a new serving image goes out only when the model itself is at least as good as what serves.

1. The new revision starts as a canary Deployment `<app>-canary` (release.canary_replicas, default 1). Its pods
   carry `app.kubernetes.io/name: <app>-canary`, so neither the Service, the PodDisruptionBudget nor the serving
   Deployment (all selecting `name: <app>`) ever picks them up; the serving Deployment's immutable selector is left
   exactly as it was. It also carries `tfship.io/track: canary`.
2. Once it is Ready: the smoke test against it through its own port-forward, then the quality gate (tfship.gate):
   the model's held-out sample sent to the canary and to one serving replica, compared on error rate, per-class
   accuracy and p99 latency. A canary that never becomes Ready (crash loop, pull error) is rejected with the cause.
3. Optionally (release.canary_traffic) the Service's selector is widened to every model-server pod of the project
   for release.observation_seconds, and the canary's Prometheus request counts must show no errors.
4. Promote: the serving Deployment rolls to the new image (deploy.deploy: maxUnavailable 0, rolled back on
   failure), then the canary goes. Reject: the canary goes, the serving Deployment is never touched, and the
   error names the failed check with both numbers.
The canary is deleted in a `finally`, so Ctrl-C and SIGTERM never leave it behind; a run killed outright leaves
one that the next release removes first. Every outcome is recorded in the cluster (tfship.history).
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from typing import Any, Callable

import yaml

from tfship import artifacts as tfartifacts
from tfship import cluster, deploy, gate, history, portforward, render, smoke
from tfship.config import Config
from tfship.errors import KubernetesError, TfshipError
from tfship.kubectl import REQUEST_TIMEOUT, Reads
from tfship.progress import say, step
from tfship.rollout import App, RolloutFailed, container_image

CANARY_SUFFIX = "-canary"
TRACK_LABEL = "tfship.io/track"
MONITORING_DIR = "/etc/tfship-monitoring"
MONITORING_FILE = "monitoring.config"
METRICS_PATH = "/monitoring/prometheus/metrics"
# While the canary takes traffic, the Service selects every model-server pod of the project (stable and canary).
OBSERVATION_SELECTOR_KEY = "app.kubernetes.io/component"

# (config, kubectl target, (grpc port, rest port), smoke cases, serving pod or None, canary pod) -> the gate's result
GateRunner = Callable[[Config, Reads, tuple[int, int], list, "str | None", str], gate.GateResult]


class ReleaseRejected(TfshipError):
    """The canary failed a check: nothing changed for the users; the error names the check and its numbers."""

    def __init__(self, result: "ReleaseResult"):
        failure = result.gate.failure if result.gate else None
        what = f"{failure.model}: {failure.line}" if failure and failure.model != "all" else (
            failure.line if failure else "the gate failed")
        super().__init__(f"release of {result.digest[:19]} rejected, {what}",
                         f"the serving version is untouched ({result.previous[:19] or 'nothing'}); "
                         "see the gate above and: invoke history")
        self.result = result


@dataclass
class ReleaseResult:
    outcome: str  # promoted, rejected, unchanged
    digest: str
    previous: str
    gate: gate.GateResult | None = None
    deployed: deploy.DeployResult | None = None
    record: history.Record | None = None

    def __str__(self) -> str:
        if self.outcome == "unchanged":
            return f"nothing to release: {self.digest} already serves"
        lines = [self.gate.table()] if self.gate else []
        if self.outcome == history.PROMOTED:
            lines.append(f"promoted: {self.deployed}")
        else:
            lines.append(f"{self.outcome}: {self.digest}")
        if self.record:
            lines.append(f"recorded as release {self.record.id}")
        return "\n".join(lines)


def canary_config(config: Config) -> Config:
    """The same config with the canary's app name: every label, name and selector derived from it differs."""
    canary = copy.deepcopy(config)
    canary.kubernetes.app = config.kubernetes.app + CANARY_SUFFIX
    return canary


def canary_manifests(config: Config, artifacts: tfartifacts.Artifacts, api_versions: render.ApiVersions) -> str:
    """The canary's Deployment (and its model ConfigMap, if any), rendered from the same templates as the serving
    app, labelled as the canary; with release.canary_traffic, also Prometheus metrics on."""
    canary = canary_config(config)
    rendered = render.render(canary, artifacts, api_versions, config.release.canary_replicas)
    documents = [yaml.safe_load(text) for text in rendered.values()]
    kept = [doc for doc in documents if doc["kind"] in ("ConfigMap", "Deployment")]
    extra = []
    for doc in kept:
        doc["metadata"]["labels"][TRACK_LABEL] = "canary"
        if doc["kind"] == "Deployment":
            doc["spec"]["template"]["metadata"]["labels"][TRACK_LABEL] = "canary"
            doc["spec"]["revisionHistoryLimit"] = 0
            if config.release.canary_traffic:
                extra.append(_with_metrics(canary, doc))
    # The monitoring ConfigMap goes first: the pod mounts it.
    return "---\n".join(render._dump(doc) for doc in extra + kept)


def _with_metrics(canary: Config, deployment: dict[str, Any]) -> dict[str, Any]:
    """Turn on the server's Prometheus endpoint (--monitoring_config_file, as TF Serving reads it); returns the
    ConfigMap holding that file."""
    name = f"{canary.kubernetes.app}-monitoring"
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    container["args"] = [*container.get("args", []), f"--monitoring_config_file={MONITORING_DIR}/{MONITORING_FILE}"]
    container.setdefault("volumeMounts", []).append({"name": "monitoring", "mountPath": MONITORING_DIR,
                                                     "readOnly": True})
    pod.setdefault("volumes", []).append({"name": "monitoring", "configMap": {"name": name}})
    return {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": canary.kubernetes.namespace,
                     "labels": {**deployment["metadata"]["labels"]}},
        "data": {MONITORING_FILE: f'prometheus_config {{ enable: true path: "{METRICS_PATH}" }}\n'},
    }


def delete_canary(config: Config, kube: Reads) -> list[str]:
    """Delete the canary's objects (found by its labels) without waiting for its pods to drain; what was deleted."""
    canary = canary_config(config)
    # Its labels and tfship's ownership labels, as destroy does: nothing someone else made is touched.
    owned = ",".join([render.selector(canary), *(f"{k}={v}" for k, v in render.ownership_labels(config).items())])
    result = kube.run("delete", "deployment,replicaset,configmap", "-n", config.kubernetes.namespace,
                      "-l", owned, "--ignore-not-found", "--wait=false", REQUEST_TIMEOUT)
    return [line for line in (result.stdout or "").splitlines() if line.strip()]


# --------------------------------------------------------------------------------------------------------------
# The release


def release(
    config: Config,
    replicas: int | None = None,
    *,
    force: bool = False,
    target: Reads | None = None,
    gate_runner: GateRunner | None = None,
    ready_pods: Callable[[Config, Reads], list[str]] = smoke.ready_pods,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> ReleaseResult:
    """Canary, smoke test and quality gate, then promote or reject (see the module docstring). Raises
    ReleaseRejected when a check fails; returns the promoted (or unchanged) result otherwise."""
    kube = target or cluster.target(config)
    settings = config.kubernetes
    artifacts = tfartifacts.load(config.artifacts_path)
    new_image = artifacts.image("serving").pinned_ref
    digest = artifacts.image("serving").digest
    cases = smoke.load_cases(config, artifacts)
    app = App.of(config, kube, clock, sleep)
    stable = app.deployment()
    serving_image = container_image(stable) if stable else ""
    previous = serving_image.rpartition("@")[2]
    if stable and serving_image == new_image and not force:
        return ReleaseResult("unchanged", digest, previous)
    if target is None:  # the real cluster: can its nodes pull from that registry? (as deploy asks)
        cluster.check_pull(config, new_image)
    if replicas is None:
        replicas = int(stable.get("spec", {}).get("replicas", settings.replicas)) if stable else settings.replicas
    api_versions = render.select_api_versions(render.served_api_versions(kube))
    canary = App.of(canary_config(config), kube, clock, sleep)
    recorded = artifacts.serving or tfartifacts.ServingRecord(model_name="")
    ports = (recorded.grpc_port, recorded.rest_port)
    result = ReleaseResult("rejected", digest, previous)
    observing = False
    with step(f"Releasing {digest[:19]} to {app.where} through a canary") as progress:
        try:
            for line in delete_canary(config, kube):
                progress.update(f"removed a leftover canary: {line}")
            namespace = app.wait_namespace_not_terminating(settings.termination_grace, progress.update)
            if namespace is None or render.owns(config, namespace):  # someone else's is used as it is (as deploy)
                deploy.apply(app, render.render(config, artifacts, api_versions, replicas)[render.NAMESPACE_FILE],
                              progress.update)
            if artifacts.registry_auth:
                deploy.apply_pull_secret(config, app, artifacts.registry)
            deploy.apply(app, canary_manifests(config, artifacts, api_versions), progress.update)
            try:
                canary.wait(clock() + config.release.canary_timeout, lambda line: progress.update(f"canary: {line}"))
            except RolloutFailed as failure:
                result.gate = gate.GateResult(checks=[gate.Check("all", "canary ready", False,
                                                                 f"the canary never became Ready: {failure.reason}")])
            else:
                canary_pods = ready_pods(canary_config(config), kube)
                if not canary_pods:
                    raise KubernetesError(f"the canary of {app.where} has no Ready pod",
                                          "see: kubectl get pods -l tfship.io/track=canary")
                canary_pod = canary_pods[0]
                serving_pods = ready_pods(config, kube) if stable else []
                progress.update(f"canary {canary_pod} Ready; gate against "
                                f"{serving_pods[0] if serving_pods else 'nothing serving (first release)'}")
                result.gate = (gate_runner or run_gate)(config, kube, ports, cases,
                                                        serving_pods[0] if serving_pods else None, canary_pod)
                if result.gate.ok and config.release.canary_traffic and stable:
                    observing = True
                    _canary_joins_service(config, kube, True)
                    result.gate.checks.append(observe(config, kube, ports[1], canary_pod, sleep=sleep,
                                                      progress=progress.update))
                    _canary_joins_service(config, kube, False)
                    observing = False
            for check in result.gate.checks:
                progress.update(f"{'ok' if check.ok else 'FAILED'}: {check.model} {check.name}: {check.line}")
            if not result.gate.ok:
                result.record = _record(config, kube, history.REJECTED, artifacts, result,
                                        reason=str(ReleaseRejected(result)))
                progress.done(f"rejected: {result.gate.failure.line}")
                raise ReleaseRejected(result)
            try:
                result.deployed = deploy.deploy(config, replicas, target=kube, clock=clock, sleep=sleep,
                                                artifacts=artifacts)
            except TfshipError as error:
                _record(config, kube, history.FAILED, artifacts, result, reason=error.message)
                raise
            result.outcome = history.PROMOTED
            result.record = _record(config, kube, history.PROMOTED, artifacts, result)
            progress.done(f"promoted: {result.deployed.ready}/{replicas} replicas serve {digest[:19]}")
        finally:
            _clean_up(config, kube, observing)
    return result


def _clean_up(config: Config, kube: Reads, observing: bool) -> None:
    """The Service back to the serving pods only, the canary deleted; a failure here is said, not raised over the
    error (or interrupt) that got us here."""
    try:
        if observing:
            _canary_joins_service(config, kube, False)
        delete_canary(config, kube)
    except TfshipError as error:
        say(f"    could not remove the canary: {error.message} (remove it: kubectl delete deployment "
            f"{config.kubernetes.app}{CANARY_SUFFIX} -n {config.kubernetes.namespace})")


def _record(config: Config, kube: Reads, outcome: str, artifacts: tfartifacts.Artifacts,
            result: ReleaseResult, reason: str = "") -> history.Record:
    record = history.new_record(outcome, artifacts, reason=reason, previous=result.previous,
                                gate=result.gate.summary() if result.gate else {})
    history.append(config, kube, record)
    return record


def run_gate(config: Config, kube: Reads, ports: tuple[int, int], cases: list[smoke.SmokeCase],
             serving_pod: str | None, canary_pod: str) -> gate.GateResult:
    """The smoke test on the canary, then the held-out sample on both sides, each through its own port-forward."""
    timeout = config.smoke.timeout
    namespace = config.kubernetes.namespace
    forwards: list[portforward.PortForward] = []
    clients: list[smoke.GrpcClient] = []
    try:
        canary_forward = portforward.PortForward(kube.argv(), namespace, canary_pod, ports)
        forwards.append(canary_forward)
        canary_forward.start()
        smoke_result = smoke.check_replica(canary_forward, cases, *ports, timeout=timeout,
                                           retries=config.smoke.retries)
        canary_client = smoke.GrpcClient(canary_forward.ports[ports[0]], timeout)
        clients.append(canary_client)
        serving_client = None
        if serving_pod:
            serving_forward = portforward.PortForward(kube.argv(), namespace, serving_pod, ports)
            forwards.append(serving_forward)
            serving_forward.start()
            serving_client = smoke.GrpcClient(serving_forward.ports[ports[0]], timeout)
            clients.append(serving_client)
        measured = {
            case.model: gate.measure(case, canary_client, serving_client, canary_pod=canary_pod,
                                     serving_pod=serving_pod or "", rounds=config.release.rounds)
            for case in gate.sample_cases(cases)
        }
    finally:
        for client in clients:
            client.close()
        for forward in forwards:
            forward.stop()
    return gate.judge(config, smoke_result, measured)


def deploy_or_release(config: Config, *, target: Reads | None = None) -> deploy.DeployResult:
    """`invoke up`'s deploy stage: the first deploy (or a re-apply of what already serves) goes straight out; a new
    image over a serving one goes through `release` (ReleaseRejected when the gate fails)."""
    kube = target or cluster.target(config)
    stable = App.of(config, kube).deployment()
    new_image = tfartifacts.load(config.artifacts_path).image("serving").pinned_ref
    if stable is None or container_image(stable) == new_image:
        return deploy.deploy(config, target=target)
    result = release(config, config.kubernetes.replicas, target=target)
    assert result.deployed is not None  # a release that returns was promoted
    return result.deployed


# --------------------------------------------------------------------------------------------------------------
# Observation window (release.canary_traffic)


def _canary_joins_service(config: Config, kube: Reads, joins: bool) -> None:
    """Widen the Service's selector to every model-server pod of the project (serving and canary), or put it back
    to the serving app's own labels. A merge patch: the Service is never deleted or recreated."""
    name_key = "app.kubernetes.io/name"
    selector = ({name_key: None, OBSERVATION_SELECTOR_KEY: "model-server"} if joins
                else {name_key: config.kubernetes.app, OBSERVATION_SELECTOR_KEY: None})
    kube.run("patch", "service", config.kubernetes.app, "-n", config.kubernetes.namespace, "--type", "merge",
             "-p", json.dumps({"spec": {"selector": selector}}))


def request_counts(metrics_text: str) -> dict[str, int]:
    """status -> requests, summed over models, from the server's Prometheus text (TF Serving's metric names)."""
    from prometheus_client.parser import text_string_to_metric_families

    counts: dict[str, int] = {}
    for family in text_string_to_metric_families(metrics_text):
        if family.name != ":tensorflow:serving:request_count":
            continue
        for sample in family.samples:  # the parser names counter samples <family>_total
            status = sample.labels.get("status", "")
            counts[status] = counts.get(status, 0) + int(sample.value)
    return counts


def observation_check(before: dict[str, int], after: dict[str, int], seconds: int) -> gate.Check:
    requests = {status: after.get(status, 0) - before.get(status, 0) for status in after}
    total = sum(requests.values())
    errors = total - requests.get("OK", 0)
    line = f"{errors} errors in {total} requests through the Service in {seconds}s"
    if not total:
        line += " (no traffic reached the canary)"
    return gate.Check("all", "canary traffic", errors == 0, line, float(errors), None)


def observe(config: Config, kube: Reads, rest_port: int, canary_pod: str, *,
            sleep: Callable[[float], None] = time.sleep, progress: Callable[[str], None] = say) -> gate.Check:
    """Let the Service send the canary its share for release.observation_seconds; its metrics must show no error."""
    import requests as http

    forward = portforward.PortForward(kube.argv(), config.kubernetes.namespace, canary_pod, [rest_port])
    try:
        forward.start()
        url = f"http://127.0.0.1:{forward.ports[rest_port]}{METRICS_PATH}"

        def scrape() -> dict[str, int]:
            response = http.get(url, timeout=config.smoke.timeout)
            if response.status_code != 200:
                raise KubernetesError(f"the canary's metrics at {METRICS_PATH} answered HTTP {response.status_code}",
                                      "the serving image must support --monitoring_config_file")
            return request_counts(response.text)

        before = scrape()
        progress(f"canary in the Service for {config.release.observation_seconds}s")
        sleep(config.release.observation_seconds)
        return observation_check(before, scrape(), config.release.observation_seconds)
    finally:
        forward.stop()


# --------------------------------------------------------------------------------------------------------------
# History and rollback


def releases(config: Config, *, target: Reads | None = None) -> list[history.Record]:
    return history.load(config, target or cluster.target(config))


def rollback_to(
    config: Config,
    release_id: str,
    replicas: int | None = None,
    *,
    target: Reads | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[deploy.DeployResult, history.Record]:
    """Serve an earlier promoted release again (its image and models, from the cluster's history, so any machine
    can do it), with the serving Deployment's rollout rules; recorded as a rollback."""
    kube = target or cluster.target(config)
    wanted = history.find(history.load(config, kube), release_id)
    artifacts = wanted.release_artifacts()
    stable = App.of(config, kube, clock, sleep).deployment()
    if replicas is None:
        replicas = int(stable.get("spec", {}).get("replicas", config.kubernetes.replicas)) if stable \
            else config.kubernetes.replicas
    previous = container_image(stable).rpartition("@")[2] if stable else ""
    # target as given: on the real cluster deploy also checks that the nodes can pull the image
    deployed = deploy.deploy(config, replicas, target=target, clock=clock, sleep=sleep, artifacts=artifacts)
    record = history.new_record(history.ROLLED_BACK, artifacts, previous=previous,
                                reason=f"back to release {wanted.id}")
    history.append(config, kube, record)
    return deployed, record
