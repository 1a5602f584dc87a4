"""Watching a rollout and explaining why it fails.

`App` is the serving app on one cluster: its kubectl target, namespace, name and label selector, and the clock it
waits with (unit tests pass a fake target and a fake clock). It polls, bounded, until the controller has seen the
applied spec and every replica of the new version is Ready, and stops at the first pod problem that waiting will
not fix: a pull error (with the kubelet's own message), a crash loop (with the server's last log lines), an
unschedulable pod, a container that cannot be created, or the progress deadline (with the last probe failure).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from tfship import render
from tfship.config import Config
from tfship.errors import KubernetesError
from tfship.kubectl import REQUEST_TIMEOUT, Reads

REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
POLL_SECONDS = 2.0
LOG_LINES = 20
# Waiting reasons that will not fix themselves: fail the rollout at once...
PULL_FAILURES = frozenset({"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull"})
# ...except a pull that may still work: the kubelet can pull before it may read a pull secret that was just
# created (the node authorizer learns of the new pod a moment later: "pulling ... without credentials"), then
# retries about 10 s later with it. A pull failure must last this long to fail the rollout.
PULL_PATIENCE_SECONDS = 30.0
PULL_FAILURES_AT_ONCE = frozenset({"InvalidImageName", "ErrImageNeverPull"})
CONFIG_FAILURES = frozenset({"CreateContainerConfigError", "CreateContainerError", "RunContainerError"})


class RolloutFailed(Exception):
    def __init__(self, reason: str, hint: str):
        super().__init__(reason)
        self.reason = reason
        self.hint = hint


@dataclass
class Problem:
    """Why a pod of the new version cannot become Ready."""

    kind: str  # pull, crash, config, unschedulable
    pod: str
    container: str
    detail: str
    may_pass: bool = False  # a pull failure that a retry can still fix (see PULL_PATIENCE_SECONDS)


@dataclass
class PullPatience:
    """Holds back a pull failure a retry may still fix (Problem.may_pass) until it has lasted PULL_PATIENCE_SECONDS
    for its pod; every other problem goes through at once. One per wait."""

    clock: Callable[[], float]
    failing_since: dict[str, float] = field(default_factory=dict)

    def hopeless(self, problem: Problem | None) -> Problem | None:
        if problem is None or not problem.may_pass:
            return problem
        now = self.clock()
        return None if now - self.failing_since.setdefault(problem.pod, now) < PULL_PATIENCE_SECONDS else problem


# --------------------------------------------------------------------------------------------------------------
# Reading objects (no cluster needed)


def revision(deployment: dict[str, Any] | None) -> str:
    if not deployment:
        return ""
    return deployment.get("metadata", {}).get("annotations", {}).get(REVISION_ANNOTATION, "")


def container_image(deployment: dict[str, Any]) -> str:
    containers = deployment.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
    return containers[0].get("image", "") if containers else ""


def rollout_complete(deployment: dict[str, Any]) -> bool:
    """kubectl rollout status's rule: the controller saw the spec, every replica is updated and available, and no
    old replica is left."""
    spec_replicas = int(deployment.get("spec", {}).get("replicas", 1))
    state = deployment.get("status", {})
    generation = int(deployment.get("metadata", {}).get("generation", 0))
    updated = int(state.get("updatedReplicas", 0))
    return (
        int(state.get("observedGeneration", 0)) >= generation
        and updated >= spec_replicas
        and int(state.get("replicas", 0)) == updated
        and int(state.get("availableReplicas", 0)) >= updated
        and int(state.get("readyReplicas", 0)) >= spec_replicas
    )


def deadline_exceeded(deployment: dict[str, Any]) -> str | None:
    for condition in deployment.get("status", {}).get("conditions", []):
        if condition.get("type") == "Progressing" and condition.get("reason") == "ProgressDeadlineExceeded":
            return condition.get("message", "progress deadline exceeded")
    return None


def new_pod_template_hash(deployment: dict[str, Any], replica_sets: list[dict[str, Any]]) -> str | None:
    """The pod-template-hash of the ReplicaSet at the deployment's current revision."""
    current = revision(deployment)
    for rs in replica_sets:
        if rs["metadata"].get("annotations", {}).get(REVISION_ANNOTATION) == current:
            return rs["metadata"].get("labels", {}).get("pod-template-hash")
    return None


def diagnose(pods: list[dict[str, Any]]) -> Problem | None:
    """The first pod problem that will not fix itself by waiting."""
    for pod in pods:
        name = pod["metadata"]["name"]
        for condition in pod.get("status", {}).get("conditions", []):
            if condition.get("type") == "PodScheduled" and condition.get("reason") == "Unschedulable":
                return Problem("unschedulable", name, "", condition.get("message", "no node fits the pod"))
        for container in pod.get("status", {}).get("containerStatuses", []):
            waiting = container.get("state", {}).get("waiting") or {}
            reason = waiting.get("reason", "")
            if reason in PULL_FAILURES:
                return Problem("pull", name, container["name"], f"{reason}: {waiting.get('message', '')}".strip(": "),
                               may_pass=reason not in PULL_FAILURES_AT_ONCE)
            if reason == "CrashLoopBackOff":
                last = container.get("lastState", {}).get("terminated") or {}
                detail = f"{last.get('reason', 'exited')}, exit code {last.get('exitCode', '?')}"
                return Problem("crash", name, container["name"], f"CrashLoopBackOff ({detail})")
            if reason in CONFIG_FAILURES:
                return Problem("config", name, container["name"], f"{reason}: {waiting.get('message', '')}")
    return None


# --------------------------------------------------------------------------------------------------------------
# The app on the cluster


@dataclass
class App:
    """The serving app on one cluster; every read, wait and diagnosis of a rollout goes through it."""

    kube: Reads  # a kubectl.Target (a fake in unit tests)
    namespace: str
    name: str
    selector: str  # `kubectl -l` argument picking the app's objects
    rollout_timeout: int = 300  # seconds (kubernetes.rollout_timeout), named when a wait runs out
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep

    @classmethod
    def of(cls, config: Config, kube: Reads, clock: Callable[[], float] = time.monotonic,
           sleep: Callable[[float], None] = time.sleep) -> "App":
        kube_config = config.kubernetes
        return cls(kube, kube_config.namespace, kube_config.app, render.selector(config), kube_config.rollout_timeout,
                   clock, sleep)

    @property
    def where(self) -> str:
        return f"{self.namespace}/{self.name}"

    def deployment(self) -> dict[str, Any] | None:
        return self.kube.json("get", "deployment", self.name, "-n", self.namespace, "--ignore-not-found",
                              REQUEST_TIMEOUT)

    def require_deployment(self) -> dict[str, Any]:
        found = self.deployment()
        if found is None:
            raise KubernetesError(f"{self.where} is not deployed", "run: invoke deploy")
        return found

    def labelled(self, kinds: str) -> list[dict[str, Any]]:
        """The app's objects of `kinds` (e.g. "pods", "deployments,replicasets,pods"), found by its labels."""
        return self.kube.items("get", kinds, "-n", self.namespace, "-l", self.selector, REQUEST_TIMEOUT)

    def previous_revision(self, current: str) -> str | None:
        """The newest revision older than `current`, from the app's ReplicaSets."""
        revisions = sorted(
            int(number)
            for rs in self.labelled("replicasets")
            if (number := rs["metadata"].get("annotations", {}).get(REVISION_ANNOTATION, "")).isdigit()
        )
        older = [r for r in revisions if current.isdigit() and r < int(current)]
        return str(older[-1]) if older else None

    def wait_namespace_not_terminating(self, grace: float, progress: Callable[[str], None]) -> dict[str, Any] | None:
        """A namespace being deleted refuses new objects: wait (bounded) until it is gone, then it can be
        recreated. Returns the namespace as last read (None: it does not exist)."""
        deadline = self.clock() + grace + 90
        said = False
        while True:
            namespace = self.kube.json("get", "namespace", self.namespace, "--ignore-not-found", REQUEST_TIMEOUT)
            if not namespace or namespace.get("status", {}).get("phase") != "Terminating":
                return namespace
            if not said:
                progress(f"namespace {self.namespace} is being deleted; waiting for it to go")
                said = True
            if self.clock() > deadline:
                raise KubernetesError(
                    f"namespace {self.namespace} is still being deleted",
                    f"wait for it (kubectl get namespace {self.namespace}) or deploy to another kubernetes.namespace",
                )
            self.sleep(POLL_SECONDS)

    def wait_pods_gone(self, timeout: float) -> None:
        deadline = self.clock() + timeout
        while True:
            pods = self.labelled("pods")
            if not pods:
                return
            if self.clock() > deadline:
                raise KubernetesError(
                    f"{len(pods)} pods of {self.where} were still terminating after the grace period",
                    f"check them: kubectl get pods -n {self.namespace}",
                )
            self.sleep(POLL_SECONDS)

    # ----------------------------------------------------------------------------------------------------------
    # Waiting for a rollout

    def wait(self, deadline: float, progress: Callable[[str], None] = lambda line: None) -> dict[str, Any]:
        """Poll until the rollout completes; raise RolloutFailed at the first hopeless pod or at the deadline.
        The controller must have observed the applied spec first, or an old, complete status would count."""
        self._wait_observed(deadline)
        last_line = ""
        patience = PullPatience(self.clock)
        while True:
            objects = self.labelled("deployments,replicasets,pods")
            deployment = next((o for o in objects if o.get("kind") == "Deployment"
                               and o["metadata"]["name"] == self.name), None)
            if deployment is None:
                raise RolloutFailed(f"deployment {self.where} disappeared during the rollout",
                                    "someone deleted it; deploy again")
            if rollout_complete(deployment):
                return deployment
            template_hash = new_pod_template_hash(deployment, [o for o in objects if o.get("kind") == "ReplicaSet"])
            new_pods = [
                o for o in objects
                if o.get("kind") == "Pod" and template_hash
                and o["metadata"].get("labels", {}).get("pod-template-hash") == template_hash
                and not o["metadata"].get("deletionTimestamp")
            ]
            problem = patience.hopeless(diagnose(new_pods))
            if problem is not None:
                raise self.explain(problem)
            stalled = deadline_exceeded(deployment)
            if stalled:
                raise RolloutFailed(
                    f"rollout stalled: {stalled}{self._probe_failure(new_pods)}",
                    f"the new pods never became Ready; see: kubectl describe pods -n {self.namespace} "
                    f"-l {self.selector}",
                )
            state = deployment.get("status", {})
            line = (f"{state.get('updatedReplicas', 0)} updated, {state.get('readyReplicas', 0)} ready of "
                    f"{deployment.get('spec', {}).get('replicas', 0)}")
            if line != last_line:
                progress(line)
                last_line = line
            if self.clock() >= deadline:
                raise RolloutFailed(
                    f"rollout not complete within kubernetes.rollout_timeout ({self.rollout_timeout}s): {line}"
                    f"{self._probe_failure(new_pods)}",
                    "raise kubernetes.rollout_timeout if the models load slowly, or look at: invoke status",
                )
            self.sleep(POLL_SECONDS)

    def _wait_observed(self, deadline: float) -> dict[str, Any]:
        """The deployment once the controller has seen the applied spec (its revision is then up to date)."""
        while True:
            deployment = self.deployment()
            if deployment is not None:
                generation = int(deployment.get("metadata", {}).get("generation", 0))
                if int(deployment.get("status", {}).get("observedGeneration", 0)) >= generation:
                    return deployment
            if self.clock() >= deadline:
                raise RolloutFailed("the deployment controller did not pick up the new spec in time",
                                    "is kube-controller-manager running? see: invoke cluster.status")
            self.sleep(0.5)

    # ----------------------------------------------------------------------------------------------------------
    # Diagnosis

    def explain(self, problem: Problem) -> RolloutFailed:
        """Turn a pod problem into a failure naming the cause: the pull error, the server's own last log lines."""
        where = f"pod {problem.pod}"
        if problem.kind == "pull":
            detail = self._pull_error(problem.pod) or problem.detail
            return RolloutFailed(
                f"{where} cannot pull its image: {detail}",
                "check that `invoke push` finished and that the node can reach and trust the registry "
                "(for an authenticated registry, that the pull secret's credentials are right)",
            )
        if problem.kind == "crash":
            lines = self._last_log_lines(problem.pod, problem.container)
            # The server's own error, not the start-up chatter around it (TensorFlow logs plenty).
            errors = [line for line in lines if "error" in line.lower() or "fail" in line.lower()]
            shown = errors[-3:] or lines[-6:] or ["(no log output)"]
            return RolloutFailed(
                f"{where} keeps crashing, {problem.detail}; its last log lines: " + " | ".join(shown),
                f"fix the image (full log: kubectl logs {problem.pod} -n {self.namespace} --previous)",
            )
        if problem.kind == "unschedulable":
            return RolloutFailed(
                f"{where} cannot be scheduled: {problem.detail}",
                "lower kubernetes.resources requests or --replicas, or free capacity on the nodes",
            )
        return RolloutFailed(f"{where} cannot start: {problem.detail}",
                             f"see: kubectl describe pod {problem.pod} -n {self.namespace}")

    def _last_log_lines(self, pod: str, container: str) -> list[str]:
        """The crashed container's last lines: the previous instance's, else (no restart recorded yet) the
        current's."""
        for previous in (["--previous"], []):
            logs = self.kube.run("logs", pod, "-c", container, "-n", self.namespace, *previous,
                                 f"--tail={LOG_LINES}", REQUEST_TIMEOUT, check=False)
            lines = [line.strip() for line in (logs.stdout or "").splitlines() if line.strip()]
            if getattr(logs, "returncode", 0) == 0 and lines:
                return lines
        return []

    def _pod_events(self, pod: str) -> list[dict[str, Any]]:
        events = self.kube.items("get", "events", "-n", self.namespace, "--field-selector",
                                 f"involvedObject.name={pod}", REQUEST_TIMEOUT, check=False)
        return sorted(events, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")

    def _pull_error(self, pod: str) -> str:
        """The kubelet's own pull error: its "Failed to pull image" event (the waiting message and the later
        "Error: ImagePullBackOff" events only say that it is backing off)."""
        failed = [e.get("message", "") for e in self._pod_events(pod) if e.get("reason") == "Failed"]
        detailed = [message for message in failed if message.startswith("Failed to pull image")]
        return (detailed or failed or [""])[-1]

    def _probe_failure(self, pods: list[dict[str, Any]]) -> str:
        for pod in pods:
            unhealthy = [e for e in self._pod_events(pod["metadata"]["name"]) if e.get("reason") == "Unhealthy"]
            if unhealthy:
                return f"; last probe failure: {unhealthy[-1].get('message', '').strip()}"
        return ""
