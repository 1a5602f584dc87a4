"""Deploy the rendered app to the cluster; status, rollback and destroy.

`deploy` renders (render.py), applies the namespace first, then (for an authenticated registry) the pull Secret
from credentials held in memory, then the rest, and waits for the rollout (rollout.py), which fails fast with the
reason. On failure it restores what was there before (the previous revision and replica count), unless asked to
keep the failed one.

Every function takes an optional kubectl target (default: the configured cluster's, resolved once) and a clock;
unit tests pass fakes of both.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from tfship import artifacts as tfartifacts
from tfship import cluster, render
from tfship.config import Config
from tfship.errors import KubernetesError, RegistryError
from tfship.kubectl import REQUEST_TIMEOUT, Reads
from tfship.progress import say, step
from tfship.rollout import App, RolloutFailed, container_image, revision, rollout_complete
from tfship.web import stages as web_stages

Clock = Callable[[], float]
Sleep = Callable[[float], None]


# --------------------------------------------------------------------------------------------------------------
# Results


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
    def of(cls, app: App, deployment: dict[str, Any], seconds: float) -> "DeployResult":
        """What a completed rollout of `deployment` serves."""
        return cls(
            namespace=app.namespace,
            app=app.name,
            ready=int(deployment.get("status", {}).get("readyReplicas", 0)),
            replicas=int(deployment.get("spec", {}).get("replicas", 0)),
            image=container_image(deployment),
            revision=revision(deployment),
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

    @classmethod
    def of(cls, pod: dict[str, Any]) -> "PodState":
        statuses = pod.get("status", {}).get("containerStatuses", [])
        reason = ""
        for container in statuses:
            state = container.get("state", {})
            reason = (state.get("waiting") or state.get("terminated") or {}).get("reason", "") or reason
        return cls(
            name=pod["metadata"]["name"],
            ready=bool(statuses) and all(c.get("ready") for c in statuses),
            phase=pod.get("status", {}).get("phase", ""),
            restarts=sum(int(c.get("restartCount", 0)) for c in statuses),
            reason="Terminating" if pod["metadata"].get("deletionTimestamp") else reason,
        )


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


def _app(config: Config, target: Reads | None, clock: Clock = time.monotonic, sleep: Sleep = time.sleep) -> App:
    return App.of(config, target or cluster.target(config), clock, sleep)


# --------------------------------------------------------------------------------------------------------------
# Public entry points


def deploy(
    config: Config,
    replicas: int | None = None,
    keep_failed: bool = False,
    *,
    target: Reads | None = None,
    clock: Clock = time.monotonic,
    sleep: Sleep = time.sleep,
    artifacts: tfartifacts.Artifacts | None = None,
) -> DeployResult:
    """Render, apply, and wait until `replicas` pods of the new version are Ready (see the module docstring).
    `artifacts` (default: build/artifacts.json) lets a release or a rollback deploy an image recorded elsewhere."""
    # What to deploy first: a missing build or push is the user's next step, whatever the cluster's state.
    artifacts = artifacts or tfartifacts.load(config.artifacts_path)
    image = artifacts.image("serving").pinned_ref
    app = _app(config, target, clock, sleep)
    kube = config.kubernetes
    replicas = kube.replicas if replicas is None else replicas
    started = clock()
    if target is None:  # the real cluster (unit tests pass a fake): can its nodes pull from that registry?
        cluster.check_pull(config, image)
    rendered, _ = render.render_and_write(config, artifacts, render.served_api_versions(app.kube), replicas)

    with step(f"Deploying {replicas} replicas of {image} to {app.where}") as progress:
        namespace = app.wait_namespace_not_terminating(kube.termination_grace, progress.update)
        before = _claim(config, app)
        if namespace is None or render.owns(config, namespace):
            apply(app, rendered[render.NAMESPACE_FILE], progress.update)
        else:  # someone else's namespace: deploy into it, but never relabel (take over) or later delete it
            progress.update(f"namespace {app.namespace} is not tfship's ({render.owner_of(namespace)}): used as it is")
        if artifacts.registry_auth:
            apply_pull_secret(config, app, artifacts.registry)
            progress.update(f"secret/{kube.pull_secret_name} applied (pull credentials for {artifacts.registry})")
        rest = [text for name, text in rendered.items() if name != render.NAMESPACE_FILE]
        try:
            apply(app, "---\n".join(rest), progress.update)
            deployment = app.wait(started + kube.rollout_timeout, progress.update)
        except RolloutFailed as failure:
            raise _undo(app, failure, before, keep_failed) from None
        except (KeyboardInterrupt, KubernetesError) as stopped:
            # Ctrl-C, SIGTERM, or kubectl failing or timing out mid-watch: the rollout is not left half-done
            # silently; it is undone like a failed one (or kept, with one line, under --keep-failed).
            why = "interrupted" if isinstance(stopped, KeyboardInterrupt) else f"stopped ({stopped.message})"
            said = _undo_quietly(app, RolloutFailed(f"the rollout was {why} before it completed",
                                                    "run the deploy again"), before, keep_failed)
            if isinstance(stopped, KeyboardInterrupt):
                say(said.one_line())
                raise
            raise said from None
        result = DeployResult.of(app, deployment, clock() - started)
        if any(name in rendered for name in web_stages.MANIFEST_FILES):  # the page, once the model server serves
            progress.update(web_stages.wait_web(config, app.kube, max(1.0, started + kube.rollout_timeout - clock())))
        progress.done(f"{result.ready}/{replicas} ready, serving {result.digest}")
    return result


def status(config: Config, *, target: Reads | None = None) -> AppStatus:
    """What runs now: replicas, image, revision, rollout state and each pod."""
    app = _app(config, target)
    deployment = app.require_deployment()
    pods = app.labelled("pods")
    deployment_status = deployment.get("status", {})
    return AppStatus(
        namespace=app.namespace,
        app=app.name,
        replicas=int(deployment.get("spec", {}).get("replicas", 0)),
        ready=int(deployment_status.get("readyReplicas", 0)),
        updated=int(deployment_status.get("updatedReplicas", 0)),
        image=container_image(deployment),
        revision=revision(deployment),
        models=deployment.get("metadata", {}).get("annotations", {}).get(render.MODELS_ANNOTATION, "unknown"),
        rollout="rollout complete" if rollout_complete(deployment) else "rollout in progress",
        pods=[PodState.of(pod) for pod in sorted(pods, key=lambda p: p["metadata"]["name"])],
    )


def rollback(config: Config, *, target: Reads | None = None, clock: Clock = time.monotonic,
             sleep: Sleep = time.sleep) -> DeployResult:
    """Go back to the previous revision and wait until it is Ready."""
    app = _app(config, target, clock, sleep)
    started = clock()
    current = app.require_deployment()
    previous = app.previous_revision(revision(current))
    if previous is None:
        raise KubernetesError(
            f"{app.where} has no previous revision to roll back to",
            "deploy another build first; `invoke status` shows what runs now",
        )
    with step(f"Rolling {app.where} back from revision {revision(current)} to {previous}") as progress:
        app.kube.run("rollout", "undo", f"deployment/{app.name}", "-n", app.namespace, f"--to-revision={previous}")
        try:
            deployment = app.wait(started + app.rollout_timeout, progress.update)
        except RolloutFailed as failure:
            raise KubernetesError(f"rollback of {app.where} failed: {failure}", failure.hint)
        result = DeployResult.of(app, deployment, clock() - started)
        progress.done(f"serving {result.digest}")
    return result


def destroy(config: Config, *, target: Reads | None = None, clock: Clock = time.monotonic,
            sleep: Sleep = time.sleep) -> str:
    """Delete the app's objects (found by its labels and tfship's ownership labels: nothing else) and wait, bounded,
    until its pods are gone; then the namespace, when tfship created it and nothing else is left in it."""
    app = _app(config, target, clock, sleep)
    with step(f"Deleting {app.where}") as progress:
        deleted = []
        for kinds, selector in (("deployment,replicaset,service,poddisruptionbudget,configmap,secret",
                                 render.owned_selector(config)),
                                ("deployment,replicaset,service", web_stages.selector(config))):  # and the page's
            result = app.kube.run("delete", kinds, "-n", app.namespace, "-l", selector, "--ignore-not-found",
                                  "--wait=false")
            deleted += [line for line in (result.stdout or "").splitlines()
                        if line.strip() and not line.startswith("No resources found")]
        from tfship.release import delete_canary  # a release's canary (left by a killed run) has its own labels

        deleted += [line for line in delete_canary(config, app.kube) if not line.startswith("No resources found")]
        for line in deleted:
            progress.update(line)
        app.wait_pods_gone(config.kubernetes.termination_grace + 60)
        deleted += _delete_namespace_if_ours(config, app)
        summary = f"deleted {len(deleted)} objects" if deleted else "nothing was deployed"
        progress.done(summary)
    return f"{app.where}: {summary}"


def _delete_namespace_if_ours(config: Config, app: App) -> list[str]:
    namespace = app.kube.json("get", "namespace", app.namespace, "--ignore-not-found", REQUEST_TIMEOUT)
    if namespace is None or not render.owns(config, namespace):
        return []
    left = app.kube.run("get", "deployments,services,configmaps,secrets,jobs", "-n", app.namespace, "-o", "name",
                        REQUEST_TIMEOUT).stdout.split()
    # The service-account token and root CA config map are the cluster's own, in every namespace.
    left = [name for name in left if not name.startswith(("secret/default-token-", "configmap/kube-root-ca.crt"))]
    if left:
        say(f"namespace {app.namespace} is tfship's but still holds {', '.join(left[:3])}: left in place")
        return []
    result = app.kube.run("delete", "namespace", app.namespace, "--wait=false")
    return [line for line in (result.stdout or "").splitlines() if line.strip()]


# --------------------------------------------------------------------------------------------------------------
# Apply and undo


def _claim(config: Config, app: App) -> dict[str, Any] | None:
    """The app's Deployment as it is before this deploy; refused, before anything is applied, when it exists and is
    not this project's (tfship never takes over what it did not make)."""
    existing = app.deployment()
    if existing is not None and not render.owns(config, existing):
        raise KubernetesError(
            f"deployment {app.namespace}/{app.name} exists and is not tfship's for project {config.project} "
            f"({render.owner_of(existing)})",
            f"deploy under another name (kubernetes.app) or namespace, or remove it yourself: "
            f"kubectl delete deployment {app.name} -n {app.namespace}")
    return existing


def apply(app: App, manifests: str, progress: Callable[[str], None]) -> None:
    result = app.kube.run("apply", "-f", "-", input=manifests)
    for line in (result.stdout or "").splitlines():
        progress(line)


def apply_pull_secret(config: Config, app: App, registry: str) -> None:
    from tfship.registry import credentials

    found = credentials(config)
    if not found:
        raise RegistryError(
            f"the registry {registry} needs credentials for the cluster's pull secret, and none were found",
            "set TFSHIP_REGISTRY_USERNAME and TFSHIP_REGISTRY_PASSWORD (or docker login to it), then deploy again",
        )
    username, password = found
    # Through stdin only: the password is never in argv, a file or a log line.
    app.kube.run("apply", "-f", "-", input=render.pull_secret(config, registry, username, password))


def _undo_quietly(app: App, failure: RolloutFailed, before: dict[str, Any] | None,
                  keep_failed: bool) -> KubernetesError:
    """_undo, where the cluster may be the reason the rollout stopped: a failed undo is said, not raised."""
    try:
        return _undo(app, failure, before, keep_failed)
    except (KubernetesError, RolloutFailed) as undo_failed:
        reason = getattr(undo_failed, "message", None) or getattr(undo_failed, "reason", str(undo_failed))
        return KubernetesError(f"deploy of {app.where} stopped: {failure.reason}; rolling back failed too: {reason}",
                               "once the cluster answers: invoke rollback (or invoke status to see what runs)")


def _undo(app: App, failure: RolloutFailed, before: dict[str, Any] | None, keep_failed: bool) -> KubernetesError:
    """Restore the previous revision and replica count; the error to raise says what happened."""
    deployment_ref = f"deployment/{app.name}"
    message = f"deploy of {app.where} failed: {failure.reason}"
    if keep_failed:
        return KubernetesError(message + "; the failed rollout is left in place (--keep-failed)",
                               f"{failure.hint}; then: invoke rollback (or invoke destroy)")
    if before is None:
        return KubernetesError(message + "; there is no previous revision to roll back to, the failed one is left",
                               f"{failure.hint}; invoke destroy removes it")
    current = app.deployment()
    restored = []
    if current is not None and revision(current) != revision(before):
        app.kube.run("rollout", "undo", deployment_ref, "-n", app.namespace, f"--to-revision={revision(before)}")
        restored.append(f"revision {revision(before)}")
    previous_replicas = int(before.get("spec", {}).get("replicas", 0))
    if current is not None and int(current.get("spec", {}).get("replicas", 0)) != previous_replicas:
        app.kube.run("scale", deployment_ref, "-n", app.namespace, f"--replicas={previous_replicas}")
        restored.append(f"{previous_replicas} replicas")
    if not restored:
        return KubernetesError(message + "; nothing had changed to roll back", failure.hint)
    try:
        deployment = app.wait(app.clock() + app.rollout_timeout)
    except RolloutFailed as second:
        return KubernetesError(message + f"; rolling back to {' and '.join(restored)} failed too: {second.reason}",
                               second.hint)
    digest = container_image(deployment).rpartition("@")[2]
    return KubernetesError(message + f"; rolled back to {' and '.join(restored)}, which is serving {digest}",
                           failure.hint)

