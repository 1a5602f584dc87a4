"""A TF2 SavedModel (tf.Module, built in a temp dir) served by the real server with --enable_batching:
classify with labels, regress, dtypes and shapes over gRPC and REST, concurrent requests answered apart."""

from __future__ import annotations

import base64
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator

import grpc
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import classification_pb2, get_model_metadata_pb2, predict_pb2, prediction_service_pb2_grpc

from server_harness import ServerProcess
from tiny_models import save_linear_model

RPC_TIMEOUT = 20.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("linear") / "linear"
    save_linear_model(str(base), 7, scale=0.25, offset=0.5)  # y = x/4 + 1/2
    process = ServerProcess(["--model_name=linear", f"--model_base_path={base}", "--enable_batching"],
                            tmp_path_factory.mktemp("linear_log") / "server.log")
    process.wait_ready()
    yield process
    assert process.stop() == 0


@pytest.fixture(scope="module")
def stub(server: ServerProcess) -> Iterator[prediction_service_pb2_grpc.PredictionServiceStub]:
    with grpc.insecure_channel(server.grpc_address) as channel:
        yield prediction_service_pb2_grpc.PredictionServiceStub(channel)


def _post(server: ServerProcess, verb: str, body: Any) -> requests.Response:
    return requests.post(f"{server.rest_url}/v1/models/linear:{verb}", json=body, timeout=RPC_TIMEOUT)


def test_grpc_classify_with_class_labels(stub: prediction_service_pb2_grpc.PredictionServiceStub) -> None:
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "linear"
    request.model_spec.signature_name = "classify_x"
    for x in (1.0, 2.0):
        request.input.example_list.examples.add().features.feature["x"].float_list.value.append(x)
    result = stub.Classify(request, RPC_TIMEOUT)
    as_pairs = [[(c.label, c.score) for c in row.classes] for row in result.result.classifications]
    assert as_pairs == [[("low", 0.25), ("high", 0.75)], [("low", 0.0), ("high", 1.0)]]
    assert result.model_spec.version.value == 7


def test_rest_classify_and_regress(server: ServerProcess) -> None:
    classify = _post(server, "classify", {"signature_name": "classify_x", "examples": [{"x": 1.0}]})
    assert classify.json() == {"results": [[["low", 0.25], ["high", 0.75]]]}
    regress = _post(server, "regress", {"signature_name": "regress_x", "examples": [{"x": [2.0]}, {"x": 6.0}]})
    assert regress.json() == {"results": [1.0, 2.0]}
    # JSON integers become int64 features (as in TF Serving); this model parses floats: the runtime says so.
    wrong_feature = _post(server, "regress", {"signature_name": "regress_x", "examples": [{"x": 2}]})
    assert wrong_feature.status_code == 400
    assert "Data types don't match" in wrong_feature.json()["error"]


def test_rest_predict_integer_json_into_float_input(server: ServerProcess) -> None:
    assert _post(server, "predict", {"instances": [[2], [6]]}).json() == {"predictions": [[1.0], [2.0]]}


def test_rest_predict_scalar_int_input_columnar(server: ServerProcess) -> None:
    reply = _post(server, "predict", {"signature_name": "busy", "inputs": 3})
    assert reply.json() == {"outputs": 1.75}  # 0 -> 1 -> 1.5 -> 1.75


@pytest.mark.parametrize(("body", "fragment"), [
    ({"signature_name": "busy", "inputs": 2.5}, "int32"),  # lossy float -> int refused
    ({"signature_name": "busy", "inputs": [1, 2]}, "must be a scalar"),  # shape the graph cannot run
    ({"instances": [[True]]}, "float"),
])
def test_rest_predict_wrong_dtype_or_shape_is_400(server: ServerProcess, body: Any, fragment: str) -> None:
    reply = _post(server, "predict", body)
    assert reply.status_code == 400
    assert fragment in reply.json()["error"]


def test_grpc_predict_wrong_shape_is_invalid_argument(stub: prediction_service_pb2_grpc.PredictionServiceStub) -> None:
    # Like TF Serving, shapes are not checked against the SignatureDef (half_plus_two takes [3] for [-1, 1]);
    # a shape the graph cannot run is the runtime's INVALID_ARGUMENT, with its one-line reason.
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "linear"
    request.model_spec.signature_name = "busy"
    request.inputs["iterations"].CopyFrom(tf.make_tensor_proto([1, 2], dtype=tf.int32))
    with pytest.raises(grpc.RpcError) as raised:
        stub.Predict(request, RPC_TIMEOUT)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details().startswith("The second input must be a scalar")


def test_grpc_string_outputs_and_output_filter(stub: prediction_service_pb2_grpc.PredictionServiceStub) -> None:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "linear"
    request.model_spec.signature_name = "classify_x"
    example = tf.train.Example()
    example.features.feature["x"].float_list.value.append(2.0)
    request.inputs["inputs"].CopyFrom(tf.make_tensor_proto([example.SerializeToString()]))
    request.output_filter.append("classes")
    reply = stub.Predict(request, RPC_TIMEOUT)
    assert list(reply.outputs) == ["classes"]
    assert list(reply.outputs["classes"].string_val) == [b"low", b"high"]


def test_metadata_hides_the_init_op(stub: prediction_service_pb2_grpc.PredictionServiceStub) -> None:
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "linear"
    signatures = get_model_metadata_pb2.SignatureDefMap()
    stub.GetModelMetadata(request, RPC_TIMEOUT).metadata["signature_def"].Unpack(signatures)
    assert sorted(signatures.signature_def) == ["busy", "classify_x", "regress_x", "serving_default"]
    assert signatures.signature_def["classify_x"].method_name == "tensorflow/serving/classify"


def test_concurrent_requests_each_get_their_own_answer(server: ServerProcess) -> None:
    """With batching on, concurrent requests may share one model run: each must get back exactly its rows."""
    def predict_over_grpc(x: float) -> tuple[float, list[float]]:
        with grpc.insecure_channel(server.grpc_address) as channel:
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "linear"
            request.inputs["x"].CopyFrom(tf.make_tensor_proto([[x], [x + 1]], dtype=tf.float32))
            reply = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, RPC_TIMEOUT)
            return x, list(reply.outputs["y"].float_val)

    def predict_over_rest(x: float) -> tuple[float, list[float]]:
        reply = _post(server, "predict", {"instances": [[x], [x + 1]]})
        return x, [row[0] for row in reply.json()["predictions"]]

    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(predict_over_grpc, [4.0 * i for i in range(40)]))
        answers += list(pool.map(predict_over_rest, [4.0 * i + 2 for i in range(40)]))
    for x, ys in answers:
        assert ys == [x / 4 + 0.5, (x + 1) / 4 + 0.5]


def test_rest_b64_binary_inputs(server: ServerProcess) -> None:
    example = tf.train.Example()
    example.features.feature["x"].float_list.value.append(2.0)
    encoded = base64.b64encode(example.SerializeToString()).decode("ascii")
    reply = _post(server, "predict", {"signature_name": "regress_x", "instances": [{"b64": encoded}]})
    assert reply.status_code == 200
    assert reply.json() == {"predictions": [[1.0]]}
    broken = _post(server, "predict", {"signature_name": "regress_x", "instances": [{"b64": "%%%"}]})
    assert broken.status_code == 400
