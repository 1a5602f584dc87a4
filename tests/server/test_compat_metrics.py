"""TF Serving's request metrics, against the real server serving its half_plus_two: which requests
model_servers/prediction_service_impl.cc (gRPC) and http_server.cc (REST) count in
:tensorflow:serving:request_count and time in :tensorflow:serving:request_latency, with which label values, and
the page util/prometheus_exporter.cc writes (names, TYPE lines, buckets of servables/tensorflow/util.cc)."""

from __future__ import annotations

import re
from typing import Callable, Iterator

import grpc
import pytest
import requests
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from server_harness import HALF_PLUS_TWO, ServerProcess

TIMEOUT = 30.0
METRICS_PATH = "/custom/metrics/path"
COUNT = ":tensorflow:serving:request_count"
LATENCY = ":tensorflow:serving:request_latency"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("metrics")
    monitoring = workdir / "monitoring.config"
    monitoring.write_text(f'prometheus_config {{ enable: true, path: "{METRICS_PATH}" }}\n')
    process = ServerProcess(["--model_name=default", f"--model_base_path={HALF_PLUS_TWO}",
                             f"--monitoring_config_file={monitoring}"], workdir / "server.log")
    process.wait_ready()
    yield process
    assert process.stop() == 0


@pytest.fixture(scope="module")
def stub(server: ServerProcess) -> Iterator[prediction_service_pb2_grpc.PredictionServiceStub]:
    with grpc.insecure_channel(server.grpc_address) as channel:
        yield prediction_service_pb2_grpc.PredictionServiceStub(channel)


def _page(server: ServerProcess) -> str:
    reply = requests.get(f"{server.rest_url}{METRICS_PATH}", timeout=TIMEOUT)
    assert reply.status_code == 200
    assert reply.headers["Content-Type"] == "text/plain"
    return reply.text


def _samples(server: ServerProcess) -> dict[str, float]:
    samples = {}
    for line in _page(server).splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def _changes(server: ServerProcess, action: Callable[[], object]) -> dict[str, float]:
    """The samples that moved while action ran (request_count and request_latency _count only)."""
    before = _samples(server)
    action()
    after = _samples(server)
    return {name: value - before.get(name, 0.0) for name, value in after.items()
            if value != before.get(name, 0.0) and (name.startswith(COUNT) or "_count{" in name)}


def _count(model: str, status: str) -> str:
    return f'{COUNT}{{model_name="{model}",status="{status}"}}'


def _timed(model: str, api: str, entrypoint: str) -> str:
    return f'{LATENCY}_count{{model_name="{model}",API="{api}",entrypoint="{entrypoint}"}}'


def _predict(model: str = "default", version: int | None = None) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    if version is not None:
        request.model_spec.version.value = version
    request.inputs["x"].dtype = 1
    request.inputs["x"].float_val.append(2.0)
    return request


def _examples(request: object, signature: str) -> object:
    request.model_spec.name = "default"  # type: ignore[attr-defined]
    request.model_spec.signature_name = signature  # type: ignore[attr-defined]
    request.input.example_list.examples.add().features.feature["x"].float_list.value.append(2.0)  # type: ignore
    return request


def test_grpc_predict_classify_regress_are_counted_and_timed(
        server: ServerProcess, stub: prediction_service_pb2_grpc.PredictionServiceStub) -> None:
    """prediction_service_impl.cc: API "Predict"/"Classify"/"Regress", entrypoint "GRPC"."""
    assert _changes(server, lambda: stub.Predict(_predict(), TIMEOUT)) == {
        _count("default", "OK"): 1, _timed("default", "Predict", "GRPC"): 1}
    assert _changes(server, lambda: stub.Classify(
        _examples(classification_pb2.ClassificationRequest(), "classify_x_to_y"), TIMEOUT)) == {
        _count("default", "OK"): 1, _timed("default", "Classify", "GRPC"): 1}
    assert _changes(server, lambda: stub.Regress(
        _examples(regression_pb2.RegressionRequest(), "regress_x_to_y"), TIMEOUT)) == {
        _count("default", "OK"): 1, _timed("default", "Regress", "GRPC"): 1}


def test_grpc_failures_are_counted_not_timed(server: ServerProcess,
                                             stub: prediction_service_pb2_grpc.PredictionServiceStub) -> None:
    """RecordModelRequestCount takes the status's code name; RecordRequestLatency runs only when OK."""
    def failing(request: predict_pb2.PredictRequest) -> Callable[[], None]:
        def call() -> None:
            with pytest.raises(grpc.RpcError):
                stub.Predict(request, TIMEOUT)
        return call

    assert _changes(server, failing(_predict(version=999))) == {_count("default", "NOT_FOUND"): 1}
    assert _changes(server, failing(_predict("missing"))) == {_count("missing", "NOT_FOUND"): 1}
    no_input = _predict()
    del no_input.inputs["x"]
    assert _changes(server, failing(no_input)) == {_count("default", "INVALID_ARGUMENT"): 1}


def test_other_grpc_methods_are_not_counted(server: ServerProcess,
                                            stub: prediction_service_pb2_grpc.PredictionServiceStub) -> None:
    """GetModelMetadata, MultiInference and ModelService's methods record nothing."""
    def others() -> None:
        metadata = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        metadata.model_spec.name = "default"
        stub.GetModelMetadata(metadata, TIMEOUT)
        multi = inference_pb2.MultiInferenceRequest()
        task = multi.tasks.add(method_name="tensorflow/serving/regress")
        task.model_spec.name, task.model_spec.signature_name = "default", "regress_x_to_y"
        multi.input.example_list.examples.add().features.feature["x"].float_list.value.append(2.0)
        stub.MultiInference(multi, TIMEOUT)
        with grpc.insecure_channel(server.grpc_address) as channel:
            status = get_model_status_pb2.GetModelStatusRequest()
            status.model_spec.name = "default"
            model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(status, TIMEOUT)

    assert _changes(server, others) == {}


def test_rest_requests_are_counted_and_timed(server: ServerProcess) -> None:
    """http_server.cc: every /v1/ request counts with its model name; OK ones are timed with API = the verb
    (empty for status and metadata GETs), entrypoint "REST"."""
    rest = f"{server.rest_url}/v1/models/default"
    assert _changes(server, lambda: requests.post(f"{rest}:predict", json={"instances": [1.0]}, timeout=TIMEOUT)) == {
        _count("default", "OK"): 1, _timed("default", "predict", "REST"): 1}
    assert _changes(server, lambda: requests.post(f"{rest}:regress", timeout=TIMEOUT, json={
        "signature_name": "regress_x_to_y", "examples": [{"x": 1.0}]})) == {
        _count("default", "OK"): 1, _timed("default", "regress", "REST"): 1}
    assert _changes(server, lambda: (requests.get(rest, timeout=TIMEOUT),
                                     requests.get(f"{rest}/metadata", timeout=TIMEOUT))) == {
        _count("default", "OK"): 2, _timed("default", "", "REST"): 2}


def test_rest_failures_are_counted_with_the_parsed_model_name(server: ServerProcess) -> None:
    base = f"{server.rest_url}/v1"
    assert _changes(server, lambda: requests.post(f"{base}/models/default:predict", data="{", timeout=TIMEOUT)) == {
        _count("default", "INVALID_ARGUMENT"): 1}
    assert _changes(server, lambda: requests.get(f"{base}/foo", timeout=TIMEOUT)) == {
        _count("", "INVALID_ARGUMENT"): 1}
    assert _changes(server, lambda: requests.get(f"{base}/models/a%22b%5Cc", timeout=TIMEOUT)) == {
        _count('a\\"b\\\\c', "NOT_FOUND"): 1}  # label values escaped as SanitizeLabelValue does
    assert _changes(server, lambda: requests.get(f"{server.rest_url}/not/v1", timeout=TIMEOUT)) == {}  # no handler


def test_page_format(server: ServerProcess) -> None:
    """PrometheusExporter: metric names with ':' for '/', a TYPE line each, histogram buckets with the limits
    of ExponentialBuckets(10, 1.8, 33) written by StrCat (%g), then +Inf, _sum and _count."""
    requests.post(f"{server.rest_url}/v1/models/default:predict", json={"instances": [1.0]}, timeout=TIMEOUT)
    page = _page(server)
    assert f"# TYPE {COUNT} counter\n" in page
    assert f"# TYPE {LATENCY} histogram\n" in page
    prefix = f'{LATENCY}_bucket{{model_name="default",API="predict",entrypoint="REST",'
    limits = re.findall(re.escape(prefix) + r'le="([^"]+)"\} \d+', page)
    assert limits[:6] == ["10", "18", "32.4", "58.32", "104.976", "188.957"]
    assert (len(limits), limits[-2], limits[-1]) == (34, "%g" % (10 * 1.8**32), "+Inf")
    counts = [int(value) for value in re.findall(re.escape(prefix) + r'le="[^"]+"\} (\d+)', page)]
    assert counts == sorted(counts)  # cumulative
    total = re.search(re.escape(f'{LATENCY}_count{{model_name="default",API="predict",entrypoint="REST"}}') +
                      r" (\d+)", page)
    assert total is not None and int(total.group(1)) == counts[-1]
    assert re.search(re.escape(f'{LATENCY}_sum{{model_name="default",API="predict",entrypoint="REST"}}') + r" \S+",
                     page)


def test_page_only_at_its_path(server: ServerProcess) -> None:
    """The exporter is registered at the configured path only."""
    reply = requests.get(f"{server.rest_url}/monitoring/prometheus/metrics", timeout=TIMEOUT)
    assert reply.status_code == 404
