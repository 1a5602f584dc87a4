"""tfship-web in the pipeline: its image, its manifests, its rollout, its smoke check, and a port-forward to open it.

Each is one function the pipeline's stages call beside the model server's (build, render, deploy, smoke-test);
the web image is recorded in build/artifacts.json under the role "web", so push pushes it like the others.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass
from typing import Any, Mapping

from tfship import bases, images, models, render
from tfship.artifacts import Artifacts, ImageArtifact
from tfship.config import Config
from tfship.errors import KubernetesError, SmokeTestError
from tfship.kubectl import Reads

WEB_ROLE = "web"
WEB_PORT = 8080  # the container's port; the Service's too
WEB_REPLICAS = 1
SMOKE_IMAGES = 10  # held-out digits sent through the page's API
SMOKE_MIN_RIGHT = 8  # of SMOKE_IMAGES: the image conversion costs a few points of accuracy (94 % vs 97 %)
MANIFEST_FILES = {"50-web-service.yaml": "web-service.yaml", "60-web-deployment.yaml": "web-deployment.yaml"}


def web_name(config: Config) -> str:
    return f"{config.project}-web"


# --------------------------------------------------------------------------------------------------------------
# Build


def web_plan(config: Config, tf_ref: str, tf_id: str) -> images.ImagePlan:
    return images.ImagePlan(
        name=web_name(config),
        dockerfile=images.DOCKERFILES / "Dockerfile.web",
        parent_id=tf_id,
        files={"tfship.pth": images.DOCKERFILES / "tfship.pth", "src/tfship": images.SOURCE_DIR},
        # TensorFlow's venv is only where the stubs and protocol-buffer modules are copied from (see the Dockerfile)
        buildargs={"TF_IMAGE": tf_ref, "PYTHON_BASE": bases.python_base(config).ref,
                   "USER_ID": str(config.images.user)},
        private_inputs={"pip_index_url": config.base.pip_index_url},
        needs_pypi=True,
    )


def ensure_web_image(config: Config, nocache: bool = False) -> ImageArtifact:
    """The web image, built if its inputs changed; recorded in build/artifacts.json as role "web"."""
    tf_ref, tf_id = images.ensure_tf_image(config, nocache)
    plan = web_plan(config, tf_ref, tf_id)
    _, image_id, _ = images.ensure(plan, config, "web image", nocache)
    artifact = ImageArtifact(role=WEB_ROLE, name=plan.name, tag=plan.tag, image_id=image_id, user=config.images.user)
    images.record(config, artifact)
    return artifact


# --------------------------------------------------------------------------------------------------------------
# Render


def selector_labels(config: Config) -> dict[str, str]:
    return {"app.kubernetes.io/name": web_name(config), "app.kubernetes.io/instance": config.project}


def selector(config: Config) -> str:
    """The page's objects tfship made for this project, as a `kubectl -l` argument."""
    owned = {**selector_labels(config), **render.ownership_labels(config)}
    return ",".join(f"{key}={value}" for key, value in owned.items())


def render_web(config: Config, artifacts: Artifacts, api_versions: render.ApiVersions,
               service_type: str = "ClusterIP") -> dict[str, str]:
    """Manifest file name -> YAML for the web Service and Deployment (apply after the model server's, so the pods
    get the model Service's variables). Empty when no web image was built."""
    if WEB_ROLE not in artifacts.images:
        return {}
    context = _context(config, artifacts, api_versions, service_type)
    return {name: render._dump(render.fill(render.load_template(template), context))  # noqa: SLF001
            for name, template in MANIFEST_FILES.items()}


def _context(config: Config, artifacts: Artifacts, api_versions: render.ApiVersions,
             service_type: str) -> dict[str, Any]:
    web = artifacts.image(WEB_ROLE)
    if web.user <= 0:
        raise KubernetesError(f"the web image {web.local_ref} runs as user {web.user}, not a numeric non-root user",
                              "rebuild it; runAsNonRoot needs a numeric USER other than 0")
    if not artifacts.models:
        raise KubernetesError("build/artifacts.json records no models for the page to offer",
                              "run: invoke build --image serving")
    kube = config.kubernetes
    labels = {**selector_labels(config), "app.kubernetes.io/component": "web", **render.ownership_labels(config),
              "app.kubernetes.io/version": web.tag[:63]}
    return {
        "web_name": web_name(config),
        "namespace": kube.namespace,
        "labels": labels,
        "selector": selector_labels(config),
        "replicas": WEB_REPLICAS,
        # Ready only once the model server answers, whose own rollout may take a whole progress deadline.
        "progress_deadline": 2 * kube.progress_deadline,
        "termination_grace": kube.termination_grace,
        "image_pull_secrets": [{"name": kube.pull_secret_name}] if artifacts.registry_auth else None,
        "user": web.user,
        "image": web.pinned_ref,
        # The model Service by name: the pod reads its <NAME>_SERVICE_HOST/_PORT_GRPC variables.
        "args": [f"--model-service={kube.app}"],
        "env": [{"name": "TFSHIP_WEB_MODELS", "value": ",".join(artifacts.models)}],
        "web_port": WEB_PORT,
        "web_service_type": service_type,
        "deployment_api_version": api_versions.deployment,
    }


# --------------------------------------------------------------------------------------------------------------
# Deploy


def deploy_web(config: Config, rendered: Mapping[str, str], kube: Reads | None = None,
               timeout: float | None = None) -> str:
    """Apply the web manifests and wait for the web Deployment's rollout; a KubernetesError names what is wrong."""
    if not rendered:
        return "web: no web image built, nothing to deploy"
    kube = kube or _target(config)
    kube.run("apply", "-f", "-", input="---\n".join(rendered.values()))
    return wait_web(config, kube, timeout)


def wait_web(config: Config, kube: Reads, timeout: float | None = None) -> str:
    """Wait for the (applied) web Deployment's rollout."""
    wait = timeout or config.kubernetes.rollout_timeout
    name = web_name(config)
    try:
        kube.run("rollout", "status", f"deployment/{name}", "-n", config.kubernetes.namespace,
                 f"--timeout={wait:.0f}s", timeout=wait + 30)
    except KubernetesError as error:
        raise KubernetesError(f"the web Deployment {name} did not become ready: {error.message}",
                              f"kubectl -n {config.kubernetes.namespace} describe pods -l {selector(config)}; "
                              "its readiness probe needs the model server to answer")
    return f"web: deployment/{name} ready in namespace {config.kubernetes.namespace}"


def render_and_deploy(config: Config, service_type: str = "ClusterIP", kube: Reads | None = None) -> str:
    """Render the web manifests for the cluster's API versions (into build/k8s-web/) and deploy them."""
    from tfship import artifacts as store

    recorded = store.load(config.artifacts_path)
    if WEB_ROLE not in recorded.images:
        raise KubernetesError("build/artifacts.json records no web image", "run: invoke web.build && invoke push")
    kube = kube or _target(config)
    api_versions = render.select_api_versions(render.served_api_versions(kube))
    rendered = render_web(config, recorded, api_versions, service_type)
    render.write(rendered, config.build_path / "k8s-web")
    return deploy_web(config, rendered, kube)


def _target(config: Config) -> Reads:
    from tfship import cluster

    return cluster.target(config)


# --------------------------------------------------------------------------------------------------------------
# Open and smoke-test, through a port-forward to the web Service


def service_forward(config: Config, local_port: int = 0, kube: Reads | None = None):
    """A started `kubectl port-forward svc/<web> [LOCAL]:8080` on 127.0.0.1 (stop() it)."""
    from tfship.portforward import PortForward

    kube = kube or _target(config)
    forward = PortForward(kube.argv(), config.kubernetes.namespace, web_name(config), [WEB_PORT])
    # PortForward targets pods; the same command against the Service, which picks a Ready web pod.
    forward.command = [part.replace(f"pod/{web_name(config)}", f"svc/{web_name(config)}") for part in forward.command]
    if local_port:
        forward.command[-1] = f"{local_port}:{WEB_PORT}"
    return forward.start()


def node_port(config: Config, kube: Reads | None = None) -> int | None:
    """The web Service's NodePort, when it is exposed that way."""
    kube = kube or _target(config)
    namespace = config.kubernetes.namespace
    service = kube.json("get", "service", web_name(config), "-n", namespace, check=False)
    if service is None:
        raise KubernetesError(f"the web Service {web_name(config)} is not deployed in namespace {namespace}",
                              "run: invoke web.deploy (after invoke deploy)")
    ports = [p.get("nodePort") for p in service["spec"].get("ports", []) if p.get("nodePort")]
    return int(ports[0]) if ports else None


@dataclass
class WebSmoke:
    right: int
    sent: int
    replicas: set[str]
    version: int
    url: str

    @property
    def ok(self) -> bool:
        return self.right >= min(SMOKE_MIN_RIGHT, self.sent)

    def line(self) -> str:
        verdict = "ok" if self.ok else "FAILED"
        return (f"web {verdict}: {self.right}/{self.sent} uploaded digits classified right through {self.url} "
                f"(digits v{self.version}, answered by {', '.join(sorted(self.replicas))})")


def digit_pngs(config: Config, artifacts: Artifacts, count: int = SMOKE_IMAGES) -> tuple[list[bytes], list[str]]:
    """PNGs of held-out digits (dark ink on white, upscaled) and their labels, from the digits model's smoke sample
    at the newest version baked into the serving image."""
    import numpy as np
    from PIL import Image

    versions = artifacts.models.get("digits")
    if not versions:
        raise SmokeTestError("the serving image holds no digits model, so the web page has no known image to check",
                             "add the digits model to tfship.yaml, or skip the web check")
    version_dir = models.version_dirs(models.model_dir(config, "digits")).get(max(versions))
    if version_dir is None:
        raise SmokeTestError(f"models/digits/{max(versions)} is not on this machine", "run: invoke export")
    sample = models.load_smoke_sample(version_dir)
    pngs = []
    for row in sample["inputs"][:count]:
        ink = np.asarray(row, dtype=np.float32).reshape(8, 8) * 255 / 16
        image = Image.fromarray((255 - ink).astype(np.uint8), "L").resize((200, 200), Image.Resampling.NEAREST)
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        pngs.append(buffer.getvalue())
    return pngs, list(sample["expected_labels"][:count])


def smoke_web(config: Config, artifacts: Artifacts, timeout: float | None = None,
              kube: Reads | None = None) -> WebSmoke:
    """Upload held-out digits through the web Service (one port-forward) and count the right answers."""
    import requests

    pngs, labels = digit_pngs(config, artifacts)
    wait = timeout or config.smoke.timeout
    forward = service_forward(config, kube=kube)
    try:
        url = f"http://127.0.0.1:{forward.ports[WEB_PORT]}"
        result = WebSmoke(0, 0, set(), 0, url)
        for png, label in zip(pngs, labels):
            body = _classify(requests, url, png, wait)
            result.sent += 1
            result.right += body["classes"][0]["label"] == label
            result.replicas.add(body["replica"])
            result.version = body["version"]
        return result
    finally:
        forward.stop()


def page_ready(config: Config, kube: Reads | None = None) -> str:
    """The page's /readyz through the web Service: the classification models it offers; SmokeTestError if not ready."""
    import requests

    forward = service_forward(config, kube=kube)
    try:
        url = f"http://127.0.0.1:{forward.ports[WEB_PORT]}"
        body = _answer(requests, "get", f"{url}/readyz", timeout=config.smoke.timeout)
    finally:
        forward.stop()
    offered = ", ".join(body["classifiers"]) or "none"
    return f"web ok: the page at {url} reaches the model server (classifiers: {offered})"


def _classify(requests, url: str, png: bytes, timeout: float) -> dict:
    return _answer(requests, "post", f"{url}/api/classify", timeout, data={"model": "digits"},
                   files={"image": ("digit.png", png, "image/png")})


def _answer(requests, method: str, url: str, timeout: float, **body) -> dict:
    failure = None
    for _ in range(3):  # a fresh port-forward may drop the first connection
        try:
            response = requests.request(method, url, timeout=timeout, **body)
            break
        except requests.RequestException as error:
            failure = error
            time.sleep(1)
    else:
        raise SmokeTestError(f"the web Service did not answer: {failure}", "check it with: invoke status")
    if response.status_code != 200:
        try:
            detail = response.json()["error"]
        except (ValueError, KeyError):
            detail = response.text[:200]
        raise SmokeTestError(f"the web Service answered HTTP {response.status_code}: {detail}",
                             f"kubectl logs the web pod ({url})")
    return response.json()


def smoke_result(config: Config, artifacts: Artifacts, kube: Reads):
    """smoke_web as one more row of the smoke test's table (tfship.smoke.ReplicaResult); None without a web image."""
    from tfship.errors import TfshipError
    from tfship.smoke import Check, ReplicaResult

    if WEB_ROLE not in artifacts.images:
        return None
    row = f"svc/{web_name(config)}"
    if "digits" not in artifacts.models:  # no image with a known answer: the page must at least reach the models
        try:
            return ReplicaResult(pod=row, checks=[Check("web ready", True, page_ready(config, kube))])
        except TfshipError as error:
            return ReplicaResult(pod=row, checks=[Check("web ready", False, error.message)])
    try:
        result = smoke_web(config, artifacts, kube=kube)
    except TfshipError as error:
        return ReplicaResult(pod=row, checks=[Check("web upload", False, error.message)])
    rate = (result.sent - result.right) / result.sent if result.sent else 1.0
    return ReplicaResult(pod=row, checks=[Check("web upload", result.ok, result.line(), error_rate=rate)])
