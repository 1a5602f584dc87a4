"""The checks TF Serving's tensorflow_model_server_test.py makes on half_plus_two, over gRPC and REST,
plus TF Serving's error codes, against one `python -m tfship.server --model_name=default` per module."""

from __future__ import annotations

import json
from typing import Any, Iterator

import grpc
import pytest
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow.core.framework import types_pb2
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

from server_harness import HALF_PLUS_TWO, TESTDATA, ServerProcess

RPC_TIMEOUT = 20.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("half_plus_two")
    monitoring = workdir / "monitoring.config"
    monitoring.write_text('prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }\n')
    process = ServerProcess(["--model_name=default", f"--model_base_path={HALF_PLUS_TWO}",
                             f"--monitoring_config_file={monitoring}", "--rest_api_timeout_in_ms=5000"],
                            workdir / "server.log")
    process.wait_ready()
    yield process
    assert process.stop() == 0


@pytest.fixture(scope="module")
def channel(server: ServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.grpc_address) as opened:
        yield opened


@pytest.fixture(scope="module")
def prediction(channel: grpc.Channel) -> prediction_service_pb2_grpc.PredictionServiceStub:
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


def _predict_request(model_name: str = "default", value: float = 2.0, dtype: int = types_pb2.DT_FLOAT,
                     alias: str = "x") -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.inputs[alias].dtype = dtype
    if dtype == types_pb2.DT_FLOAT:
        request.inputs[alias].float_val.append(value)
    else:
        request.inputs[alias].int_val.append(int(value))
    request.inputs[alias].tensor_shape.dim.add().size = 1
    return request


def _verify_spec(spec: Any, name: str, signature_name: str, version: int) -> None:
    assert (spec.name, spec.signature_name, spec.version.value) == (name, signature_name, version)


# --- gRPC: the checks of tensorflow_model_server_test.py ---------------------------------------------------

def test_grpc_get_model_status(channel: grpc.Channel) -> None:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "default"
    result = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request, RPC_TIMEOUT)
    assert len(result.model_version_status) == 1
    assert result.model_version_status[0].version == 123
    assert result.model_version_status[0].state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert result.model_version_status[0].status.error_code == 0


def test_grpc_get_model_metadata(prediction: prediction_service_pb2_grpc.PredictionServiceStub) -> None:
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "default"
    request.metadata_field.append("signature_def")
    result = prediction.GetModelMetadata(request, RPC_TIMEOUT)
    assert result.model_spec.name == "default"
    assert result.model_spec.version.value == 123
    assert list(result.metadata) == ["signature_def"]
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert result.metadata["signature_def"].Unpack(signatures)
    assert sorted(signatures.signature_def) == [
        "classify_x_to_y", "regress_x2_to_y3", "regress_x_to_y", "regress_x_to_y2", "serving_default"]


@pytest.mark.parametrize("specify_output", [True, False])
def test_grpc_predict(prediction: prediction_service_pb2_grpc.PredictionServiceStub, specify_output: bool) -> None:
    request = _predict_request()
    if specify_output:
        request.output_filter.append("y")
    result = prediction.Predict(request, RPC_TIMEOUT)
    assert "y" in result.outputs
    assert result.outputs["y"].dtype == types_pb2.DT_FLOAT
    assert list(result.outputs["y"].float_val) == [3.0]
    _verify_spec(result.model_spec, "default", "serving_default", 123)


def test_grpc_classify(prediction: prediction_service_pb2_grpc.PredictionServiceStub) -> None:
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "default"
    request.model_spec.signature_name = "classify_x_to_y"
    request.input.example_list.examples.add().features.feature["x"].float_list.value.extend([2.0])
    result = prediction.Classify(request, RPC_TIMEOUT)
    assert len(result.result.classifications) == 1
    assert len(result.result.classifications[0].classes) == 1
    assert result.result.classifications[0].classes[0].score == 3.0
    _verify_spec(result.model_spec, "default", "classify_x_to_y", 123)


def test_grpc_regress(prediction: prediction_service_pb2_grpc.PredictionServiceStub) -> None:
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = "default"
    request.model_spec.signature_name = "regress_x_to_y"
    request.input.example_list.examples.add().features.feature["x"].float_list.value.extend([2.0])
    result = prediction.Regress(request, RPC_TIMEOUT)
    assert [r.value for r in result.result.regressions] == [3.0]
    _verify_spec(result.model_spec, "default", "regress_x_to_y", 123)


def test_grpc_regress_with_context(prediction: prediction_service_pb2_grpc.PredictionServiceStub) -> None:
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = "default"
    request.model_spec.signature_name = "regress_x_to_y"
    with_context = request.input.example_list_with_context
    with_context.context.features.feature["x"].float_list.value.extend([4.0])
    with_context.examples.add()  # takes x from the context
    with_context.examples.add().features.feature["x"].float_list.value.extend([2.0])  # its own x wins
    result = prediction.Regress(request, RPC_TIMEOUT)
    assert [r.value for r in result.result.regressions] == [4.0, 3.0]


def test_grpc_multi_inference(prediction: prediction_service_pb2_grpc.PredictionServiceStub) -> None:
    request = inference_pb2.MultiInferenceRequest()
    request.tasks.add().model_spec.name = "default"
    request.tasks[0].model_spec.signature_name = "regress_x_to_y"
    request.tasks[0].method_name = "tensorflow/serving/regress"
    request.tasks.add().model_spec.name = "default"
    request.tasks[1].model_spec.signature_name = "classify_x_to_y"
    request.tasks[1].method_name = "tensorflow/serving/classify"
    request.input.example_list.examples.add().features.feature["x"].float_list.value.extend([2.0])
    result = prediction.MultiInference(request, RPC_TIMEOUT)
    assert len(result.results) == 2
    assert result.results[0].regression_result.regressions[0].value == 3.0
    assert result.results[1].classification_result.classifications[0].classes[0].score == 3.0
    for task, task_result in zip(request.tasks, result.results):
        _verify_spec(task_result.model_spec, "default", task.model_spec.signature_name, 123)


def test_grpc_health_serving(channel: grpc.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    for service in ("", "default"):
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=RPC_TIMEOUT)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


# --- gRPC: TF Serving's status codes ----------------------------------------------------------------------

def _code_of(call: Any, request: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as raised:
        call(request, RPC_TIMEOUT)
    return raised.value.code(), raised.value.details()


def test_grpc_unknown_model_is_not_found(prediction: prediction_service_pb2_grpc.PredictionServiceStub) -> None:
    code, details = _code_of(prediction.Predict, _predict_request(model_name="intentionally_missing_model"))
    assert code == grpc.StatusCode.NOT_FOUND
    assert "Servable" in details  # what TF Serving's own WaitForServerReady looks for


def test_grpc_unknown_version_is_not_found(prediction: prediction_service_pb2_grpc.PredictionServiceStub) -> None:
    request = _predict_request()
    request.model_spec.version.value = 999
    assert _code_of(prediction.Predict, request)[0] == grpc.StatusCode.NOT_FOUND


def test_grpc_unknown_signature_is_failed_precondition(
        prediction: prediction_service_pb2_grpc.PredictionServiceStub) -> None:
    """TF Serving's predict_util.cc RunPredict: an unknown signature is FAILED_PRECONDITION over gRPC."""
    request = _predict_request()
    request.model_spec.signature_name = "no_such_signature"
    code, details = _code_of(prediction.Predict, request)
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert details == 'Serving signature key "no_such_signature" not found.'


def test_grpc_wrong_dtype_is_invalid(prediction: prediction_service_pb2_grpc.PredictionServiceStub) -> None:
    code, details = _code_of(prediction.Predict, _predict_request(dtype=types_pb2.DT_INT32))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "float" in details


def test_grpc_unknown_input_alias_is_invalid(prediction: prediction_service_pb2_grpc.PredictionServiceStub) -> None:
    code, details = _code_of(prediction.Predict, _predict_request(alias="z"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "input tensor alias not found" in details


def test_grpc_classify_on_predict_signature_is_invalid(
        prediction: prediction_service_pb2_grpc.PredictionServiceStub) -> None:
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "default"  # serving_default is a predict signature
    request.input.example_list.examples.add().features.feature["x"].float_list.value.extend([2.0])
    assert _code_of(prediction.Classify, request)[0] == grpc.StatusCode.INVALID_ARGUMENT


def test_grpc_unsupported_metadata_field_is_invalid(
        prediction: prediction_service_pb2_grpc.PredictionServiceStub) -> None:
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "default"
    request.metadata_field.append("nonsense")
    assert _code_of(prediction.GetModelMetadata, request)[0] == grpc.StatusCode.INVALID_ARGUMENT


# --- REST ---------------------------------------------------------------------------------------------------

def _post(server: ServerProcess, path: str, body: Any) -> requests.Response:
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return requests.post(f"{server.rest_url}{path}", data=data, timeout=RPC_TIMEOUT)


def test_rest_status(server: ServerProcess) -> None:
    expected = {"model_version_status": [
        {"version": "123", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}
    for path in ("/v1/models/default", "/v1/models/default/versions/123"):
        reply = requests.get(f"{server.rest_url}{path}", timeout=RPC_TIMEOUT)
        assert reply.status_code == 200
        assert reply.json() == expected


def _sorted_object(value: Any) -> Any:
    if isinstance(value, dict):
        return sorted((key, _sorted_object(item)) for key, item in value.items())
    if isinstance(value, list):
        return sorted(_sorted_object(item) for item in value)
    return value


def test_rest_metadata_matches_tf_serving(server: ServerProcess) -> None:
    reply = requests.get(f"{server.rest_url}/v1/models/default/metadata", timeout=RPC_TIMEOUT)
    assert reply.status_code == 200
    expected = json.loads((TESTDATA / "half_plus_two_model_metadata.json").read_text())
    assert _sorted_object(reply.json()) == _sorted_object(expected)


def test_rest_predict_row_format(server: ServerProcess) -> None:
    reply = _post(server, "/v1/models/default:predict", {"instances": [2.0, 3.0, 4.0]})
    assert reply.status_code == 200
    assert reply.json() == {"predictions": [3.0, 3.5, 4.0]}


def test_rest_bodies_are_byte_for_byte_tf_serving(server: ServerProcess) -> None:
    predict = _post(server, "/v1/models/default:predict", {"instances": [2.0, 3.0, 4.0]})
    assert predict.content == b'{\n    "predictions": [3.0, 3.5, 4.0\n    ]\n}'
    status = requests.get(f"{server.rest_url}/v1/models/default", timeout=RPC_TIMEOUT)
    assert status.content == (b'{\n "model_version_status": [\n  {\n   "version": "123",\n   "state": "AVAILABLE",\n'
                              b'   "status": {\n    "error_code": "OK",\n    "error_message": ""\n   }\n  }\n ]\n}')


def test_rest_predict_named_row_format(server: ServerProcess) -> None:
    reply = _post(server, "/v1/models/default:predict", {"instances": [{"x": [2.0]}, {"x": [4.0]}]})
    assert reply.json() == {"predictions": [[3.0], [4.0]]}


def test_rest_predict_columnar_format(server: ServerProcess) -> None:
    reply = _post(server, "/v1/models/default:predict", {"inputs": [2.0, 3.0, 4.0]})
    assert reply.status_code == 200
    assert reply.json() == {"outputs": [3.0, 3.5, 4.0]}
    named = _post(server, "/v1/models/default/versions/123:predict", {"inputs": {"x": [[2.0]]}})
    assert named.json() == {"outputs": [[3.0]]}


def test_rest_predict_signature_name(server: ServerProcess) -> None:
    reply = _post(server, "/v1/models/default:predict",
                  {"signature_name": "regress_x2_to_y3", "instances": [[1.0]]})
    assert reply.status_code == 200
    assert list(reply.json()) == ["predictions"]


def test_rest_classify(server: ServerProcess) -> None:
    reply = _post(server, "/v1/models/default:classify",
                  {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]})
    assert reply.status_code == 200
    assert reply.json() == {"results": [[["", 3.0]]]}


def test_rest_regress(server: ServerProcess) -> None:
    reply = _post(server, "/v1/models/default:regress",
                  {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]})
    assert reply.status_code == 200
    assert reply.json() == {"results": [3.0]}
    with_context = _post(server, "/v1/models/default:regress",
                         {"signature_name": "regress_x_to_y", "context": {"x": 4.0}, "examples": [{}, {"x": 2.0}]})
    assert with_context.json() == {"results": [4.0, 3.0]}


@pytest.mark.parametrize(("path", "body", "status"), [
    ("/v1/models/default:predict", b"{not json", 400),
    ("/v1/models/default:predict", {"instances": [[1.0, 2.0], [3.0]]}, 400),  # ragged: no tensor shape
    ("/v1/models/default:predict", {"instances": ["two"]}, 400),  # wrong dtype
    ("/v1/models/default:predict", {"instances": [2.0], "inputs": [2.0]}, 400),
    ("/v1/models/default:predict", {"signature_name": "nope", "instances": [2.0]}, 400),
    ("/v1/models/default:predict", {"instances": [{"z": 1.0}]}, 400),
    ("/v1/models/missing:predict", {"instances": [2.0]}, 404),
    ("/v1/models/default/versions/7:predict", {"instances": [2.0]}, 404),
    ("/v1/models/default:regress", {"signature_name": "serving_default", "examples": [{"x": 2.0}]}, 400),
    # TF Serving answers an unknown verb under /v1/ "Malformed request" with 400 (http_rest_api_handler_test.cc).
    ("/v1/models/default:explode", {"instances": [2.0]}, 400),
])
def test_rest_errors(server: ServerProcess, path: str, body: Any, status: int) -> None:
    reply = _post(server, path, body)
    assert reply.status_code == status
    assert isinstance(reply.json()["error"], str) and reply.json()["error"]


def test_rest_unknown_model_status_is_404(server: ServerProcess) -> None:
    reply = requests.get(f"{server.rest_url}/v1/models/missing", timeout=RPC_TIMEOUT)
    assert reply.status_code == 404
    assert "missing" in reply.json()["error"]


def test_rest_prometheus_metrics(server: ServerProcess) -> None:
    _post(server, "/v1/models/default:predict", {"instances": [2.0]})
    reply = requests.get(f"{server.rest_url}/monitoring/prometheus/metrics", timeout=RPC_TIMEOUT)
    assert reply.status_code == 200
    assert "# TYPE" in reply.text
    assert ':tensorflow:serving:request_count{model_name="default",status="OK"}' in reply.text
    assert 'request_latency_count{model_name="default",API="predict",entrypoint="REST"}' in reply.text
