"""Server limits (issue 10 item 6) against the real `python -m tfship.server` on 127.0.0.1: body and message
sizes, socket read/idle timeouts, the bounded work queue, dropping queued work after the REST timeout, no
exception text in answers, and a bounded property-based fuzz run that must never see a 500 or a dead server."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any, Iterator

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from server_harness import HALF_PLUS_TWO, ServerProcess
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc
from tiny_models import save_echo_model, save_linear_model

GOOD_BODY = {"instances": [1.0, 2.0, 5.0]}
GOOD_ANSWER = {"predictions": [2.5, 3.0, 4.5]}
BUSY_ITERATIONS = 400_000  # a few seconds of loop steps in the linear model's `busy` signature


def _good_predict(server: ServerProcess) -> None:
    reply = requests.post(f"{server.rest_url}/v1/models/default:predict", json=GOOD_BODY, timeout=30)
    assert (reply.status_code, reply.json()) == (200, GOOD_ANSWER)


def _read_answer(stream: Any) -> tuple[int, dict[str, str], bytes]:
    status = int(stream.readline().split()[1])
    headers = {}
    while (line := stream.readline().strip()):
        name, _, value = line.decode().partition(":")
        headers[name.lower()] = value.strip()
    return status, headers, stream.read(int(headers.get("content-length", 0)))


def _raw_request(server: ServerProcess, data: bytes, timeout: float = 30.0) -> tuple[int, dict[str, str], bytes]:
    """Sends bytes as they are, reads one answer (status, headers, body); the connection is then closed."""
    with socket.create_connection(("127.0.0.1", server.rest_port), timeout=timeout) as connection:
        connection.sendall(data)
        return _read_answer(connection.makefile("rb"))


def _closed_by_server(connection: socket.socket, budget_s: float) -> bool:
    """True when the server closes the connection within budget_s (recv sees EOF or a reset)."""
    connection.settimeout(budget_s)
    try:
        return connection.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


@pytest.fixture(scope="module")
def linear_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("linear")
    save_linear_model(str(base), 1, scale=1.0, offset=0.0, counting=True)
    return base


# --- body and message sizes -------------------------------------------------------------------------------

def test_rest_body_size_is_bounded_before_reading(start_server: Any) -> None:
    server: ServerProcess = start_server("--model_name=default", f"--model_base_path={HALF_PLUS_TWO}",
                                         "--rest_api_max_body_bytes=1000")
    head = "POST /v1/models/default:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    # A huge Content-Length with no body at all: refused at once (were it read, this would hang).
    status, headers, body = _raw_request(server, f"{head}Content-Length: {10**12}\r\n\r\n".encode(), timeout=10)
    assert status == 413
    assert headers["connection"] == "close"
    assert json.loads(body) == {"error": "Request body is larger than 1000 bytes (--rest_api_max_body_bytes)"}
    # Expect: 100-continue: refused instead of "100 Continue", so the client never sends the body.
    status, _, body = _raw_request(server, f"{head}Content-Length: 5000\r\nExpect: 100-continue\r\n\r\n".encode(),
                                   timeout=10)
    assert status == 413
    # Chunked: the body is counted as it arrives.
    chunk = b"x" * 600
    chunked = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    status, _, body = _raw_request(server, f"{head}Transfer-Encoding: chunked\r\n\r\n".encode() + chunked * 2
                                   + b"0\r\n\r\n", timeout=10)
    assert status == 413
    # Within the limit both framings work, a chunked body included.
    good = json.dumps(GOOD_BODY).encode()
    status, _, body = _raw_request(server, f"{head}Transfer-Encoding: chunked\r\n\r\n".encode()
                                   + f"{len(good) - 5:x}\r\n".encode() + good[:-5] + b"\r\n5;ext=1\r\n"
                                   + good[-5:] + b"\r\n0\r\nTrailer: t\r\n\r\n")
    assert (status, json.loads(body)) == (200, GOOD_ANSWER)
    padded = good + b" " * (1000 - len(good))
    status, _, body = _raw_request(server, f"{head}Content-Length: {len(padded)}\r\n\r\n".encode() + padded)
    assert (status, json.loads(body)) == (200, GOOD_ANSWER)
    # A malformed chunked body or an unknown coding is refused, never a 500.
    status, _, _ = _raw_request(server, f"{head}Transfer-Encoding: chunked\r\n\r\nzz\r\n".encode(), timeout=10)
    assert status == 400
    status, _, _ = _raw_request(server, f"{head}Transfer-Encoding: gzip\r\n\r\n".encode(), timeout=10)
    assert status == 501
    _good_predict(server)


def _grpc_predict_of_size(channel: grpc.Channel, floats: int) -> predict_pb2.PredictResponse:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "default"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.ones([floats, 1], np.float32)))
    return prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, 60)


def test_grpc_receive_size_has_a_default_bound(start_server: Any) -> None:
    server: ServerProcess = start_server("--model_name=default", f"--model_base_path={HALF_PLUS_TWO}")
    options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    with grpc.insecure_channel(server.grpc_address, options=options) as channel:
        assert len(_grpc_predict_of_size(channel, 1000).outputs["y"].float_val) == 1000
        with pytest.raises(grpc.RpcError) as refused:
            _grpc_predict_of_size(channel, 17 * 2**20)  # 68 MiB of floats, over the 64 MiB default
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert len(_grpc_predict_of_size(channel, 10).outputs["y"].float_val) == 10


# --- socket timeouts --------------------------------------------------------------------------------------

def test_slow_and_idle_clients_are_cut_off_while_others_are_served(start_server: Any) -> None:
    server: ServerProcess = start_server("--model_name=default", f"--model_base_path={HALF_PLUS_TWO}",
                                         "--rest_api_read_timeout_in_ms=1500", "--rest_api_idle_timeout_in_ms=1500")
    header = b"POST /v1/models/default:predict HTTP/1.1\r\nHost: x\r\n" + b"X-Padding: " + b"a" * 400
    cut_after = None
    with socket.create_connection(("127.0.0.1", server.rest_port), timeout=5) as slowloris:
        started = time.monotonic()
        for index in range(len(header)):  # one byte every 0.1 s: each recv() is quick, the whole is not
            try:
                slowloris.sendall(header[index:index + 1])
            except (BrokenPipeError, ConnectionResetError):
                cut_after = index
                break
            if index == 3:
                _good_predict(server)  # served while the slow client holds its connection
            if _closed_by_server(slowloris, 0.1):
                cut_after = index
                break
        assert cut_after is not None, "a client trickling headers was never cut off"
        assert time.monotonic() - started < 20
    # Idle: a keep-alive connection after one answer, and one that never sends anything.
    with socket.create_connection(("127.0.0.1", server.rest_port), timeout=5) as keep_alive, \
            socket.create_connection(("127.0.0.1", server.rest_port), timeout=5) as silent:
        keep_alive.sendall(b"GET /v1/models/default HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _read_answer(keep_alive.makefile("rb"))[0] == 200
        assert _closed_by_server(keep_alive, 15)
        assert _closed_by_server(silent, 15)
    _good_predict(server)


# --- bounded queue and dropped work -----------------------------------------------------------------------

def _busy_rest(server: ServerProcess, results: list, iterations: int = BUSY_ITERATIONS) -> threading.Thread:
    def call() -> None:
        reply = requests.post(f"{server.rest_url}/v1/models/linear:predict",
                              json={"signature_name": "busy", "inputs": iterations}, timeout=120)
        results.append(reply.status_code)

    thread = threading.Thread(target=call)
    thread.start()
    return thread


def _busy_grpc(channel: grpc.Channel, iterations: int = BUSY_ITERATIONS) -> grpc.Future:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "linear"
    request.model_spec.signature_name = "busy"
    request.inputs["iterations"].CopyFrom(tf.make_tensor_proto(iterations, dtype=tf.int32))
    return prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict.future(request, 120)


def _count_grpc(channel: grpc.Channel) -> float:
    """Runs the counting model's `count` signature once; answers how many times it has run, this one included."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "linear"
    request.model_spec.signature_name = "count"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto([[0.0]], dtype=tf.float32))
    reply = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, 60)
    return reply.outputs["y"].float_val[0]


def test_full_queue_answers_503_and_resource_exhausted(start_server: Any, linear_model: Path) -> None:
    server: ServerProcess = start_server("--model_name=linear", f"--model_base_path={linear_model}",
                                         "--rest_api_num_threads=1", "--grpc_max_threads=1",
                                         "--max_queued_requests=1", "--rest_api_timeout_in_ms=120000")
    results: list[int] = []
    running = [_busy_rest(server, results), _busy_rest(server, results)]  # one runs, one waits
    time.sleep(1.0)
    assert not results, "busy requests ended before the queue was full: test is moot"
    refused = requests.post(f"{server.rest_url}/v1/models/linear:predict",
                            json={"signature_name": "busy", "inputs": 1}, timeout=30)
    assert refused.status_code == 503
    assert refused.json() == {"error": "Too many requests queued; retry later"}
    # Status GETs compute nothing and are still answered (Kubernetes probes use them).
    assert requests.get(f"{server.rest_url}/v1/models/linear", timeout=30).status_code == 200
    with grpc.insecure_channel(server.grpc_address) as channel:
        calls = [_busy_grpc(channel), _busy_grpc(channel)]
        time.sleep(1.0)
        with pytest.raises(grpc.RpcError) as exhausted:
            _busy_grpc(channel, 1).result()
        assert exhausted.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert all(call.result().outputs["total"].float_val[0] == pytest.approx(2.0) for call in calls)
    for thread in running:
        thread.join(timeout=120)
    assert results == [200, 200]


def test_queued_work_is_dropped_after_the_rest_timeout(start_server: Any, linear_model: Path) -> None:
    server: ServerProcess = start_server("--model_name=linear", f"--model_base_path={linear_model}",
                                         "--rest_api_num_threads=1", "--rest_api_timeout_in_ms=1000")
    with grpc.insecure_channel(server.grpc_address) as channel:
        started = time.monotonic()
        _busy_grpc(channel).result()
        busy_seconds = time.monotonic() - started
        assert busy_seconds > 1.5, "busy signature too quick on this machine: the test is moot"
        results: list[int] = []
        blocker = _busy_rest(server, results)  # takes the only REST worker past its 1 s timeout
        time.sleep(0.3)
        queued = requests.post(f"{server.rest_url}/v1/models/linear:predict",
                               json={"signature_name": "count", "instances": [[0.0]]}, timeout=30)
        assert queued.status_code == 504
        blocker.join(timeout=60)
        assert results == [504]
        time.sleep(3 * busy_seconds)  # the worker is free again: a queued request not dropped would run now
        assert _count_grpc(channel) == 1.0, "the timed-out request ran after its 504"


# --- malformed input and exception text -------------------------------------------------------------------

@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("fuzz")
    echo = folder / "echo"
    save_echo_model(str(echo), 1)
    config = folder / "models.config"
    config.write_text("model_config_list {\n"
                      f'  config {{ name: "default" base_path: "{HALF_PLUS_TWO}" model_platform: "tensorflow" }}\n'
                      f'  config {{ name: "echo" base_path: "{echo}" model_platform: "tensorflow" }}\n}}\n')
    server = ServerProcess([f"--model_config_file={config}", "--rest_api_max_body_bytes=1000000"],
                           folder / "server.log")
    try:
        yield server.wait_ready()
    finally:
        server.stop()


HOSTILE_BODIES = [
    b"[" * 200_000 + b"]" * 200_000,  # deep nesting, closed
    b'{"instances": ' + b"[" * 50_000,  # deep nesting, never closed
    b'{"instances": [' + b"9" * 5000 + b"]}",  # an integer past Python's int-string limit
    b'{"instances": [1e999999, -1e999999]}',
    b'{"instances": ["\\ud800"], "signature_name": "string"}',  # a lone surrogate
    b'{"inputs": {"str_tensor": ["\\udfff\\ud800"]}, "signature_name": "str_only"}',
    b'{"instances": [{"b64": "\\ud800"}], "signature_name": "string"}',
    b'{"\\ud800": 1}',
    b'\xff\xfe{"instances": [1]}',
    b'{"instances": [1.0, 2.0], "signature_name": ["serving_default"]}',
    b'{"instances": [1.0], "signature_name": null}',
    b'{"inputs": {"x": {"b64": 5}}}',
    b'{"instances": [' + b'"x",' * 10 + b'1]}',
    b'{"examples": [{"x": [1e400]}], "signature_name": "regress_x_to_y"}',
    b'{"examples": [{"x": [' + b"9" * 30 + b']}], "signature_name": "regress_x_to_y"}',
    b'{"examples": [{"x": {"b64": "\\ud800"}}]}',
    b'{"instances": [[[[[[]]]]]], "signature_name": "four"}',
    b'{"instances": [' + b"[1]," * 3000 + b'[1]]}',
]


@pytest.mark.parametrize("body", HOSTILE_BODIES, ids=range(len(HOSTILE_BODIES)))
@pytest.mark.parametrize("verb", ["predict", "classify", "regress"])
def test_hostile_json_is_400_with_an_error(fuzz_server: ServerProcess, body: bytes, verb: str) -> None:
    """Refused with 400 {"error": ...}, or answered (JSON that Python reads and rapidjson refuses, e.g. 1e400 is
    Infinity here): never a 500."""
    for model in ("default", "echo"):
        reply = requests.post(f"{fuzz_server.rest_url}/v1/models/{model}:{verb}", data=body, timeout=60)
        assert reply.status_code in (200, 400), (model, reply.status_code, reply.text[:300])
        if reply.status_code == 200:
            continue
        assert set(reply.json()) == {"error"}
        assert "Traceback" not in reply.text and "Internal error" not in reply.text


def _check_answer(reply: requests.Response) -> None:
    assert reply.status_code < 500 or reply.status_code in (503, 504), (reply.status_code, reply.text[:300])
    if reply.headers.get("Content-Type") == "application/json" and reply.content:
        document = reply.json()
        if reply.status_code >= 400:
            assert set(document) == {"error"} and isinstance(document["error"], str)
    assert "Traceback" not in reply.text


JSON_LEAVES = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-2**70, max_value=2**70)
               | st.floats() | st.text(max_size=20) | st.fixed_dictionaries({"b64": st.text(max_size=20)}))
JSON_VALUES = st.recursive(JSON_LEAVES, lambda inner: st.lists(inner, max_size=5)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=5), max_leaves=30)
API_KEYS = st.sampled_from(["instances", "inputs", "signature_name", "examples", "context", "output_filter"])
SIGNATURES = st.sampled_from(["serving_default", "int32", "float32", "float64", "string", "four", "with_bin",
                              "int_str", "str_only", "bytes_out", "half", "complex_out", "classify_x_to_y",
                              "regress_x_to_y", "x"])
DOCUMENTS = st.dictionaries(API_KEYS, JSON_VALUES, max_size=4) | st.fixed_dictionaries(
    {"signature_name": SIGNATURES, "instances": JSON_VALUES}) | st.fixed_dictionaries(
    {"signature_name": SIGNATURES, "inputs": JSON_VALUES}) | JSON_VALUES
BODIES = (DOCUMENTS.map(lambda document: json.dumps(document).encode())
          | st.binary(max_size=300)
          | DOCUMENTS.map(lambda document: json.dumps(document).encode()[:-1]))  # truncated
PATH_PARTS = st.sampled_from(["/v1/models/default", "/v1/models/echo", "/v1/models/", "/v1/", "/", "/v1/models",
                              "/versions/", "/labels/", ":predict", ":classify", ":regress", "/metadata", "123",
                              "99999999999999999999", "%", "%ff", "..", "//", "?a=b", "#"]) | st.text(max_size=8)


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(method=st.sampled_from(["GET", "POST", "POST", "POST", "PUT", "DELETE", "OPTIONS"]),
       path=st.lists(PATH_PARTS, min_size=1, max_size=6).map("".join), body=BODIES)
def _fuzz_one(server: ServerProcess, session: requests.Session, stop_at: float, method: str, path: str,
              body: bytes) -> None:
    if time.monotonic() > stop_at:  # the time cap: later examples pass without a request
        return
    quoted = urllib.parse.quote(path if path.startswith("/") else "/" + path, safe="/:%?=&#")
    reply = session.request(method, f"{server.rest_url}{quoted}", data=body, timeout=60)
    _check_answer(reply)


FUZZ_SECONDS = 150.0


def test_fuzzed_requests_never_get_a_500_or_kill_the_server(fuzz_server: ServerProcess) -> None:
    with requests.Session() as session:
        _fuzz_one(fuzz_server, session, time.monotonic() + FUZZ_SECONDS)
    assert fuzz_server.process.poll() is None
    _good_predict(fuzz_server)
    assert "Traceback" not in fuzz_server.log(), fuzz_server.log()[-3000:]


# --- unexpected errors: unit tests (no real trigger is left in the server; a stub manager raises one) --------

class _BrokenManager:
    """A stand-in model manager whose lookups fail the way a server bug would."""

    def resolve(self, *args: Any) -> Any:
        raise RuntimeError("secret internal detail")


def test_rest_unexpected_error_answers_500_without_its_text(caplog: pytest.LogCaptureFixture) -> None:
    from tfship.server.metrics import Metrics
    from tfship.server.model_config import MonitoringOptions
    from tfship.server.rest_api import RestServer

    server = RestServer(("127.0.0.1", 0), _BrokenManager(), Metrics(), MonitoringOptions(), 10.0, 1)  # type: ignore[arg-type]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        reply = requests.post(f"http://127.0.0.1:{server.server_address[1]}/v1/models/m:predict",
                              json=GOOD_BODY, timeout=30)
    finally:
        server.shutdown()
        server.server_close()
    assert (reply.status_code, reply.json()) == (500, {"error": "Internal error"})
    assert "secret internal detail" in caplog.text  # the details are logged


def test_grpc_unexpected_error_answers_internal_without_its_text(caplog: pytest.LogCaptureFixture) -> None:
    from tfship.server.grpc_api import PredictionService
    from tfship.server.metrics import Metrics

    class Context:  # the part of grpc.ServicerContext _serve uses
        aborted: tuple | None = None

        def time_remaining(self) -> None:
            return None

        def abort(self, code: grpc.StatusCode, details: str) -> None:
            self.aborted = (code, details)
            raise RuntimeError("aborted")  # grpc's abort raises too

    context = Context()
    service = PredictionService(_BrokenManager(), Metrics())  # type: ignore[arg-type]
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "m"
    with pytest.raises(RuntimeError, match="aborted"):
        service.Predict(request, context)  # type: ignore[arg-type]
    assert context.aborted == (grpc.StatusCode.INTERNAL, "Internal error")
    assert "secret internal detail" in caplog.text
