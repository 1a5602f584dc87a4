"""The signature rules of TF Serving's tensorflow_serving/servables/tensorflow/classifier.cc and regressor.cc
(GetClassificationSignatureDef / PreProcessClassification, GetRegressionSignatureDef / PreProcessRegression,
with the method-name check off as in tensorflow_model_server) and the "Input is empty." of util.cc, over gRPC
and REST against the real server serving TF Serving's half_plus_two."""

from __future__ import annotations

from typing import Iterator, TypeVar

import grpc
import pytest
import requests
from tensorflow_serving.apis import classification_pb2, prediction_service_pb2_grpc, regression_pb2

from server_harness import HALF_PLUS_TWO, ServerProcess

TIMEOUT = 30.0
Request = TypeVar("Request", classification_pb2.ClassificationRequest, regression_pb2.RegressionRequest)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("classify_regress")
    process = ServerProcess(["--model_name=default", f"--model_base_path={HALF_PLUS_TWO}"], workdir / "server.log")
    process.wait_ready()
    yield process
    assert process.stop() == 0


@pytest.fixture(scope="module")
def stub(server: ServerProcess) -> Iterator[prediction_service_pb2_grpc.PredictionServiceStub]:
    with grpc.insecure_channel(server.grpc_address) as channel:
        yield prediction_service_pb2_grpc.PredictionServiceStub(channel)


def _examples_request(kind: type[Request], signature: str, x: float | None) -> Request:
    """A ClassificationRequest or RegressionRequest for model default: one example {x} (none if x is None)."""
    request = kind()
    request.model_spec.name = "default"
    request.model_spec.signature_name = signature
    if x is not None:
        request.input.example_list.examples.add().features.feature["x"].float_list.value.append(x)
    return request


def _classify(signature: str, x: float | None = 2.0) -> classification_pb2.ClassificationRequest:
    return _examples_request(classification_pb2.ClassificationRequest, signature, x)


def _regress(signature: str, x: float | None = 2.0) -> regression_pb2.RegressionRequest:
    return _examples_request(regression_pb2.RegressionRequest, signature, x)


def _fails(call: object, request: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as raised:
        call(request, TIMEOUT)  # type: ignore[operator]
    return raised.value.code(), raised.value.details()


@pytest.mark.parametrize(("signature", "expected"), [
    ("nope", "No signature was found with the name: nope"),
    ("", "No classification inputs found in SignatureDef: inputs {\n  key: \"x\""),  # serving_default
    ("regress_x_to_y", 'Expected classification signature outputs to contain at least one of "classes" or '
                       '"scores". Signature was: inputs {\n  key: "inputs"'),
])
def test_classification_signature_errors(stub: prediction_service_pb2_grpc.PredictionServiceStub, signature: str,
                                         expected: str) -> None:
    code, details = _fails(stub.Classify, _classify(signature))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith(expected)


@pytest.mark.parametrize(("signature", "expected"), [
    ("nope", "No signature was found with the name: nope"),
    ("", "No regression inputs found in SignatureDef: inputs {\n  key: \"x\""),
    ("classify_x_to_y", "No regression outputs found in SignatureDef: inputs {\n  key: \"inputs\""),
    ("regress_x2_to_y3", "Expects arg[0] to be float but string is provided"),  # its "inputs" is not serialized
])
def test_regression_signature_errors(stub: prediction_service_pb2_grpc.PredictionServiceStub, signature: str,
                                     expected: str) -> None:
    code, details = _fails(stub.Regress, _regress(signature))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith(expected)


def test_input_is_empty(stub: prediction_service_pb2_grpc.PredictionServiceStub) -> None:
    """util.cc InputToSerializedExampleTensor, after the signature checks."""
    assert _fails(stub.Classify, _classify("classify_x_to_y", None)) == (grpc.StatusCode.INVALID_ARGUMENT,
                                                                        "Input is empty.")
    assert _fails(stub.Regress, _regress("regress_x_to_y", None)) == (grpc.StatusCode.INVALID_ARGUMENT,
                                                                     "Input is empty.")
    assert _fails(stub.Regress, _regress("", None))[1].startswith("No regression inputs found")


def test_missing_model_spec(stub: prediction_service_pb2_grpc.PredictionServiceStub) -> None:
    """classification_service.cc / regression_service.cc."""
    assert _fails(stub.Classify, classification_pb2.ClassificationRequest()) == (grpc.StatusCode.INVALID_ARGUMENT,
                                                                                "Missing ModelSpec")
    assert _fails(stub.Regress, regression_pb2.RegressionRequest()) == (grpc.StatusCode.INVALID_ARGUMENT,
                                                                       "Missing ModelSpec")


def test_response_model_spec(stub: prediction_service_pb2_grpc.PredictionServiceStub) -> None:
    """RunClassify / RunRegress: MakeModelSpec names the signature that ran and the version."""
    response = stub.Classify(_classify("classify_x_to_y", 4.0), TIMEOUT)
    assert (response.model_spec.name, response.model_spec.signature_name, response.model_spec.version.value) == \
        ("default", "classify_x_to_y", 123)
    assert [(c.label, c.score) for c in response.result.classifications[0].classes] == [("", 4.0)]
    response = stub.Regress(_regress("regress_x_to_y2", 4.0), TIMEOUT)  # y2 = 0.5 x + 3
    assert [r.value for r in response.result.regressions] == [5.0]


def test_rest_answers_the_same(server: ServerProcess) -> None:
    reply = requests.post(f"{server.rest_url}/v1/models/default:classify", json={"examples": [{"x": 2.0}]},
                          timeout=TIMEOUT)
    assert reply.status_code == 400
    assert reply.json()["error"].startswith("No classification inputs found in SignatureDef: ")
    reply = requests.post(f"{server.rest_url}/v1/models/default:regress",
                          json={"signature_name": "nope", "examples": [{"x": 2.0}]}, timeout=TIMEOUT)
    assert (reply.status_code, reply.json()) == (400, {"error": "No signature was found with the name: nope"})
