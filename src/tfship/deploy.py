"""Deploy the rendered app to the cluster and watch it become Ready; status, rollback and destroy.

`deploy` applies the namespace first, then (for an authenticated registry) the pull Secret from credentials held
in memory, then the rest. It watches the rollout with bounded polling and fails fast with the reason: a pull error,
a crash loop with the container's last log lines, an unschedulable pod, or the progress deadline. On failure it
restores what was there before (the previous revision and replica count), unless asked to keep the failed one.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from tfship import artifacts as tfartifacts
from tfship import render
from tfship.config import Config
from tfship.errors import KubernetesError, RegistryError, TfshipError
from tfship.progress import say, step

REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
POLL_SECONDS = 2.0
LOG_LINES = 20
# Waiting reasons that will not fix themselves: fail the rollout at once.
PULL_FAILURES = frozenset({"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull"})
CONFIG_FAILURES = frozenset({"CreateContainerConfigError", "CreateContainerError", "RunContainerError"})
# Short timeout for each API call, so one hung request cannot outlive the rollout deadline.
REQUEST_TIMEOUT = "--request-timeout=20s"


class Kubectl(Protocol):
    """tfship.kubectl.kubectl: runs kubectl for the configured cluster and context."""

    def __call__(self, config: Config, *args: str, input: str | None = None, check: bool = True) -> Any: ...


def _default_kubectl() -> Kubectl:
    from tfship.kubectl import kubectl

    return kubectl


# --------------------------------------------------------------------------------------------------------------
# Results


@dataclass
class RenderResult:
    files: list[str]
    out_dir: str
    api_versions: render.ApiVersions
    source: str  # where the API versions came from

    def __str__(self) -> str:
        return (
            f"rendered {len(self.files)} manifests into {self.out_dir} ({', '.join(self.files)}); "
            f"PodDisruptionBudget {self.api_versions.pdb} ({self.source})"
        )


@dataclass
class DeployResult:
    namespace: str
    app: str
    ready: int
    replicas: int
    image: str
    revision: str
    seconds: float

    @classmethod
    def of(cls, config: Config, deployment: dict[str, Any], seconds: float) -> "DeployResult":
        """What a completed rollout of `deployment` serves."""
        return cls(
            namespace=config.kubernetes.namespace,
            app=config.kubernetes.app,
            ready=int(deployment.get("status", {}).get("readyReplicas", 0)),
            replicas=int(deployment.get("spec", {}).get("replicas", 0)),
            image=_container_image(deployment),
            revision=_revision(deployment),
            seconds=seconds,
        )

    @property
    def digest(self) -> str:
        return self.image.rpartition("@")[2]

    def __str__(self) -> str:
        return (
            f"{self.namespace}/{self.app}: {self.ready}/{self.replicas} replicas ready in {self.seconds:.1f}s, "
            f"revision {self.revision}, serving {self.digest} ({self.image})"
        )


@dataclass
class PodState:
    name: str
    ready: bool
    phase: str
    restarts: int
    reason: str  # waiting/terminated reason, if any


@dataclass
class AppStatus:
    namespace: str
    app: str
    replicas: int
    ready: int
    updated: int
    image: str
    revision: str
    models: str
    rollout: str
    pods: list[PodState] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [
            f"{self.namespace}/{self.app}: {self.ready}/{self.replicas} ready, revision {self.revision}, {self.rollout}",
            f"  image:  {self.image}",
            f"  models: {self.models}",
        ]
        for pod in self.pods:
            state = "Ready" if pod.ready else (pod.reason or pod.phase)
            lines.append(f"  pod {pod.name}: {state}, {pod.restarts} restarts")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------------
# Public entry points


def render_manifests(
    config: Config, replicas: int | None = None, *, offline: bool = False, kubectl: Kubectl | None = None
) -> RenderResult:
    """Render into build/k8s/ with the API versions of the configured cluster (or current ones offline or when
    the cluster does not answer, which it says)."""
    recorded = tfartifacts.load(config.artifacts_path)
    recorded.image("serving").pinned_ref  # nothing to render before a push: say so before asking the cluster
    served: list[str] | None = None
    source = "offline defaults"
    if not offline:
        try:
            served = served_api_versions(config, kubectl or _default_kubectl())
            source = "from the cluster"
        except TfshipError as error:
            say(f"    cluster not reachable, rendering for a current Kubernetes ({error.message})")
            source = "offline defaults: the cluster did not answer"
    rendered, api_versions = _render_and_write(config, recorded, served, replicas)
    return RenderResult(files=list(rendered), out_dir=str(render.output_dir(config)), api_versions=api_versions,
                        source=source)


def _render_and_write(config: Config, recorded: tfartifacts.Artifacts, served: list[str] | None,
                      replicas: int | None) -> tuple[dict[str, str], render.ApiVersions]:
    api_versions = render.select_api_versions(served)
    rendered = render.render(config, recorded, api_versions, replicas)
    render.write(rendered, render.output_dir(config))
    return rendered, api_versions


def deploy(
    config: Config,
    replicas: int | None = None,
    keep_failed: bool = False,
    *,
    kubectl: Kubectl | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    artifacts: tfartifacts.Artifacts | None = None,
) -> DeployResult:
    """Render, apply, and wait until `replicas` pods of the new version are Ready (see the module docstring).
    `artifacts` (default: build/artifacts.json) lets a release or a rollback deploy an image recorded elsewhere."""
    run = kubectl or _default_kubectl()
    kube = config.kubernetes
    replicas = kube.replicas if replicas is None else replicas
    started = clock()
    artifacts = artifacts or tfartifacts.load(config.artifacts_path)
    image = artifacts.image("serving").pinned_ref
    rendered, _ = _render_and_write(config, artifacts, served_api_versions(config, run), replicas)

    with step(f"Deploying {replicas} replicas of {image} to {kube.namespace}/{kube.app}") as progress:
        _wait_namespace_not_terminating(config, run, clock, sleep, progress)
        _apply(config, run, rendered[render.NAMESPACE_FILE], progress)
        if artifacts.registry_auth:
            _apply_pull_secret(config, run, artifacts.registry)
            progress.update(f"secret/{kube.pull_secret_name} applied (pull credentials for {artifacts.registry})")
        before = get_deployment(config, run)
        rest = [text for name, text in rendered.items() if name != render.NAMESPACE_FILE]
        _apply(config, run, "---\n".join(rest), progress)
        deadline = started + kube.rollout_timeout
        try:
            deployment = wait_for_rollout(config, run, deadline, clock=clock, sleep=sleep, progress=progress.update)
        except RolloutFailed as failure:
            raise _undo(config, run, failure, before, keep_failed, clock, sleep) from None
        result = DeployResult.of(config, deployment, clock() - started)
        progress.done(f"{result.ready}/{replicas} ready, serving {result.digest}")
    return result


def status(config: Config, *, kubectl: Kubectl | None = None) -> AppStatus:
    """What runs now: replicas, image, revision, rollout state and each pod."""
    run = kubectl or _default_kubectl()
    deployment = _require_deployment(config, run)
    pods = _items(run(config, "get", "pods", "-n", config.kubernetes.namespace, "-l", render.selector(config),
                      "-o", "json", REQUEST_TIMEOUT))
    spec_replicas = int(deployment.get("spec", {}).get("replicas", 0))
    deployment_status = deployment.get("status", {})
    return AppStatus(
        namespace=config.kubernetes.namespace,
        app=config.kubernetes.app,
        replicas=spec_replicas,
        ready=int(deployment_status.get("readyReplicas", 0)),
        updated=int(deployment_status.get("updatedReplicas", 0)),
        image=_container_image(deployment),
        revision=_revision(deployment),
        models=deployment.get("metadata", {}).get("annotations", {}).get(render.MODELS_ANNOTATION, "unknown"),
        rollout="rollout complete" if rollout_complete(deployment) else "rollout in progress",
        pods=[_pod_state(pod) for pod in sorted(pods, key=lambda p: p["metadata"]["name"])],
    )


def rollback(
    config: Config,
    *,
    kubectl: Kubectl | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> DeployResult:
    """Go back to the previous revision and wait until it is Ready."""
    run = kubectl or _default_kubectl()
    kube = config.kubernetes
    started = clock()
    current = _require_deployment(config, run)
    previous = previous_revision(config, run, _revision(current))
    if previous is None:
        raise KubernetesError(
            f"{kube.namespace}/{kube.app} has no previous revision to roll back to",
            "deploy another build first; `invoke status` shows what runs now",
        )
    with step(f"Rolling {kube.namespace}/{kube.app} back from revision {_revision(current)} to {previous}") as progress:
        run(config, "rollout", "undo", f"deployment/{kube.app}", "-n", kube.namespace, f"--to-revision={previous}")
        deadline = started + kube.rollout_timeout
        try:
            deployment = wait_for_rollout(config, run, deadline, clock=clock, sleep=sleep, progress=progress.update)
        except RolloutFailed as failure:
            raise KubernetesError(f"rollback of {kube.namespace}/{kube.app} failed: {failure}", failure.hint)
        result = DeployResult.of(config, deployment, clock() - started)
        progress.done(f"serving {result.digest}")
    return result


def destroy(
    config: Config,
    *,
    kubectl: Kubectl | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Delete the app's objects (found by its labels) and wait, bounded, until its pods are gone.
    The namespace stays: it may hold other things."""
    run = kubectl or _default_kubectl()
    kube = config.kubernetes
    with step(f"Deleting {kube.namespace}/{kube.app}") as progress:
        result = run(config, "delete", "deployment,replicaset,service,poddisruptionbudget,configmap,secret",
                     "-n", kube.namespace, "-l", render.selector(config), "--ignore-not-found", "--wait=false")
        deleted = [line for line in (result.stdout or "").splitlines()
                   if line.strip() and not line.startswith("No resources found")]
        for line in deleted:
            progress.update(line)
        deadline = clock() + kube.termination_grace + 60
        while True:
            pods = _items(run(config, "get", "pods", "-n", kube.namespace, "-l", render.selector(config),
                              "-o", "json", REQUEST_TIMEOUT))
            if not pods:
                break
            if clock() > deadline:
                raise KubernetesError(
                    f"{len(pods)} pods of {kube.namespace}/{kube.app} were still terminating after the grace period",
                    f"check them: kubectl get pods -n {kube.namespace}",
                )
            sleep(POLL_SECONDS)
        summary = f"deleted {len(deleted)} objects" if deleted else "nothing was deployed"
        progress.done(summary)
    return f"{kube.namespace}/{kube.app}: {summary}"


# --------------------------------------------------------------------------------------------------------------
# Cluster reads


def served_api_versions(config: Config, run: Kubectl) -> list[str]:
    result = run(config, "api-versions", REQUEST_TIMEOUT)
    return [line.strip() for line in (result.stdout or "").splitlines() if line.strip()]


def get_deployment(config: Config, run: Kubectl) -> dict[str, Any] | None:
    kube = config.kubernetes
    result = run(config, "get", "deployment", kube.app, "-n", kube.namespace, "-o", "json", "--ignore-not-found",
                 REQUEST_TIMEOUT)
    text = (result.stdout or "").strip()
    return json.loads(text) if text else None


def previous_revision(config: Config, run: Kubectl, current: str) -> str | None:
    """The newest revision older than `current`, from the app's ReplicaSets."""
    replica_sets = _items(run(config, "get", "replicasets", "-n", config.kubernetes.namespace,
                              "-l", render.selector(config), "-o", "json", REQUEST_TIMEOUT))
    revisions = sorted(
        int(revision)
        for rs in replica_sets
        if (revision := rs["metadata"].get("annotations", {}).get(REVISION_ANNOTATION, "")).isdigit()
    )
    older = [r for r in revisions if current.isdigit() and r < int(current)]
    return str(older[-1]) if older else None


def _require_deployment(config: Config, run: Kubectl) -> dict[str, Any]:
    deployment = get_deployment(config, run)
    if deployment is None:
        kube = config.kubernetes
        raise KubernetesError(f"{kube.namespace}/{kube.app} is not deployed", "run: invoke deploy")
    return deployment


def _items(result: Any) -> list[dict[str, Any]]:
    text = (result.stdout or "").strip()
    return json.loads(text).get("items", []) if text else []


def _revision(deployment: dict[str, Any] | None) -> str:
    if not deployment:
        return ""
    return deployment.get("metadata", {}).get("annotations", {}).get(REVISION_ANNOTATION, "")


def _container_image(deployment: dict[str, Any]) -> str:
    containers = deployment.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
    return containers[0].get("image", "") if containers else ""


# --------------------------------------------------------------------------------------------------------------
# Apply


def _apply(config: Config, run: Kubectl, manifests: str, progress: Any) -> None:
    result = run(config, "apply", "-f", "-", input=manifests)
    for line in (result.stdout or "").splitlines():
        progress.update(line)


def _wait_namespace_not_terminating(config: Config, run: Kubectl, clock: Callable[[], float],
                                    sleep: Callable[[float], None], progress: Any) -> None:
    """A namespace being deleted refuses new objects: wait (bounded) until it is gone, then it can be recreated."""
    namespace = config.kubernetes.namespace
    deadline = clock() + config.kubernetes.termination_grace + 90
    said = False
    while True:
        result = run(config, "get", "namespace", namespace, "-o", "json", "--ignore-not-found", REQUEST_TIMEOUT)
        text = (result.stdout or "").strip()
        if not text or json.loads(text).get("status", {}).get("phase") != "Terminating":
            return
        if not said:
            progress.update(f"namespace {namespace} is being deleted; waiting for it to go")
            said = True
        if clock() > deadline:
            raise KubernetesError(
                f"namespace {namespace} is still being deleted",
                f"wait for it (kubectl get namespace {namespace}) or deploy to another kubernetes.namespace",
            )
        sleep(POLL_SECONDS)


def _apply_pull_secret(config: Config, run: Kubectl, registry: str) -> None:
    from tfship.registry import credentials

    found = credentials(config)
    if not found:
        raise RegistryError(
            f"the registry {registry} needs credentials for the cluster's pull secret, and none were found",
            "set TFSHIP_REGISTRY_USERNAME and TFSHIP_REGISTRY_PASSWORD (or docker login to it), then deploy again",
        )
    username, password = found
    # Through stdin only: the password is never in argv, a file or a log line.
    run(config, "apply", "-f", "-", input=render.pull_secret(config, registry, username, password))


# --------------------------------------------------------------------------------------------------------------
# Watching a rollout


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
    revision = _revision(deployment)
    for rs in replica_sets:
        if rs["metadata"].get("annotations", {}).get(REVISION_ANNOTATION) == revision:
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
                return Problem("pull", name, container["name"], f"{reason}: {waiting.get('message', '')}".strip(": "))
            if reason == "CrashLoopBackOff":
                last = container.get("lastState", {}).get("terminated") or {}
                detail = f"{last.get('reason', 'exited')}, exit code {last.get('exitCode', '?')}"
                return Problem("crash", name, container["name"], f"CrashLoopBackOff ({detail})")
            if reason in CONFIG_FAILURES:
                return Problem("config", name, container["name"], f"{reason}: {waiting.get('message', '')}")
    return None


def wait_for_rollout(
    config: Config,
    run: Kubectl,
    deadline: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    progress: Callable[[str], None] = lambda line: None,
) -> dict[str, Any]:
    """Poll until the rollout completes; raise RolloutFailed at the first hopeless pod or at the deadline.
    The controller must have observed the applied spec first, or an old, complete status would count."""
    kube = config.kubernetes
    _wait_observed(config, run, deadline, clock, sleep)
    last_line = ""
    while True:
        objects = _items(run(config, "get", "deployments,replicasets,pods", "-n", kube.namespace,
                             "-l", render.selector(config), "-o", "json", REQUEST_TIMEOUT))
        deployment = next((o for o in objects if o.get("kind") == "Deployment"
                           and o["metadata"]["name"] == kube.app), None)
        if deployment is None:
            raise RolloutFailed(f"deployment {kube.namespace}/{kube.app} disappeared during the rollout",
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
        problem = diagnose(new_pods)
        if problem is not None:
            raise _explain(config, run, problem)
        stalled = deadline_exceeded(deployment)
        if stalled:
            raise RolloutFailed(
                f"rollout stalled: {stalled}{_probe_failure(config, run, new_pods)}",
                f"the new pods never became Ready; see: kubectl describe pods -n {kube.namespace} "
                f"-l {render.selector(config)}",
            )
        state = deployment.get("status", {})
        line = (f"{state.get('updatedReplicas', 0)} updated, {state.get('readyReplicas', 0)} ready of "
                f"{deployment.get('spec', {}).get('replicas', 0)}")
        if line != last_line:
            progress(line)
            last_line = line
        if clock() >= deadline:
            raise RolloutFailed(
                f"rollout not complete within kubernetes.rollout_timeout ({kube.rollout_timeout}s): {line}"
                f"{_probe_failure(config, run, new_pods)}",
                "raise kubernetes.rollout_timeout if the models load slowly, or look at: invoke status",
            )
        sleep(POLL_SECONDS)


def _wait_observed(config: Config, run: Kubectl, deadline: float, clock: Callable[[], float],
                   sleep: Callable[[float], None]) -> dict[str, Any]:
    """The deployment once the controller has seen the applied spec (its revision is then up to date)."""
    while True:
        deployment = get_deployment(config, run)
        if deployment is not None:
            generation = int(deployment.get("metadata", {}).get("generation", 0))
            if int(deployment.get("status", {}).get("observedGeneration", 0)) >= generation:
                return deployment
        if clock() >= deadline:
            raise RolloutFailed("the deployment controller did not pick up the new spec in time",
                                "is kube-controller-manager running? see: invoke cluster.status")
        sleep(0.5)


def _explain(config: Config, run: Kubectl, problem: Problem) -> RolloutFailed:
    """Turn a pod problem into a failure naming the cause: the pull error, the server's own last log lines."""
    namespace = config.kubernetes.namespace
    where = f"pod {problem.pod}"
    if problem.kind == "pull":
        detail = _pull_error(config, run, problem.pod) or problem.detail
        return RolloutFailed(
            f"{where} cannot pull its image: {detail}",
            "check that `invoke push` finished and that the node can reach and trust the registry "
            "(for an authenticated registry, that the pull secret's credentials are right)",
        )
    if problem.kind == "crash":
        lines = _last_log_lines(config, run, problem.pod, problem.container)
        # The server's own error, not the start-up chatter around it (TensorFlow logs plenty).
        errors = [line for line in lines if "error" in line.lower() or "fail" in line.lower()]
        shown = errors[-3:] or lines[-6:] or ["(no log output)"]
        return RolloutFailed(
            f"{where} keeps crashing, {problem.detail}; its last log lines: " + " | ".join(shown),
            f"fix the image (full log: kubectl logs {problem.pod} -n {namespace} --previous)",
        )
    if problem.kind == "unschedulable":
        return RolloutFailed(
            f"{where} cannot be scheduled: {problem.detail}",
            "lower kubernetes.resources requests or --replicas, or free capacity on the nodes",
        )
    return RolloutFailed(f"{where} cannot start: {problem.detail}", f"see: kubectl describe pod {problem.pod} -n {namespace}")


def _last_log_lines(config: Config, run: Kubectl, pod: str, container: str) -> list[str]:
    """The crashed container's last lines: the previous instance's, else (no restart recorded yet) the current's."""
    for previous in (["--previous"], []):
        logs = run(config, "logs", pod, "-c", container, "-n", config.kubernetes.namespace, *previous,
                   f"--tail={LOG_LINES}", REQUEST_TIMEOUT, check=False)
        lines = [line.strip() for line in (logs.stdout or "").splitlines() if line.strip()]
        if getattr(logs, "returncode", 0) == 0 and lines:
            return lines
    return []


def _pod_events(config: Config, run: Kubectl, pod: str) -> list[dict[str, Any]]:
    result = run(config, "get", "events", "-n", config.kubernetes.namespace,
                 "--field-selector", f"involvedObject.name={pod}", "-o", "json", REQUEST_TIMEOUT, check=False)
    if getattr(result, "returncode", 0) != 0:
        return []
    events = _items(result)
    return sorted(events, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")


def _pull_error(config: Config, run: Kubectl, pod: str) -> str:
    """The kubelet's own pull error: its "Failed to pull image" event (the waiting message and the later
    "Error: ImagePullBackOff" events only say that it is backing off)."""
    failed = [e.get("message", "") for e in _pod_events(config, run, pod) if e.get("reason") == "Failed"]
    detailed = [message for message in failed if message.startswith("Failed to pull image")]
    return (detailed or failed or [""])[-1]


def _probe_failure(config: Config, run: Kubectl, pods: list[dict[str, Any]]) -> str:
    for pod in pods:
        unhealthy = [e for e in _pod_events(config, run, pod["metadata"]["name"]) if e.get("reason") == "Unhealthy"]
        if unhealthy:
            return f"; last probe failure: {unhealthy[-1].get('message', '').strip()}"
    return ""


def _pod_state(pod: dict[str, Any]) -> PodState:
    statuses = pod.get("status", {}).get("containerStatuses", [])
    reason = ""
    for container in statuses:
        state = container.get("state", {})
        reason = (state.get("waiting") or state.get("terminated") or {}).get("reason", "") or reason
    return PodState(
        name=pod["metadata"]["name"],
        ready=bool(statuses) and all(c.get("ready") for c in statuses),
        phase=pod.get("status", {}).get("phase", ""),
        restarts=sum(int(c.get("restartCount", 0)) for c in statuses),
        reason="Terminating" if pod["metadata"].get("deletionTimestamp") else reason,
    )


# --------------------------------------------------------------------------------------------------------------
# Undo


def _undo(
    config: Config,
    run: Kubectl,
    failure: RolloutFailed,
    before: dict[str, Any] | None,
    keep_failed: bool,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> KubernetesError:
    """Restore the previous revision and replica count; the error to raise says what happened."""
    kube = config.kubernetes
    target = f"deployment/{kube.app}"
    message = f"deploy of {kube.namespace}/{kube.app} failed: {failure.reason}"
    if keep_failed:
        return KubernetesError(message + "; the failed rollout is left in place (--keep-failed)",
                               f"{failure.hint}; then: invoke rollback (or invoke destroy)")
    if before is None:
        return KubernetesError(message + "; there is no previous revision to roll back to, the failed one is left",
                               f"{failure.hint}; invoke destroy removes it")
    current = get_deployment(config, run)
    restored = []
    if current is not None and _revision(current) != _revision(before):
        run(config, "rollout", "undo", target, "-n", kube.namespace, f"--to-revision={_revision(before)}")
        restored.append(f"revision {_revision(before)}")
    previous_replicas = int(before.get("spec", {}).get("replicas", 0))
    if current is not None and int(current.get("spec", {}).get("replicas", 0)) != previous_replicas:
        run(config, "scale", target, "-n", kube.namespace, f"--replicas={previous_replicas}")
        restored.append(f"{previous_replicas} replicas")
    if not restored:
        return KubernetesError(message + "; nothing had changed to roll back", failure.hint)
    try:
        deadline = clock() + kube.rollout_timeout
        deployment = wait_for_rollout(config, run, deadline, clock=clock, sleep=sleep)
    except RolloutFailed as second:
        return KubernetesError(message + f"; rolling back to {' and '.join(restored)} failed too: {second.reason}",
                               second.hint)
    digest = _container_image(deployment).rpartition("@")[2]
    return KubernetesError(message + f"; rolled back to {' and '.join(restored)}, which is serving {digest}",
                           failure.hint)
