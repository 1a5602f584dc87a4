"""tfship.clients without a cluster: reading answers, preparing images, metrics, service addresses, the Job."""

from __future__ import annotations

import json
from types import SimpleNamespace
import subprocess

import numpy as np
import pytest
from fake_clock import FakeClock
from PIL import Image

from tfship import clients, cluster, models, service
from tfship.config import Config, ModelSpec
from tfship.errors import ConfigError, TfshipError

MNIST_LIKE = clients.ModelInput("mnist", "predict_images", "images", "scores", width=784, pixel_max=1.0,
                                classifier=True)


def write_sample(config: Config, name: str, sample: dict, version: int = 1) -> None:
    folder = config.models_path / name / str(version)
    (folder / "assets.extra").mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(b"")
    (folder / models.SMOKE_SAMPLE).write_text(json.dumps(sample))


def test_model_input_from_samples(tmp_path):
    config = Config(root=tmp_path, models=[ModelSpec("digits", exporter="digits"), ModelSpec("mine")])
    write_sample(config, "digits", {"signature": "serving_default", "input_key": "pixels", "output_key": "probabilities",
                                    "inputs": [[0.0, 16.0, 3.0, 1.0]], "expected_labels": ["1"]})
    write_sample(config, "mine", {"signature": "serving_default", "input_key": "x", "output_key": "y",
                                  "inputs": [[0.2, 0.9]], "expected_outputs": [[1.0]], "generated": True})
    digits = clients.model_input(config, "digits")
    assert (digits.width, digits.pixel_max, digits.classifier) == (4, 16.0, True)
    mine = clients.model_input(config, "mine")
    assert (mine.input_key, mine.width, mine.pixel_max, mine.classifier) == ("x", 2, 1.0, False)
    with pytest.raises(TfshipError, match="has no version 7 on disk"):
        clients.model_input(config, "mine", 7)
    with pytest.raises(ConfigError, match="unknown model 'other'"):
        clients.model_input(config, "other")


def test_format_answer_ranks_classes_and_leaves_other_outputs_raw():
    scores = [[0.01, 0.02, 0.9, 0.03, 0.04, 0.0, 0.0, 0.0, 0.0, 0.0]]
    assert clients.format_answer({"scores": scores}, MNIST_LIKE) == "class 2 (top 3: 2: 0.9000, 4: 0.0400, 3: 0.0300)"
    assert clients.format_answer(scores * 2, MNIST_LIKE).splitlines()[1].startswith("row 1: class 2")
    plain = clients.ModelInput("m", "serving_default", "x", "y")
    assert clients.format_answer({"y": [[2.5]]}, plain) == '{"y": [[2.5]]}'


def test_image_rows_inverts_light_backgrounds_and_centres_the_ink(tmp_path):
    picture = Image.new("RGB", (300, 200), "white")
    picture.paste((0, 0, 0), (40, 50, 80, 190))  # a dark bar, 40 wide and 140 tall, far from the centre
    picture.save(tmp_path / "bar.jpg")
    [row] = clients.image_rows(tmp_path / "bar.jpg", MNIST_LIKE)
    image = np.asarray(row).reshape(28, 28)
    rows, cols = np.flatnonzero(image.max(axis=1) > 0.5), np.flatnonzero(image.max(axis=0) > 0.5)
    assert (rows[0], rows[-1]) == (4, 23)  # 20 tall, centred
    assert abs((cols[0] + cols[-1]) / 2 - 13.5) <= 1  # centred across
    assert image.max() <= 1.0 and image[0, 0] == 0.0

    digits_like = clients.ModelInput("digits", "serving_default", "pixels", "probabilities", width=64,
                                     pixel_max=16.0, classifier=True)
    [row] = clients.image_rows(tmp_path / "bar.jpg", digits_like)
    assert len(row) == 64 and max(row) == pytest.approx(16.0, abs=0.5)


@pytest.mark.parametrize("content, message", [
    (b"not an image at all", "is not an image Pillow can read"),
    (None, "is blank"),
])
def test_image_rows_refuses_what_it_cannot_read(tmp_path, content, message):
    path = tmp_path / "in.png"
    if content is None:
        Image.new("L", (50, 50), "white").save(path)
    else:
        path.write_bytes(content)
    with pytest.raises(TfshipError, match=message):
        clients.image_rows(path, MNIST_LIKE)
    with pytest.raises(TfshipError, match="does not exist"):
        clients.image_rows(tmp_path / "missing.png", MNIST_LIKE)
    with pytest.raises(TfshipError, match="not a square image"):
        clients.image_rows(path, clients.ModelInput("m", "s", "x", "y", width=3))


def test_predict_needs_exactly_one_input(tmp_path):
    config = Config(root=tmp_path, models=[ModelSpec("mnist", exporter="mnist")])
    with pytest.raises(TfshipError, match="exactly one of --image FILE and --input JSON"):
        clients.predict(config, "mnist")
    with pytest.raises(TfshipError, match="exactly one of"):
        clients.predict(config, "mnist", image="a.png", input_json="[[1]]")


METRICS = """# TYPE :tensorflow:serving:request_count counter
:tensorflow:serving:request_count{model_name="mnist",status="OK"} 12
:tensorflow:serving:request_count{model_name="mnist",status="INVALID_ARGUMENT"} 3
:tensorflow:serving:request_count{model_name="digits",status="OK"} 40
# TYPE :tensorflow:serving:request_latency histogram
:tensorflow:serving:request_latency_bucket{model_name="mnist",API="predict",entrypoint="GRPC",le="10"} 1
:tensorflow:serving:request_latency_sum{model_name="mnist",API="predict",entrypoint="GRPC"} 9000
:tensorflow:serving:request_latency_count{model_name="mnist",API="predict",entrypoint="GRPC"} 12
:tensorflow:serving:request_latency_count{model_name="mnist",API="classify",entrypoint="REST"} 2
:tensorflow:serving:request_latency_count{model_name="mnist",API="status",entrypoint="REST"} 1
:tensorflow:serving:request_latency_count{model_name="digits",API="predict",entrypoint="GRPC"} 40
"""


def test_request_counts_from_prometheus_text():
    # inference only: the status request (a readiness probe) is left out
    assert service.request_count(METRICS, "mnist") == 14
    without_latency = METRICS.split("# TYPE :tensorflow:serving:request_latency")[0]
    assert service.request_count(without_latency, "mnist") == 15
    assert service.request_count(METRICS, "other") == 0
    assert (service.format_replica_counts({"a": 1, "b": 0}, {"a": 5, "b": 7})
            == "Requests per replica: a 4, b 7 (fair: most/least 7/4)")
    assert service.format_replica_counts({}, {"a": 9, "b": 0}).endswith("(uneven: most/least 9/0)")


@pytest.mark.parametrize(("counts", "fair"), [
    ({"a": 10, "b": 20, "c": 15}, True),
    ({"a": 10, "b": 21, "c": 15}, False),  # more than twice another's share
    ({"a": 0, "b": 5, "c": 5}, False),  # a replica that answered nothing
    ({}, False),
])
def test_fair_share(counts, fair):
    assert service.fair_share(counts) is fair
    assert "unavailable" in service.format_replica_counts({}, {"a": None, "b": 3})


def test_evaluate_refuses_a_model_without_held_out_data(tmp_path):
    config = Config(root=tmp_path, models=[ModelSpec("mine")])
    with pytest.raises(ConfigError, match="evaluate needs a model exported by mnist or digits"):
        clients.plan(config, "mine")


def fake_kubectl(monkeypatch, service: dict, nodes: list | None = None) -> list:
    calls = []

    def run(*args, **kwargs):
        calls.append(args)
        if args[:2] == ("get", "service"):
            return subprocess.CompletedProcess(args, 0, json.dumps(service), "")
        if args[:2] == ("get", "nodes"):
            return subprocess.CompletedProcess(args, 0, json.dumps({"items": nodes or []}), "")
        raise AssertionError(args)

    monkeypatch.setattr(cluster, "target", lambda config: SimpleNamespace(run=run))
    return calls


def service_object(kind: str, **extra) -> dict:
    ports = [{"name": "grpc", "port": 8500}, {"name": "http", "port": 8501}]
    if kind != "ClusterIP":
        ports[0]["nodePort"], ports[1]["nodePort"] = 30850, 30851
    return {"spec": {"type": kind, "clusterIP": "10.0.0.7", "ports": ports}, **extra}


def test_service_address_per_type(monkeypatch, tmp_path):
    config = Config(root=tmp_path)
    config.kubernetes.provider = "local"
    fake_kubectl(monkeypatch, service_object("ClusterIP"))
    address = service.service_address(config)
    assert address.grpc_outside == ""
    assert "(ClusterIP): in the cluster at 10.0.0.7 (gRPC 8500, REST 8501; pods read $TFSHIP_SERVING_SERVICE_HOST)" \
        in address.describe()

    fake_kubectl(monkeypatch, service_object("NodePort"))
    address = service.service_address(config)  # the local provider's node is this machine
    assert address.grpc_outside == "127.0.0.1:30850"
    assert "from outside: gRPC 127.0.0.1:30850, REST http://127.0.0.1:30851/v1/models/..." in address.describe()

    config.kubernetes.provider = "external"
    nodes = [{"status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.4"}]}}]
    lb = service_object("LoadBalancer", status={"loadBalancer": {"ingress": [{"ip": "198.51.100.9"}]}})
    fake_kubectl(monkeypatch, lb, nodes)
    text = service.service_address(config).describe()
    assert "gRPC 192.0.2.4:30850" in text and "load balancer: gRPC 198.51.100.9:8500" in text


def test_the_in_cluster_client_reads_the_service_variables(monkeypatch, capsys):
    monkeypatch.delenv("TFSHIP_SERVING_SERVICE_HOST", raising=False)
    code = clients.main(["evaluate", "--service-env", "TFSHIP_SERVING", "--model", "mnist", "--exporter", "mnist",
                         "--signature", "predict_images", "--input-key", "images", "--output-key", "scores"])
    assert code == 2
    assert "TFSHIP_SERVING_SERVICE_HOST/_SERVICE_PORT_GRPC are not set" in capsys.readouterr().err


def test_the_evaluate_job_runs_the_client_in_the_devel_image(tmp_path):
    from tfship import render
    from tfship.artifacts import Artifacts, ImageArtifact

    config = Config(root=tmp_path)
    devel = ImageArtifact(role="devel", name="tfship-devel", tag="t", image_id="sha256:1", user=10001,
                          repository="127.0.0.1:5000/tfship/tfship-devel", digest="sha256:" + "ab" * 32)
    how = clients.EvaluationPlan("mnist", "mnist", 0, "predict_images", "images", "scores")
    job = clients.evaluate_job(config, Artifacts(images={"devel": devel}), how, "ev-1", 1000, 4)
    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["image"] == "127.0.0.1:5000/tfship/tfship-devel@sha256:" + "ab" * 32
    assert container["command"] == ["python"]
    assert container["args"][:5] == ["-m", "tfship.clients", "evaluate", "--service-env", "TFSHIP_SERVING"]
    assert container["args"][-4:] == ["--num-tests", "1000", "--concurrency", "4"]
    assert pod["securityContext"]["runAsUser"] == 10001 and "imagePullSecrets" not in pod
    assert pod["restartPolicy"] == "Never" and job["spec"]["backoffLimit"] == 0
    # never selected by the Service
    selector = render.selector_labels(config)
    assert any(job["metadata"]["labels"].get(k) != v for k, v in selector.items())


def test_replica_counts_reads_every_ready_pod_through_its_own_forward(monkeypatch, tmp_path):
    import requests

    from tfship import cluster, portforward
    from tfship.kubectl import Reads

    def pod(name: str, ready: str) -> dict:
        return {"metadata": {"name": name}, "status": {"conditions": [{"type": "Ready", "status": ready}]}}

    class FakeTarget(Reads):
        def argv(self, *args):
            return ["kubectl", *args]

        def run(self, *args, **kwargs):
            items = [pod("b", "True"), pod("a", "True"), pod("c", "False")]
            return subprocess.CompletedProcess(args, 0, json.dumps({"items": items}), "")

    class FakeForward:
        def __init__(self, argv, namespace, name, ports, kind="pod"):
            self.name, self.ports = name, {ports[0]: {"a": 1, "b": 2}[name]}

        def start(self):
            return self

        def stop(self):
            pass

    class Answer:
        def __init__(self, status_code, text):
            self.status_code, self.text = status_code, text

    def get(url, timeout):
        return Answer(200, METRICS) if url.startswith("http://127.0.0.1:1/") else Answer(404, "")

    monkeypatch.setattr(cluster, "target", lambda config: FakeTarget())
    monkeypatch.setattr(portforward, "PortForward", FakeForward)
    monkeypatch.setattr(requests, "get", get)
    counts = service.replica_counts(Config(root=tmp_path), "mnist")
    assert counts == {"a": 14, "b": None}  # c is not Ready; b serves no metrics
    assert "unavailable" in service.format_replica_counts(counts, counts)


def job_pod(phase: str = "Pending", waiting: str = "") -> dict:
    statuses = [{"name": "evaluate", "state": {"waiting": {"reason": waiting, "message": "pull access denied"}}}]
    return {"metadata": {"name": "tfship-evaluate-x-abcde"},
            "status": {"phase": phase, "containerStatuses": statuses if waiting else []}}


def wait_job(tmp_path, states: list[list[dict]]) -> FakeClock:
    """Run _wait_job_started over these successive pod lists (the last one repeats) on a fake clock."""
    clock = FakeClock()
    reads = iter(states)
    last: list[list[dict]] = [states[-1]]

    def pods() -> list[dict]:
        last[0] = next(reads, last[0])
        return last[0]

    clients._wait_job_started(Config(root=tmp_path), "tfship-evaluate-x", 300, pods=pods, clock=clock,
                              sleep=clock.sleep)
    return clock


def test_the_evaluate_job_waits_out_a_first_failed_pull(tmp_path):
    # The kubelet's first pull may go out without a just-created pull secret (node authorizer lag); it retries.
    clock = wait_job(tmp_path, [[job_pod(waiting="ErrImagePull")]] * 12 + [[job_pod("Running")]])
    assert clock.now == 12


def test_the_evaluate_job_fails_on_a_pull_that_keeps_failing_and_on_an_invalid_name_at_once(tmp_path):
    with pytest.raises(TfshipError, match="cannot start: ErrImagePull: pull access denied") as failed:
        wait_job(tmp_path, [[job_pod(waiting="ErrImagePull")]])
    assert "push the devel image" in failed.value.one_line()
    with pytest.raises(TfshipError, match="cannot start: InvalidImageName"):
        wait_job(tmp_path, [[job_pod(waiting="InvalidImageName")]])
