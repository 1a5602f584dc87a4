"""Releases gated by the model's own quality, on the real cluster with real digits models.

In order, in namespace e2e-release-gate (2 serving replicas, small requests):
1. v1 (the digits exporter) is released into an empty namespace: canary, absolute checks only, promoted.
2. v2 is released while an in-cluster load client sends Predict through the Service: promoted, 0 failed requests,
   both versions answered.
3. v3, trained on shuffled labels, released under the same load: rejected on its error rate, 0 failed requests and
   0 answers from v3.
4. v4, v2's weights behind a real delay op (tf.data's SleepDataset): rejected on p99 latency.
5. v5, a SavedModel that cannot load (the server exits, the pod crash-loops): rejected, the cause named.
After each rejection the serving Deployment still runs v2 on every replica and no canary is left.
6. `invoke history` (a subprocess, as a user runs it) lists all of it; `invoke rollback --to` v1's release serves
   v1 again; a rejected release cannot be rolled back to.
The load client is a pod from the devel image (tensorflow-serving-api) reaching the Service through the variables
Kubernetes injects (no cluster DNS here); it makes no retries and stops when told to (a file created by exec).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import docker
import pytest
import yaml
from cluster_fixtures import load_pod
from model_fixtures import export_models

from tfship import artifacts as tfartifacts
from tfship import cluster as tfcluster
from tfship import config as tfconfig
from tfship import history, images, models, push, registry, release, render
from tfship.artifacts import Artifacts, ImageArtifact, ServingRecord

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "e2e-release-gate"
MODEL = "digits"
CRASH_IMAGE = "tfship-e2e-release-crash"
LOAD_POD = "tfship-release-load"
LOAD_MAX_SECONDS = 900  # hard cap; the test stops the load as soon as the release returns
LOAD_INTERVAL_SECONDS = 0.05
LOAD_SETTLE_SECONDS = 20  # load kept going after a promotion returns (old pods drain, channels move)
REJECTED_SETTLE_SECONDS = 3  # after a rejection the Service's pods never changed: nothing left to drain
SLOW_SECONDS = 0.12  # per Predict call of the slow version: p99 ~270 ms vs 40-60 ms serving, limit x2 (+50 ms)

# Runs inside the cluster, bounded in time; prints one JSON line at the end. No retries: a failure is counted.
LOAD_SCRIPT = r"""
import json, os, time, urllib.request
import grpc
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

service = os.environ["SERVICE"].upper().replace("-", "_")
host = os.environ[service + "_SERVICE_HOST"]
grpc_port, rest_port = os.environ[service + "_SERVICE_PORT_GRPC"], os.environ[service + "_SERVICE_PORT_HTTP"]
row = json.loads(os.environ["ROW"])
stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(f"{host}:{grpc_port}"))
request = predict_pb2.PredictRequest()
request.model_spec.name = os.environ["MODEL"]
request.inputs["pixels"].CopyFrom(tf.make_tensor_proto([row], dtype=tf.float32))
body = json.dumps({"instances": [row]}).encode()
url = f"http://{host}:{rest_port}/v1/models/{os.environ['MODEL']}:predict"
counts = {"grpc_sent": 0, "grpc_failed": 0, "rest_sent": 0, "rest_failed": 0}
versions, errors = {}, []
print("load started", flush=True)
started = time.monotonic()
while time.monotonic() - started < float(os.environ["MAX_SECONDS"]) and not os.path.exists("/control/stop"):
    counts["grpc_sent"] += 1
    try:
        reply = stub.Predict(request, timeout=10)
        assert tf.make_ndarray(reply.outputs["probabilities"]).shape == (1, 10), "wrong shape"
        version = str(reply.model_spec.version.value)
        versions[version] = versions.get(version, 0) + 1
    except Exception as exc:
        counts["grpc_failed"] += 1
        errors.append(f"grpc: {exc}"[:200])
    counts["rest_sent"] += 1
    try:
        http_request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(http_request, timeout=10) as response:
            assert len(json.load(response)["predictions"][0]) == 10, "wrong shape"
    except Exception as exc:
        counts["rest_failed"] += 1
        errors.append(f"rest: {exc}"[:200])
    time.sleep(float(os.environ["INTERVAL"]))
counts.update(seconds=round(time.monotonic() - started, 1), versions=versions, errors=errors[:10])
print("RESULT " + json.dumps(counts), flush=True)
"""


# --------------------------------------------------------------------------------------------------------------
# Set-up: the test's own tfship.yaml (so `invoke` subprocesses see the same config), models and images


def write_config(root: Path) -> Path:
    """The project's tfship.yaml with private build/model folders, digits only, 2 small replicas, own namespace."""
    data = yaml.safe_load((REPO / tfconfig.CONFIG_FILE_NAME).read_text())
    data.update(build_dir=str(root / "build"), models_dir=str(root / "models"),
                models=[{"name": MODEL, "exporter": MODEL, "signatures": ["serving_default", "classify"]}])
    data["kubernetes"].update(namespace=NAMESPACE, replicas=2,
                              resources={"cpu_request": "100m", "memory_request": "384Mi"})
    path = root / tfconfig.CONFIG_FILE_NAME
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def invoke(config_file: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """`invoke ARGS` from the repository, as a user runs it, on the test's config."""
    env = {**os.environ, "TFSHIP_CONFIG": str(config_file), "PYTHONPATH": str(REPO / "src")}
    return subprocess.run([str(Path(sys.executable).parent / "invoke"), *args], cwd=REPO, env=env, text=True,
                          capture_output=True, timeout=timeout)


def train_digits(config: tfconfig.Config, version: int, *, shuffle_labels: bool = False,
                 delay_seconds: float = 0.0) -> Path:
    """A digits version made like the exporter's (same split, module and training), but trained on shuffled labels
    or answering through a delay op; it carries the same held-out smoke sample as the good versions."""
    import numpy as np
    import tensorflow as tf

    from tfship.exporters import digits
    from tfship.exporters.common import CLASSIFY, PREDICT, seed_everything, set_method_names, train_classifier

    seed_everything(0)
    x_train, _, y_train, _ = digits.data(0)
    if shuffle_labels:
        y_train = np.random.default_rng(7).permutation(y_train)
    module = digits._build_module(tf, 0)
    train_classifier(tf, module.logits, [module.w1, module.b1, module.w2, module.b2], x_train, y_train,
                     steps=digits.TRAIN_STEPS, learning_rate=digits.LEARNING_RATE, log=lambda line: None,
                     name="digits")
    predict = module.predict_probabilities
    if delay_seconds:
        from tensorflow.python.data.experimental.ops.testing import sleep

        @tf.function(input_signature=[tf.TensorSpec([None, 64], tf.float32, name=digits.FEATURE)])
        def slow_predict(pixels):
            # SleepDataset is a real graph op: the server waits on every call without burning CPU.
            delayed = tf.data.Dataset.from_tensors(pixels).apply(sleep(int(delay_seconds * 1e6)))
            return module.predict_probabilities(delayed.get_single_element())

        module.slow_predict = slow_predict
        predict = slow_predict
    good = max(v for v in models.versions(config, MODEL) if v < version)
    target = models.model_dir(config, MODEL) / str(version)
    tf.saved_model.save(module, str(target), signatures={"serving_default": predict, "classify": module.classify})
    set_method_names(target, {"serving_default": PREDICT, "classify": CLASSIFY})
    sample = models.version_path(config, MODEL, good) / models.SMOKE_SAMPLE
    (target / models.SMOKE_SAMPLE).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(sample, target / models.SMOKE_SAMPLE)
    return target


def ship(config: tfconfig.Config) -> Artifacts:
    images.build(config)
    return push.push(config)


def crash_looping_app(good: Artifacts, root: Path, config_file: Path, version: int) -> tfconfig.Config:
    """The good serving image plus a version whose saved_model.pb is garbage: the server exits at start-up."""
    data = yaml.safe_load(config_file.read_text())
    data["build_dir"] = str(root / "crash-build")
    crash_file = root / "crash.yaml"
    crash_file.write_text(yaml.safe_dump(data, sort_keys=False))
    config = tfconfig.load(crash_file)
    image = good.image("serving")
    client = docker.from_env(timeout=300)
    try:
        with tempfile.TemporaryDirectory() as context:
            Path(context, "saved_model.pb").write_bytes(b"this is not a SavedModel\n")
            Path(context, "Dockerfile").write_text(
                f"FROM {image.local_ref}\nCOPY saved_model.pb /models/{MODEL}/{version}/saved_model.pb\n")
            built, _ = client.images.build(path=context, tag=f"{CRASH_IMAGE}:{image.tag}", rm=True, forcerm=True)
    finally:
        client.close()
    crash = ImageArtifact(role="serving", name=CRASH_IMAGE, tag=image.tag, image_id=built.id, user=image.user,
                          runtime=image.runtime)
    # What build would record for it: the same serving contract and smoke sample as the good image's.
    serving = ServingRecord.from_dict(json.loads(json.dumps(dataclasses.asdict(good.serving))))
    shutil.copytree(root / "build" / tfartifacts.SAMPLES_DIR, config.build_path / tfartifacts.SAMPLES_DIR,
                    dirs_exist_ok=True)
    tfartifacts.save(config.artifacts_path, Artifacts(images={"serving": crash}, models={MODEL: [version]},
                                                      serving=serving))
    push.push(config)
    return config


# --------------------------------------------------------------------------------------------------------------
# Cluster reads and the load client


def serving_pods(cluster, config) -> list[dict]:
    pods = json.loads(cluster.kubectl("get", "pods", "-n", NAMESPACE, "-l", render.selector(config),
                                      "-o", "json").stdout)["items"]
    return [pod for pod in pods if not pod["metadata"].get("deletionTimestamp")]


def assert_serves_everywhere(cluster, config, digest: str, replicas: int = 2) -> None:
    pods = serving_pods(cluster, config)
    assert len(pods) == replicas
    for pod in pods:
        assert any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"]["conditions"])
        assert pod["spec"]["containers"][0]["image"].endswith("@" + digest)
    canary = cluster.kubectl("get", "deployment", config.kubernetes.app + release.CANARY_SUFFIX, "-n", NAMESPACE,
                             "--ignore-not-found", "-o", "name").stdout
    assert canary.strip() == "", "no canary Deployment is left"


class Load:
    """The in-cluster load client, started before a release and stopped after it."""

    def __init__(self, cluster, config, devel_image: str, row: list[float]):
        self.cluster = cluster
        cluster.kubectl("delete", "pod", LOAD_POD, "-n", NAMESPACE, "--ignore-not-found", "--wait=true", check=False)
        env = {"SERVICE": config.kubernetes.app, "MODEL": MODEL, "ROW": json.dumps(row),
               "MAX_SECONDS": str(LOAD_MAX_SECONDS), "INTERVAL": str(LOAD_INTERVAL_SECONDS)}
        manifest = load_pod(LOAD_POD, NAMESPACE, devel_image, LOAD_SCRIPT, env, {"cpu": "100m", "memory": "256Mi"},
                            control_volume=True)
        cluster.kubectl("apply", "-f", "-", input=manifest)
        cluster.pod_log_containing(LOAD_POD, NAMESPACE, "load started", timeout=300)
        time.sleep(3)  # a few requests before the release starts

    def stop(self, settle_seconds: float) -> dict:
        # Old pods drain for a few seconds after a rollout completes (preStop): keep sending through that, so the
        # long-lived gRPC channel has moved to a new pod and anything that could fail has had its chance.
        time.sleep(settle_seconds)
        self.cluster.kubectl("exec", LOAD_POD, "-n", NAMESPACE, "--", "touch", "/control/stop")
        logs = self.cluster.pod_log_containing(LOAD_POD, NAMESPACE, "RESULT ", timeout=60)
        self.cluster.kubectl("delete", "pod", LOAD_POD, "-n", NAMESPACE, "--wait=false", check=False)
        return json.loads(logs.split("RESULT ", 1)[1].splitlines()[0])


# --------------------------------------------------------------------------------------------------------------
# The scenario


@pytest.fixture(scope="module")
def workdir():
    with tempfile.TemporaryDirectory(prefix="tfship-e2e-release-") as folder:
        yield Path(folder)


@pytest.fixture(scope="module", autouse=True)
def remove_namespace_afterwards(cluster):
    yield
    cluster.kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=false", check=False)
    try:
        client = docker.from_env(timeout=60)
        for image in client.images.list(name=CRASH_IMAGE):
            client.images.remove(image.id, force=True)
        client.close()
    except docker.errors.DockerException:
        pass


class State:
    """What the ordered tests hand on: the config, the good releases and the load figures."""

    config_file: Path
    config: tfconfig.Config
    v1: Artifacts
    v2: Artifacts
    row: list[float]
    load: dict[str, dict] = {}
    gates: dict[str, str] = {}


@pytest.fixture(scope="module")
def state(cluster, workdir) -> State:
    s = State()
    s.config_file = write_config(workdir)
    s.config = tfconfig.load(s.config_file)
    cluster.kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--timeout=180s", check=False, timeout=200)
    return s


def release_through_invoke(s: State, name: str) -> subprocess.CompletedProcess:
    started = time.monotonic()
    result = invoke(s.config_file, "release")
    s.gates[name] = result.stdout
    print(f"\n--- invoke release ({name}), exit {result.returncode}, {time.monotonic() - started:.0f}s\n"
          f"{result.stdout}{result.stderr.splitlines()[-1] if result.stderr else ''}")
    return result


def test_the_first_release_is_promoted_on_absolute_checks(cluster, state):
    s = state
    [first] = export_models(s.config)
    assert first.version == 1
    registry.up(s.config)
    s.v1 = ship(s.config)
    s.row = models.load_smoke_sample(first.path)["inputs"][0]
    result = release_through_invoke(s, "v1")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "error rate" in result.stdout and "nothing serving to compare" in result.stdout
    assert_serves_everywhere(cluster, s.config, s.v1.image("serving").digest)


def test_an_equally_good_version_is_promoted_under_load_with_zero_failed_requests(cluster, state):
    s = state
    [second] = export_models(s.config)
    assert second.version == 2
    s.v2 = ship(s.config)
    load = Load(cluster, s.config, s.v2.image("devel").pinned_ref, s.row)
    result = release_through_invoke(s, "v2")
    figures = s.load["promoted"] = load.stop(LOAD_SETTLE_SECONDS)
    print(f"load during the promoted release: {json.dumps(figures)}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert (figures["grpc_failed"], figures["rest_failed"]) == (0, 0), figures["errors"]
    assert figures["grpc_sent"] > 50
    assert set(figures["versions"]) == {"1", "2"}, "both versions answered: the promotion happened under load"
    assert_serves_everywhere(cluster, s.config, s.v2.image("serving").digest)


def test_a_version_trained_on_shuffled_labels_is_rejected_and_never_answers(cluster, state):
    s = state
    train_digits(s.config, 3, shuffle_labels=True)
    shuffled = ship(s.config)
    load = Load(cluster, s.config, s.v2.image("devel").pinned_ref, s.row)
    result = release_through_invoke(s, "v3 shuffled labels")
    figures = s.load["rejected"] = load.stop(REJECTED_SETTLE_SECONDS)
    print(f"load during the rejected release: {json.dumps(figures)}")
    assert result.returncode == 1
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith(f"Error: release of {shuffled.image('serving').digest[:19]} rejected, digits: error rate ")
    assert "serving, limit +0.02" in error
    assert (figures["grpc_failed"], figures["rest_failed"]) == (0, 0), figures["errors"]
    assert figures["grpc_sent"] > 50
    assert set(figures["versions"]) == {"2"}, "the rejected version never answered a user"
    assert_serves_everywhere(cluster, s.config, s.v2.image("serving").digest)


def test_a_much_slower_version_is_rejected_on_p99_latency(cluster, state):
    s = state
    train_digits(s.config, 4, delay_seconds=SLOW_SECONDS)
    slow = ship(s.config)
    result = release_through_invoke(s, "v4 slow")
    assert result.returncode == 1
    error = result.stderr.strip().splitlines()[-1]
    assert f"{slow.image('serving').digest[:19]} rejected, digits: p99 latency " in error
    assert_serves_everywhere(cluster, s.config, s.v2.image("serving").digest)


def test_a_crash_looping_version_is_rejected_with_the_servers_error(cluster, state, workdir):
    s = state
    crash = crash_looping_app(s.v2, workdir, s.config_file, 5)
    started = time.monotonic()
    with pytest.raises(release.ReleaseRejected) as rejected:
        release.release(crash)
    line = rejected.value.one_line()
    print(f"\n--- crash-looping release, {time.monotonic() - started:.0f}s: {line}")
    assert "the canary never became Ready" in line and "keeps crashing" in line
    assert_serves_everywhere(cluster, s.config, s.v2.image("serving").digest)


def test_history_lists_every_release_and_rollback_goes_to_any_promoted_one(cluster, state):
    s = state
    listed = invoke(s.config_file, "history")
    print(f"\n--- invoke history\n{listed.stdout}")
    assert listed.returncode == 0, listed.stderr
    records = history.load(s.config, tfcluster.target(s.config))
    assert [(r.outcome, r.models[MODEL]) for r in records] == [
        ("promoted", [1]), ("promoted", [2]), ("rejected", [3]), ("rejected", [4]), ("rejected", [5])]
    for record in records:
        assert record.id in listed.stdout
    assert "error rate" in records[2].reason and "p99 latency" in records[3].reason
    assert "keeps crashing" in records[4].reason

    refused = invoke(s.config_file, "rollback", "--to", records[2].id)
    assert refused.returncode == 1
    assert "was rejected, not promoted" in refused.stderr.strip().splitlines()[-1]

    back = invoke(s.config_file, "rollback", "--to", records[0].id)
    print(f"\n--- invoke rollback --to {records[0].id}\n{back.stdout}")
    assert back.returncode == 0, back.stderr[-2000:]
    assert_serves_everywhere(cluster, s.config, s.v1.image("serving").digest)
    final = invoke(s.config_file, "history")
    print(f"\n--- invoke history after the rollback\n{final.stdout}")
    last = history.load(s.config, tfcluster.target(s.config))[-1]
    assert (last.outcome, last.digest, last.reason) == ("rollback", s.v1.image("serving").digest,
                                                        f"back to release {records[0].id}")
