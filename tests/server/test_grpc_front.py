"""The gRPC fronts (grpc_front.py): the C++ one serves by default wherever ./run built it, grpcio is the fallback,
and both answer alike, down to grpcio's words for calls no servicer takes. Also the direct model call
(models._direct_caller) against TensorFlow's keyword call, and the runtime's error line without its function tag."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from server_harness import HALF_PLUS_TWO
from tfship.server import front_build, grpc_front
from tfship.server.models import InputSpec, _direct_caller, op_error_summary
from tfship.server.replica import REPLICA_METADATA_KEY

RPC_TIMEOUT = 20.0
HALF_PLUS_TWO_FLAGS = ("--model_name=half_plus_two", f"--model_base_path={HALF_PLUS_TWO}")


def _predict_with_metadata(address: str) -> tuple[list[float], dict[str, str]]:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "half_plus_two"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[1.0], [2.0]], np.float32)))
    with grpc.insecure_channel(address) as channel:
        reply, call = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict.with_call(request,
                                                                                                 RPC_TIMEOUT)
    return tf.make_ndarray(reply.outputs["y"]).ravel().tolist(), dict(call.trailing_metadata())


def _raw_call(address: str, method: str, payload: bytes) -> grpc.RpcError:
    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.RpcError) as raised:
            call(payload, timeout=RPC_TIMEOUT)
    return raised.value


def test_the_cpp_front_is_built_here_and_serves_by_default(start_server: Any) -> None:
    """CI builds it through ./run: a missing build would otherwise pass every other test on grpcio, unnoticed."""
    assert front_build.extension_path().is_file(), "run ./run (or python -m tfship.server.front_build)"
    server = start_server(*HALF_PLUS_TWO_FLAGS)
    assert f"Running gRPC ModelServer at 127.0.0.1:{server.grpc_port} (native)" in server.log()


@pytest.mark.parametrize("front", ["native", "grpcio"])
def test_both_fronts_answer_alike(start_server: Any, front: str) -> None:
    server = start_server(*HALF_PLUS_TWO_FLAGS, f"--grpc_front={front}")
    assert f"({front}) ..." in server.log()
    values, metadata = _predict_with_metadata(server.grpc_address)
    assert values == [2.5, 3.0]
    assert metadata[REPLICA_METADATA_KEY] == socket.gethostname()
    unknown = _raw_call(server.grpc_address, "/tensorflow.serving.PredictionService/NoSuchMethod", b"")
    assert (unknown.code(), unknown.details()) == (grpc.StatusCode.UNIMPLEMENTED, "Method not found!")
    malformed = _raw_call(server.grpc_address, "/tensorflow.serving.PredictionService/Predict", b"\xff\xff\xff")
    assert (malformed.code(), malformed.details()) == (grpc.StatusCode.INTERNAL, "Exception deserializing request!")
    values_after, _ = _predict_with_metadata(server.grpc_address)  # the bad calls left the server serving
    assert values_after == [2.5, 3.0]


def test_an_unknown_front_is_a_flag_error(start_server: Any) -> None:
    server = start_server(*HALF_PLUS_TWO_FLAGS, "--grpc_front=fast", wait=False)
    assert server.wait_exit(60) == 2
    assert "--grpc_front=fast: expected one of auto, native, grpcio" in server.log()


def test_without_the_build_auto_falls_back_and_native_says_how_to_build(monkeypatch: pytest.MonkeyPatch,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(grpc_front, "_grpc_front", None)
    monkeypatch.setattr(grpc_front, "NATIVE_MISSING", "No module named 'tfship.server._grpc_front'")
    assert grpc_front.choose_front("auto") is grpc_front.GrpcioServer
    assert "python -m tfship.server.front_build" in caplog.text
    with pytest.raises(RuntimeError, match="--grpc_front=native: the C\\+\\+ front is not built .*front_build"):
        grpc_front.choose_front("native")
    monkeypatch.undo()
    assert grpc_front.choose_front("auto") is grpc_front.NativeServer


class _TwoInputs(tf.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = tf.Variable(3.0)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="b"),
                                  tf.TensorSpec([None], tf.float32, name="a"),
                                  tf.TensorSpec([None], tf.string, name="tag")])
    def predict(self, b, a, tag):
        return {"difference": (a - b) * self.scale, "tag": tf.strings.join([tag, "!"])}


def test_the_direct_call_answers_as_the_keyword_call(tmp_path: Path) -> None:
    """Inputs bound by name (not by position), a captured variable, a string input and output, and a runtime
    error that keeps its code and line."""
    module = _TwoInputs()
    tf.saved_model.save(module, str(tmp_path), signatures={"serving_default": module.predict})
    function = tf.saved_model.load(str(tmp_path)).signatures["serving_default"]
    specs = {"a": InputSpec.of(tf.float32.as_datatype_enum), "b": InputSpec.of(tf.float32.as_datatype_enum),
             "tag": InputSpec.of(tf.string.as_datatype_enum)}
    direct = _direct_caller(function, specs)
    assert direct is not None
    arrays = {"a": np.array([5.0, 1.0], np.float32), "b": np.array([2.0, 4.0], np.float32),
              "tag": np.array([b"x", b"y"], object)}
    by_keyword = function(**{alias: tf.constant(array) for alias, array in arrays.items()})
    by_direct = direct(arrays)
    assert sorted(by_direct) == ["difference", "tag"]
    assert by_direct["difference"].numpy().tolist() == by_keyword["difference"].numpy().tolist() == [9.0, -9.0]
    assert by_direct["tag"].numpy().tolist() == by_keyword["tag"].numpy().tolist() == [b"x!", b"y!"]
    with pytest.raises(tf.errors.InvalidArgumentError) as raised:  # a and b of different lengths
        direct({**arrays, "b": np.array([1.0, 2.0, 3.0], np.float32)})
    assert op_error_summary(raised.value.message).startswith("Incompatible shapes: [2] vs. [3]")
    assert _direct_caller(lambda **tensors: tensors, specs) is None  # not a loaded signature: the keyword call


def test_the_runtime_error_line_loses_its_function_tag() -> None:
    message = ("{{function_node __inference_signature_wrapper_busy_211}} The second input must be a scalar, "
               "but it has shape [2]\n\t [[{{node Range}}]]")
    assert op_error_summary(message) == "The second input must be a scalar, but it has shape [2]"
