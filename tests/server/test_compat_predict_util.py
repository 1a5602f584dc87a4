"""TF Serving's tensorflow_serving/servables/tensorflow/predict_util_test.cc (PredictImplTest), ported: gRPC Predict
against the real server on loopback, serving cc/saved_model/testdata/half_plus_two as there (here
saved_model_half_plus_two_2_versions, version 123, named test_model), plus a tiny model whose signature has a
method name TF Serving does not know (MethodNameCheck)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import grpc
import pytest
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from server_harness import HALF_PLUS_TWO_2_VERSIONS, ServerProcess, require_testdata
from tiny_models import _set_method_names, save_linear_model

TIMEOUT = 30.0
MODEL, VERSION = "test_model", 123  # kTestModelName, kTestModelVersion


@pytest.fixture(scope="module")
def stub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[prediction_service_pb2_grpc.PredictionServiceStub]:
    require_testdata()
    workdir = tmp_path_factory.mktemp("predict_util")
    odd = save_linear_model(str(workdir / "odd_method"), 1, scale=1.0, offset=0.0)
    _set_method_names(odd, {"serving_default": "not/supported/method"})
    config = workdir / "models.config"
    config.write_text(
        f'model_config_list {{ config {{ name: "{MODEL}" base_path: "{HALF_PLUS_TWO_2_VERSIONS}" '
        f'model_version_policy {{ specific {{ versions: {VERSION} }} }} }} '
        f'config {{ name: "odd_method" base_path: "{Path(odd).parent}" }} }}\n')
    server = ServerProcess([f"--model_config_file={config}"], workdir / "server.log")
    server.wait_ready()
    with grpc.insecure_channel(server.grpc_address) as channel:
        yield prediction_service_pb2_grpc.PredictionServiceStub(channel)
    assert server.stop() == 0


def _request(signature: str = "", **inputs: tensor_pb2.TensorProto) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.model_spec.version.value = VERSION
    request.model_spec.signature_name = signature
    for alias, tensor in inputs.items():
        request.inputs[alias].CopyFrom(tensor)
    return request


def _float(value: float, with_shape: bool = False) -> tensor_pb2.TensorProto:
    tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[value])
    if with_shape:
        tensor.tensor_shape.dim.add(size=1)
    return tensor


def _fails(stub: prediction_service_pb2_grpc.PredictionServiceStub,
           request: predict_pb2.PredictRequest) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as raised:
        stub.Predict(request, TIMEOUT)
    return raised.value.code(), raised.value.details()


def test_missing_or_empty_model_spec(stub: prediction_service_pb2_grpc.PredictionServiceStub) -> None:
    # MissingOrEmptyModelSpec
    assert _fails(stub, predict_pb2.PredictRequest()) == (grpc.StatusCode.INVALID_ARGUMENT,
                                                          "ModelSpec has no name specified.")
    request = predict_pb2.PredictRequest()
    request.model_spec.version.value = VERSION
    assert _fails(stub, request)[0] == grpc.StatusCode.INVALID_ARGUMENT


def test_empty_input_list(stub: prediction_service_pb2_grpc.PredictionServiceStub) -> None:  # EmptyInputList
    assert _fails(stub, _request()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "input size does not match signature: 0!=1 len({}) != len({x}). Sent extra: {}. Missing but required: {x}.")


def test_input_tensors_dont_match_model_spec_inputs(stub: prediction_service_pb2_grpc.PredictionServiceStub) -> None:
    # InputTensorsDontMatchModelSpecInputs
    text = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=[b"any_value"])
    text.tensor_shape.dim.add(size=1)
    code, details = _fails(stub, _request(unknown_key1=text, unknown_key2=_float(1.0, with_shape=True)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "Sent extra: {unknown_key1,unknown_key2}" in details
    assert "Missing but required: {x}" in details


def test_prediction_invalid_tensor(stub: prediction_service_pb2_grpc.PredictionServiceStub) -> None:
    # PredictionInvalidTensor
    code, details = _fails(stub, _request(x=tensor_pb2.TensorProto(dtype=types_pb2.DT_BOOL, bool_val=[True])))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "Expects arg[0] to be float but bool is provided" in details


def test_output_filters_dont_match_model_spec_outputs(stub: prediction_service_pb2_grpc.PredictionServiceStub) -> None:
    # OutputFiltersDontMatchModelSpecOutputs
    request = _request(x=_float(2.0))
    request.output_filter.append("output_filter")
    code, details = _fails(stub, request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "output tensor alias not found in signature: output_filter" in details
    del request.output_filter[:]
    request.output_filter.append("y")
    assert list(stub.Predict(request, TIMEOUT).outputs) == ["y"]
    request.output_filter.append("y")
    assert _fails(stub, request) == (grpc.StatusCode.INVALID_ARGUMENT, "duplicate output tensor alias: y")


def test_input_tensors_have_wrong_type(stub: prediction_service_pb2_grpc.PredictionServiceStub) -> None:
    # InputTensorsHaveWrongType
    text = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=[b"any_value"])
    text.tensor_shape.dim.add(size=1)
    request = _request(x=text)
    request.output_filter.append("y")
    code, details = _fails(stub, request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "to be float but string is provided" in details


def test_prediction_success(stub: prediction_service_pb2_grpc.PredictionServiceStub) -> None:  # PredictionSuccess
    response = stub.Predict(_request(x=_float(2.0)), TIMEOUT)
    expected = predict_pb2.PredictResponse()
    expected.model_spec.name = MODEL
    expected.model_spec.version.value = VERSION
    expected.model_spec.signature_name = "serving_default"
    expected.outputs["y"].CopyFrom(tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[3.0]))
    expected.outputs["y"].tensor_shape.SetInParent()  # a scalar in, a scalar out
    assert response == expected


def test_prediction_with_named_regression_signature(stub: prediction_service_pb2_grpc.PredictionServiceStub) -> None:
    # PredictionWithNamedRegressionSignature
    response = stub.Predict(_request("regress_x2_to_y3", inputs=_float(2.0)), TIMEOUT)
    assert (response.model_spec.signature_name, list(response.outputs)) == ("regress_x2_to_y3", ["outputs"])
    assert list(response.outputs["outputs"].float_val) == [4.0]


def test_prediction_with_named_classification_signature(
        stub: prediction_service_pb2_grpc.PredictionServiceStub) -> None:
    # PredictionWithNamedClassificationSignature: Predict runs classify signatures too
    response = stub.Predict(_request("classify_x2_to_y3", inputs=_float(2.0)), TIMEOUT)
    assert list(response.outputs) == ["scores"]
    assert list(response.outputs["scores"].float_val) == [4.0]


def test_unknown_signature_is_failed_precondition(stub: prediction_service_pb2_grpc.PredictionServiceStub) -> None:
    """RunPredict: 'Serving signature key "..." not found.', FAILED_PRECONDITION."""
    assert _fails(stub, _request("nope", x=_float(2.0))) == (grpc.StatusCode.FAILED_PRECONDITION,
                                                             'Serving signature key "nope" not found.')


def test_method_name_check(stub: prediction_service_pb2_grpc.PredictionServiceStub) -> None:
    """MethodNameCheck: the check is off by default in tensorflow_model_server, so a signature whose
    method_name is not predict/classify/regress still predicts."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "odd_method"
    request.inputs["x"].CopyFrom(_float(3.0))
    request.inputs["x"].tensor_shape.dim.add(size=1)
    request.inputs["x"].tensor_shape.dim.add(size=1)
    assert list(stub.Predict(request, TIMEOUT).outputs["y"].float_val) == [3.0]
