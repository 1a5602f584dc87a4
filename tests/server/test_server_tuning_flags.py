"""TF Serving's tuning flags on the real server over loopback: --grpc_channel_arguments (connection age makes a
long-lived channel reconnect; message size limits), --enable_model_warmup (recorded requests replayed before the
version is AVAILABLE), --batching_parameters_file (requests merged and padded in one model run)."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import classification_pb2, predict_pb2, prediction_log_pb2, prediction_service_pb2_grpc
from tensorflow_serving.apis import regression_pb2

from server_harness import HALF_PLUS_TWO
from tiny_models import copy_version, save_linear_model

RPC_TIMEOUT = 20.0


@pytest.fixture(scope="module")
def counting_version(tmp_path_factory: pytest.TempPathFactory) -> str:
    return save_linear_model(str(tmp_path_factory.mktemp("counting_source")), 1, 1.0, 0.0, counting=True)


def _predict(channel: grpc.Channel, model: str, values: np.ndarray, signature: str = "") -> np.ndarray:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(values.astype(np.float32)))
    reply = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, RPC_TIMEOUT)
    return tf.make_ndarray(reply.outputs["y"])


class CountingProxy:
    """A TCP forwarder on 127.0.0.1 that counts the connections clients open through it."""

    def __init__(self, target_port: int):
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._target_port = target_port
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            self.accepted += 1
            upstream = socket.create_connection(("127.0.0.1", self._target_port), timeout=10)
            upstream.settimeout(None)
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._listener.close()


def _connections_for_requests(server: Any, count: int, spacing: float) -> int:
    """Connections one long-lived channel opened while sending `count` predictions `spacing` seconds apart."""
    proxy = CountingProxy(server.grpc_port)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{proxy.port}") as channel:
            for index in range(count):
                y = _predict(channel, "half", np.array([[float(index)]]))
                assert float(y[0, 0]) == 0.5 * index + 2.0
                time.sleep(spacing)
        return proxy.accepted
    finally:
        proxy.close()


def test_max_connection_age_makes_a_long_lived_channel_reconnect(start_server: Any) -> None:
    aged = start_server(f"--model_name=half", f"--model_base_path={HALF_PLUS_TWO}",
                        "--grpc_channel_arguments=grpc.max_connection_age_ms=400,grpc.max_connection_age_grace_ms=2000")
    plain = start_server(f"--model_name=half", f"--model_base_path={HALF_PLUS_TWO}")
    # 12 requests over about 3 s: with a 0.4 s connection age the server sends GOAWAY and the client redials
    # (every request still answered); without it the one connection carries them all.
    assert _connections_for_requests(aged, 12, 0.25) >= 3
    assert _connections_for_requests(plain, 12, 0.25) == 1


def test_message_size_limits_are_resource_exhausted(start_server: Any) -> None:
    server = start_server(f"--model_name=half", f"--model_base_path={HALF_PLUS_TWO}", "--grpc_max_threads=2",
                          "--rest_api_num_threads=2", "--grpc_channel_arguments=grpc.max_receive_message_length=4096,"
                          "grpc.max_send_message_length=1024")
    with grpc.insecure_channel(server.grpc_address) as channel:
        assert _predict(channel, "half", np.array([[2.0]]))[0, 0] == 3.0  # small messages pass both limits
        with pytest.raises(grpc.RpcError) as too_big_request:  # 2000 floats: about 8 KB in
            _predict(channel, "half", np.zeros((2000, 1)))
        assert too_big_request.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        with pytest.raises(grpc.RpcError) as too_big_response:  # 500 floats: 2 KB in (allowed), 2 KB out (not)
            _predict(channel, "half", np.zeros((500, 1)))
        assert too_big_response.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    reply = requests.post(f"{server.rest_url}/v1/models/half:predict", json={"instances": [[2.0]]}, timeout=30)
    assert reply.json() == {"predictions": [[3.0]]}  # REST (its own thread flag) is not limited by gRPC's


def _write_warmup_requests(version_dir: Path, predict_count: int) -> None:
    """TF Serving's warmup file: predict logs on `count`, plus one classify and one regress log."""
    example = tf.train.Example(features=tf.train.Features(
        feature={"x": tf.train.Feature(float_list=tf.train.FloatList(value=[1.0]))}))
    logs = []
    for _ in range(predict_count):
        log = prediction_log_pb2.PredictionLog()
        log.predict_log.request.model_spec.signature_name = "count"
        log.predict_log.request.inputs["x"].CopyFrom(tf.make_tensor_proto([[1.0]], dtype=tf.float32))
        logs.append(log)
    classify = prediction_log_pb2.PredictionLog(classify_log=prediction_log_pb2.ClassifyLog(
        request=classification_pb2.ClassificationRequest()))
    classify.classify_log.request.model_spec.signature_name = "classify_x"
    classify.classify_log.request.input.example_list.examples.append(example)
    regress = prediction_log_pb2.PredictionLog(regress_log=prediction_log_pb2.RegressLog(
        request=regression_pb2.RegressionRequest()))
    regress.regress_log.request.model_spec.signature_name = "regress_x"
    regress.regress_log.request.input.example_list.examples.append(example)
    logs += [classify, regress]
    (version_dir / "assets.extra").mkdir(exist_ok=True)
    with tf.io.TFRecordWriter(str(version_dir / "assets.extra" / "tf_serving_warmup_requests")) as writer:
        for log in logs:
            writer.write(log.SerializeToString())


def test_warmup_requests_run_before_the_version_is_available(start_server: Any, tmp_path: Path,
                                                              counting_version: str) -> None:
    source = Path(copy_version(counting_version, str(tmp_path / "source"), 1))
    _write_warmup_requests(source, predict_count=3)
    base = tmp_path / "counting"
    copy_version(str(source), str(base), 1)

    warmed = start_server("--model_name=counting", f"--model_base_path={base}")
    with grpc.insecure_channel(warmed.grpc_address) as channel:
        # The first request after SERVING is the 4th run of `count`: the 3 warmup records ran at load.
        assert _predict(channel, "counting", np.array([[0.0]]), "count")[0, 0] == 4.0
    log = warmed.log()
    assert "Number of warmup records read: 5." in log
    assert log.index("Finished reading warmup data") < log.index("Successfully loaded servable version")

    cold = start_server("--model_name=counting", f"--model_base_path={base}", "--enable_model_warmup=false")
    with grpc.insecure_channel(cold.grpc_address) as channel:
        assert _predict(channel, "counting", np.array([[0.0]]), "count")[0, 0] == 1.0
    assert "warmup" not in cold.log()


def test_a_warmup_file_that_is_not_tfrecord_fails_the_load(start_server: Any, tmp_path: Path,
                                                           counting_version: str) -> None:
    source = Path(copy_version(counting_version, str(tmp_path / "source"), 1))
    (source / "assets.extra").mkdir()
    (source / "assets.extra" / "tf_serving_warmup_requests").write_bytes(b"not a TFRecord file at all")
    base = tmp_path / "counting"
    copy_version(str(source), str(base), 1)
    server = start_server("--model_name=counting", f"--model_base_path={base}", wait=False)
    assert server.wait_exit(120) == 1
    assert "Please verify your warmup data is in TFRecord format" in server.log().strip().splitlines()[-1]


def test_batching_parameters_merge_and_pad_requests(start_server: Any, tmp_path: Path, counting_version: str) -> None:
    parameters = tmp_path / "batching.config"
    parameters.write_text("max_batch_size { value: 4 }\nbatch_timeout_micros { value: 1000000 }\n"
                          "allowed_batch_sizes: 2\nallowed_batch_sizes: 4\n")
    base = tmp_path / "counting"
    copy_version(counting_version, str(base), 1)
    server = start_server("--model_name=counting", f"--model_base_path={base}", "--enable_batching",
                          f"--batching_parameters_file={parameters}")
    with grpc.insecure_channel(server.grpc_address) as channel:
        # Alone: waits out the 1 s timeout, then runs padded from 1 row to the allowed size 2.
        assert _predict(channel, "counting", np.array([[0.0]]), "rows").tolist() == [[2.0]]
        results: list[list[list[float]]] = []
        barrier = threading.Barrier(3)

        def one() -> None:
            barrier.wait(timeout=30)
            results.append(_predict(channel, "counting", np.array([[0.0]]), "rows").tolist())

        threads = [threading.Thread(target=one) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert results == [[[4.0]]] * 3  # three requests in one run, padded from 3 rows to 4
        with pytest.raises(grpc.RpcError) as too_large:
            _predict(channel, "counting", np.zeros((5, 1)), "rows")
        assert too_large.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "larger than maximum input batch size 4" in too_large.value.details()
