"""Clients of a deployed model, always through its Service: `predict` and `evaluate`.

predict   one request, answered the way a person reads it: the top classes with their scores for a classifier,
          the outputs otherwise. An image file of any size and format (Pillow) becomes the model's input: grayscale,
          ink made bright (a light background is inverted), fitted into the model's image size, scaled to its
          pixel range (MNIST-like models through tfship.exporters.mnist.to_mnist). REST through
          `kubectl port-forward svc/APP` (kubectl then picks one of the Service's pods).
evaluate  TF Serving's mnist_client habit: the held-out images of the model's exporter, one gRPC Predict each, sent by
          `concurrency` workers with a channel each; prints `Inference error rate: X%`, requests/s, p50/p99 and the
          requests each replica answered (read from each pod's Prometheus metrics before and after, which needs
          serving.prometheus). Out of the cluster it goes to a NodePort/LoadBalancer address when the Service has
          one, else through a port-forward to the Service; `in_cluster` runs the same client
          (`python -m tfship.clients evaluate`) as a Kubernetes Job from the devel image against the Service's
          cluster address, read from the `<APP>_SERVICE_HOST`/`_PORT_GRPC` variables Kubernetes gives every pod
          (there is no cluster DNS here), streams its output and deletes the Job.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from tfship import models, service
from tfship.config import Config
from tfship.errors import ConfigError, KubernetesError, ModelError, TfshipError

REQUEST_TIMEOUT = 10.0
TOP_CLASSES = 3
EVALUATE_EXPORTERS = ("mnist", "digits")  # exporters whose held-out data evaluate can send
JOB_TEMPLATE = "evaluate-job.yaml"
JOB_TIMEOUT = 900.0
ERROR_RATE_LINE = re.compile(r"^Inference error rate: ([0-9.]+)%")


# --------------------------------------------------------------------------------------------------------------
# What a request to a model looks like


@dataclass
class ModelInput:
    """How to call a model, from its smoke sample (exporters' or generated)."""

    model: str
    signature: str
    input_key: str
    output_key: str
    width: int = 0  # features per row of a rank-2 input
    pixel_max: float = 1.0
    classifier: bool = False


def model_input(config: Config, model: str, version: int | None = None) -> ModelInput:
    config.model(model)  # an unknown model is a ConfigError naming the known ones
    found = models.version_dirs(models.model_dir(config, model))
    if not found:
        raise ModelError(f"{models.model_dir(config, model)} holds no versions", "run: invoke export or model.add")
    folder = found.get(version) if version is not None else found[max(found)]
    if folder is None:
        raise ModelError(f"model {model} has no version {version} on disk (it has {', '.join(map(str, found))})",
                         "give one of those with --version")
    sample = models.load_smoke_sample(folder)
    rows = sample["inputs"] if isinstance(sample["inputs"], list) else []
    width = len(rows[0]) if rows and isinstance(rows[0], list) and not isinstance(rows[0][0], list) else 0
    peak = max((max(row) for row in rows if isinstance(row, list) and row and not isinstance(row[0], list)),
               default=1.0)
    pixel_max = float(sample.get("pixel_max") or next(m for m in (1.0, 16.0, 255.0, float(peak)) if peak <= m))
    return ModelInput(model=model, signature=sample["signature"], input_key=sample["input_key"],
                      output_key=sample["output_key"], width=width, pixel_max=pixel_max,
                      classifier="expected_labels" in sample)


def image_rows(path: Path | str, spec: ModelInput) -> list[list[float]]:
    """An image file as one input row for `spec`'s model (see the module docstring)."""
    import numpy as np
    from PIL import Image, ImageOps, UnidentifiedImageError

    from tfship.exporters import mnist

    source = Path(path)
    side = int(round(spec.width ** 0.5))
    if not spec.width or side * side != spec.width:
        raise ModelError(f"model {spec.model} takes {spec.width or 'non-flat'} features per row, not a square image",
                         "send its input as JSON: invoke predict --model M --input '[[...]]'")
    try:
        with Image.open(source) as opened:
            gray = ImageOps.grayscale(ImageOps.exif_transpose(opened).convert("RGBA").convert("RGB"))
    except FileNotFoundError:
        raise TfshipError(f"{source} does not exist", "give the path of an image file")
    except (UnidentifiedImageError, OSError) as error:
        raise TfshipError(f"{source} is not an image Pillow can read ({error})", "give a PNG, JPEG, GIF, BMP... file")
    pixels = np.asarray(gray, dtype=np.float64)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    if border.mean() > 127:  # dark ink on a light background: models expect bright ink on black
        pixels = 255.0 - pixels
    ink = Image.fromarray(pixels.astype(np.uint8))
    box = ink.point(lambda v: 255 if v > 255 * mnist.INK_THRESHOLD else 0).getbbox()
    if box is None:
        raise TfshipError(f"{source} is blank (no ink found)", "give an image with a digit on it")
    ink = ink.crop(box)
    if side == mnist.SIDE:  # MNIST's layout: fitted into 20×20, centred in 28×28
        ink.thumbnail((mnist.BOX, mnist.BOX), Image.Resampling.LANCZOS)
        return [(mnist.to_mnist(np.asarray(ink)) * spec.pixel_max).tolist()]
    ink.thumbnail((side, side), Image.Resampling.LANCZOS)
    canvas = Image.new("L", (side, side))
    canvas.paste(ink, ((side - ink.width) // 2, (side - ink.height) // 2))
    scaled = np.asarray(canvas, dtype=np.float64) / 255.0 * spec.pixel_max
    return [np.round(scaled.reshape(-1), 4).tolist()]


def parse_input_json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as error:
        raise TfshipError(f"--input is not valid JSON ({error})", "give rows, e.g. --input '[[1.0, 2.0]]'")


def format_answer(outputs: Any, spec: ModelInput, top: int = TOP_CLASSES) -> str:
    """Top classes with scores for one row of a classifier's scores; the raw outputs otherwise."""
    import numpy as np

    values = outputs.get(spec.output_key) if isinstance(outputs, dict) else outputs
    scores = np.asarray(values, dtype=float) if values is not None else None
    if spec.classifier and scores is not None and scores.ndim == 2:
        lines = []
        for number, row in enumerate(scores):
            best = np.argsort(row)[::-1][:top]
            ranked = ", ".join(f"{index}: {row[index]:.4f}" for index in best)
            lines.append(f"{'row ' + str(number) + ': ' if len(scores) > 1 else ''}class {best[0]} "
                         f"(top {len(best)}: {ranked})")
        return "\n".join(lines)
    return json.dumps(outputs)


# --------------------------------------------------------------------------------------------------------------
# predict


def predict(config: Config, model: str, *, image: str | None = None, input_json: str | None = None,
            version: int | str | None = None) -> str:
    """One request through the Service; the answer as text."""
    import requests

    if bool(image) == bool(input_json):
        raise TfshipError("give exactly one of --image FILE and --input JSON", "e.g. invoke predict --model mnist "
                          "--image digit.png")
    version = models.parse_version(version)
    spec = model_input(config, model, version)
    rows = image_rows(image, spec) if image else parse_input_json(input_json)
    body = {"signature_name": spec.signature}
    body.update({"inputs": rows} if isinstance(rows, dict) else {"inputs": {spec.input_key: rows}})
    path = f"/v1/models/{model}" + (f"/versions/{version}" if version is not None else "") + ":predict"
    with service_forward(config, [config.serving.rest_port]) as ports:
        try:
            answer = requests.post(f"http://127.0.0.1:{ports[config.serving.rest_port]}{path}", json=body,
                                   timeout=REQUEST_TIMEOUT)
        except requests.RequestException as error:
            raise KubernetesError(f"no answer through the Service port-forward: {error}",
                                  "check the pods with: invoke status")
    if answer.status_code != 200:
        detail = answer.json().get("error", answer.text) if answer.headers.get("content-type", "").startswith(
            "application/json") else answer.text
        raise TfshipError(f"{model} answered HTTP {answer.status_code}: {str(detail)[:300]}",
                          "check the input's shape and the signature with: curl .../v1/models/M/metadata")
    return format_answer(answer.json()["outputs"], spec)


class service_forward:
    """`kubectl port-forward svc/APP` for the given container ports; yields container port -> local port."""

    def __init__(self, config: Config, ports: Sequence[int]):
        from tfship import cluster, portforward

        self.forward = portforward.PortForward(cluster.target(config).argv(), config.kubernetes.namespace,
                                         config.kubernetes.app, ports, kind="svc")

    def __enter__(self) -> dict[int, int]:
        return self.forward.start().ports

    def __exit__(self, *exc_info) -> None:
        self.forward.stop()


# --------------------------------------------------------------------------------------------------------------
# evaluate: the client itself (on this machine, or in a pod)


@dataclass
class EvaluationReport:
    target: str
    num_tests: int
    concurrency: int
    images: int
    wrong: int = 0
    failed: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def error_rate(self) -> float:
        return (self.wrong + self.failed) / max(self.num_tests, 1)

    def lines(self, model: str, signature: str) -> list[str]:
        from tfship.smoke import percentile

        cycled = f" (the {self.images} held-out images, cycled)" if self.num_tests > self.images else ""
        lines = [
            f"Sent {self.num_tests} requests to {model} (signature {signature}) at {self.target}, "
            f"concurrency {self.concurrency}{cycled}",
            f"Inference error rate: {self.error_rate * 100:.1f}%",
            f"Requests/s: {self.num_tests / max(self.seconds, 1e-9):.1f}; latency "
            f"p50 {percentile(self.latencies_ms, 50):.1f} ms, p99 {percentile(self.latencies_ms, 99):.1f} ms; "
            f"failed requests: {self.failed}",
        ]
        if self.failures:
            lines.append(f"first failure: {self.failures[0]}")
        return lines


def _require_held_out_data(model: str, exporter: str) -> None:
    if exporter not in EVALUATE_EXPORTERS:
        raise ConfigError(f"evaluate needs a model exported by {' or '.join(EVALUATE_EXPORTERS)} (for its held-out "
                          f"data); {model}'s exporter is {exporter or 'none'}", "evaluate an mnist or digits model")


def held_out(exporter: str, seed: int):
    """(images, labels) the exporter held out of training."""
    from tfship.exporters import exporter as exporter_module

    return exporter_module(exporter).held_out(seed)


def run_evaluation(target: str, model: str, signature: str, input_key: str, output_key: str, images, labels,
                   *, num_tests: int, concurrency: int, timeout: float = REQUEST_TIMEOUT) -> EvaluationReport:
    """mnist_client's loop: one image per PredictRequest (tf.make_tensor_proto(image, shape=[1, size])), the argmax
    of outputs[output_key] against the label; `concurrency` workers, each with its own gRPC channel (kube-proxy
    balances connections, not requests)."""
    import grpc
    import numpy as np
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    if num_tests < 1 or concurrency < 1:
        raise TfshipError(f"--num-tests ({num_tests}) and --concurrency ({concurrency}) must be 1 or more",
                          "e.g. --num-tests 1000 --concurrency 4")
    report = EvaluationReport(target=target, num_tests=num_tests, concurrency=concurrency, images=len(images))
    lock = threading.Lock()
    local = threading.local()
    channels: list = []

    def stub():
        if not hasattr(local, "stub"):
            # A subchannel pool of its own: otherwise gRPC shares one connection among equal channels, and
            # every request would reach the same replica.
            channel = grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
            with lock:
                channels.append(channel)
            local.stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        return local.stub

    def one(index: int) -> None:
        image, label = images[index % len(images)], int(labels[index % len(labels)])
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model
        request.model_spec.signature_name = signature
        request.inputs[input_key].CopyFrom(tf.make_tensor_proto(image, shape=[1, image.size]))
        started = time.perf_counter()
        try:
            response = stub().Predict(request, timeout=timeout)
            scores = np.array(response.outputs[output_key].float_val)
            wrong = scores.size == 0 or int(np.argmax(scores)) != label
            with lock:
                report.latencies_ms.append((time.perf_counter() - started) * 1000)
                report.wrong += int(wrong)
        except grpc.RpcError as error:
            with lock:
                report.failed += 1
                report.failures.append(f"gRPC {error.code().name}: {error.details()}")

    started = time.perf_counter()
    try:
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            list(pool.map(one, range(num_tests)))
    finally:
        report.seconds = time.perf_counter() - started
        for channel in channels:
            channel.close()
    return report


# --------------------------------------------------------------------------------------------------------------
# evaluate: the task's side (where to send, in-cluster Job, per-replica counts)


@dataclass
class EvaluationPlan:
    model: str
    exporter: str
    seed: int
    signature: str
    input_key: str
    output_key: str

    def client_args(self, num_tests: int, concurrency: int) -> list[str]:
        return ["--model", self.model, "--exporter", self.exporter, "--seed", str(self.seed), "--signature",
                self.signature, "--input-key", self.input_key, "--output-key", self.output_key,
                "--num-tests", str(num_tests), "--concurrency", str(concurrency)]


def plan(config: Config, model: str) -> EvaluationPlan:
    spec = config.model(model)
    _require_held_out_data(model, spec.exporter)
    found = model_input(config, model)
    return EvaluationPlan(model, spec.exporter, spec.seed, found.signature, found.input_key, found.output_key)


def evaluate(config: Config, model: str, *, num_tests: int, concurrency: int, in_cluster: bool = False,
             out: Callable[[str], None] = print) -> float:
    """Run the evaluation through the Service, printing through `out`; returns the inference error rate."""
    how = plan(config, model)
    before = service.replica_counts(config, model)
    if in_cluster:
        error_rate = _evaluate_in_cluster(config, how, num_tests, concurrency, out)
    else:
        images, labels = held_out(how.exporter, how.seed)
        with _outside_target(config, out) as target:
            report = run_evaluation(target, model, how.signature, how.input_key, how.output_key, images, labels,
                                    num_tests=num_tests, concurrency=concurrency)
        for line in report.lines(model, how.signature):
            out(line)
        error_rate = report.error_rate
    out(service.format_replica_counts(before, service.replica_counts(config, model)))
    return error_rate


class _outside_target:
    """host:port of the Service's gRPC port from this machine: its node port / load balancer, else a port-forward."""

    def __init__(self, config: Config, out: Callable[[str], None]):
        self.config, self.out, self.forward = config, out, None

    def __enter__(self) -> str:
        exposed = service.service_address(self.config)
        if exposed.grpc_outside:
            return exposed.grpc_outside
        self.out("note: the Service has no node port; sending through kubectl port-forward svc/..., which picks one "
                 "pod (set kubernetes.service_type: NodePort, or use --in-cluster, to spread the load)")
        self.forward = service_forward(self.config, [self.config.serving.grpc_port])
        ports = self.forward.__enter__()
        return f"127.0.0.1:{ports[self.config.serving.grpc_port]}"

    def __exit__(self, *exc_info) -> None:
        if self.forward is not None:
            self.forward.__exit__(*exc_info)


def evaluate_job(config: Config, recorded, how: EvaluationPlan, name: str, num_tests: int,
                 concurrency: int) -> dict:
    """The Job running this module's client in the devel image, from k8s/evaluate-job.yaml."""
    from tfship import render

    devel = recorded.image("devel")
    kube = config.kubernetes
    # Not the serving selector's labels: the Service must never send traffic to this pod.
    labels = {"app.kubernetes.io/name": f"{kube.app}-evaluate", "app.kubernetes.io/instance": config.project,
              "app.kubernetes.io/component": "evaluate", "app.kubernetes.io/managed-by": render.MANAGED_BY}
    return render.fill(render.load_template(JOB_TEMPLATE), {
        "name": name, "namespace": kube.namespace, "labels": labels, "image": devel.pinned_ref, "user": devel.user,
        "image_pull_secrets": [{"name": kube.pull_secret_name}] if recorded.registry_auth else None,
        "args": ["-m", "tfship.clients", "evaluate", "--service-env", service.service_env_prefix(kube.app),
                 *how.client_args(num_tests, concurrency)],
        "deadline": int(JOB_TIMEOUT),
    })


def _evaluate_in_cluster(config: Config, how: EvaluationPlan, num_tests: int, concurrency: int,
                         out: Callable[[str], None]) -> float:
    from tfship import artifacts as artifacts_store
    from tfship import cluster

    kube = config.kubernetes
    name = f"{kube.app}-evaluate-{uuid.uuid4().hex[:6]}"
    job = evaluate_job(config, artifacts_store.load(config.artifacts_path), how, name, num_tests, concurrency)
    cluster.target(config).run("apply", "-f", "-", input=json.dumps(job))
    error_rate: float | None = None
    try:
        _wait_job_started(config, name)
        lines: list[str] = []

        def relay(line: str) -> None:
            lines.append(line)
            out(line)

        from tfship.host import proc

        proc.run(cluster.target(config).argv("logs", "-f", "-n", kube.namespace, f"job/{name}"),
                 timeout=JOB_TIMEOUT, on_line=relay, check=False, error=KubernetesError)
        state = _wait_job_finished(config, name)
        if state != "Complete":
            raise KubernetesError(f"the evaluate Job {kube.namespace}/{name} failed: {' | '.join(lines[-3:])}",
                                  "see the lines above")
        for line in lines:
            match = ERROR_RATE_LINE.match(line)
            if match:
                error_rate = float(match.group(1)) / 100
    finally:
        cluster.target(config).run("delete", "job", "-n", kube.namespace, name, "--ignore-not-found", "--wait=false",
                        check=False)
    if error_rate is None:
        raise KubernetesError(f"the evaluate Job {name} printed no error rate", "see its output above")
    return error_rate


def _job_pods(config: Config, name: str) -> list[dict]:
    from tfship import cluster

    return json.loads(cluster.target(config).run("get", "pods", "-n", config.kubernetes.namespace, "-l",
                                      f"job-name={name}", "-o", "json").stdout)["items"]


def _wait_job_started(config: Config, name: str, timeout: float = 300.0, *,
                      pods: Callable[[], list[dict]] | None = None,
                      clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
    """Until the Job's pod runs (or already ended). A problem waiting will not fix fails at once; a pull failure
    only once it lasted rollout.PULL_PATIENCE_SECONDS (a just-created pull secret may miss the first pull)."""
    from tfship import rollout

    read = pods or (lambda: _job_pods(config, name))
    deadline = clock() + timeout
    patience = rollout.PullPatience(clock)
    while clock() < deadline:
        found = read()
        if any(pod.get("status", {}).get("phase") in ("Running", "Succeeded", "Failed") for pod in found):
            return
        problem = patience.hopeless(rollout.diagnose(found))
        if problem is not None:
            raise KubernetesError(f"the evaluate Job's pod {problem.pod} cannot start: {problem.detail}",
                                  "push the devel image (invoke build push) and check the pull secret"
                                  if problem.kind == "pull" else f"kubectl describe pod -n "
                                  f"{config.kubernetes.namespace} {problem.pod}")
        sleep(1.0)
    raise KubernetesError(f"the evaluate Job {name} did not start within {timeout:.0f}s",
                          f"kubectl describe job -n {config.kubernetes.namespace} {name}")


def _wait_job_finished(config: Config, name: str, timeout: float = 60.0) -> str:
    from tfship import cluster

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = json.loads(cluster.target(config).run("get", "job", "-n", config.kubernetes.namespace, name,
                                         "-o", "json").stdout)
        for condition in job.get("status", {}).get("conditions", []):
            if condition.get("status") == "True" and condition.get("type") in ("Complete", "Failed"):
                return condition["type"]
        time.sleep(1.0)
    return "unfinished"


# --------------------------------------------------------------------------------------------------------------
# python -m tfship.clients evaluate ... (what the in-cluster Job runs; usable by hand too)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tfship.clients")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("evaluate", help="mnist_client's evaluation against one gRPC address")
    where = run.add_mutually_exclusive_group(required=True)
    where.add_argument("--server", help="host:port of the gRPC API")
    where.add_argument("--service-env", help="Service variable prefix: reads <PREFIX>_SERVICE_HOST/_PORT_GRPC")
    run.add_argument("--model", required=True)
    run.add_argument("--exporter", required=True, choices=EVALUATE_EXPORTERS)
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--signature", required=True)
    run.add_argument("--input-key", required=True)
    run.add_argument("--output-key", required=True)
    run.add_argument("--num-tests", type=int, default=100)
    run.add_argument("--concurrency", type=int, default=1)
    args = parser.parse_args(argv)
    target = args.server
    if args.service_env:
        host = os.environ.get(f"{args.service_env}_SERVICE_HOST")
        port = os.environ.get(f"{args.service_env}_SERVICE_PORT_GRPC")
        if not host or not port:
            print(f"Error: {args.service_env}_SERVICE_HOST/_SERVICE_PORT_GRPC are not set (hint: run this in a pod "
                  "created after the Service, in its namespace)", file=sys.stderr)
            return 2
        target = f"{host}:{port}"
    try:
        images, labels = held_out(args.exporter, args.seed)
        report = run_evaluation(target, args.model, args.signature, args.input_key, args.output_key, images, labels,
                                num_tests=args.num_tests, concurrency=args.concurrency)
    except TfshipError as error:
        print(error.one_line(), file=sys.stderr)
        return 1
    for line in report.lines(args.model, args.signature):
        print(line, flush=True)
    return 0 if report.failed < report.num_tests else 1


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
