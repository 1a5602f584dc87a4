"""Model lifecycle of the real server: version policies and labels, config reload, new versions picked up
under load, a version that fails to load, startup refusal, and draining on SIGTERM. Each test its own server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
import requests
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from server_harness import HALF_PLUS_TWO, HALF_PLUS_TWO_2_VERSIONS, ServerProcess, require_testdata
from tiny_models import copy_version, save_broken_version, save_linear_model

RPC_TIMEOUT = 20.0
AVAILABLE = get_model_status_pb2.ModelVersionStatus.AVAILABLE
END = get_model_status_pb2.ModelVersionStatus.END


@pytest.fixture(scope="module")
def linear_versions(tmp_path_factory: pytest.TempPathFactory) -> dict[int, str]:
    """Version 1 computes y = x, version 2 computes y = 10x (built once, copied into each test's base path)."""
    source = str(tmp_path_factory.mktemp("linear_source"))
    return {1: save_linear_model(source, 1, scale=1.0, offset=0.0),
            2: save_linear_model(source, 2, scale=10.0, offset=0.0)}


def _write_config(path: Path, models: list[str]) -> Path:
    path.write_text("model_config_list {\n" + "".join(f"  config {{ {m} }}\n" for m in models) + "}\n")
    return path


def _status(channel: grpc.Channel, name: str) -> dict[int, tuple[int, int, str]]:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = name
    reply = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request, RPC_TIMEOUT)
    return {s.version: (s.state, s.status.error_code, s.status.error_message) for s in reply.model_version_status}


def _predict(channel: grpc.Channel, name: str, x: float, version: int | None = None, label: str | None = None,
             signature: str = "") -> tuple[int, float]:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    request.inputs["x"].CopyFrom(tf.make_tensor_proto([[x]], dtype=tf.float32))
    reply = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, RPC_TIMEOUT)
    return reply.model_spec.version.value, float(reply.outputs["y"].float_val[0])


def test_version_policies_labels_and_config_reload(start_server: Any, tmp_path: Path,
                                                   linear_versions: dict[int, str]) -> None:
    base = HALF_PLUS_TWO_2_VERSIONS
    require_testdata()  # the config file names TF Serving's models; the server only sees the file
    config = _write_config(tmp_path / "models.config", [
        f'name: "all" base_path: "{base}" model_platform: "tensorflow" model_version_policy {{ all {{}} }} '
        'version_labels { key: "stable" value: 123 } version_labels { key: "canary" value: 124 }',
        f'name: "specific" base_path: "{base}" model_version_policy {{ specific {{ versions: 123 }} }}',
        f'name: "latest" base_path: "{base}"',
    ])
    # Labels at start-up name versions not loaded yet: TF Serving needs this flag for that (serving_config.md).
    server: ServerProcess = start_server(f"--model_config_file={config}", "--allow_version_labels_for_unavailable_models")
    with grpc.insecure_channel(server.grpc_address) as channel:
        assert _status(channel, "all") == {124: (AVAILABLE, 0, ""), 123: (AVAILABLE, 0, "")}
        assert list(_status(channel, "specific")) == [123]
        assert list(_status(channel, "latest")) == [124]
        assert _predict(channel, "all", 2.0, label="stable") == (123, 3.0)
        assert _predict(channel, "all", 2.0, label="canary") == (124, 3.0)
        assert _predict(channel, "all", 2.0) == (124, 3.0)  # no version: the latest available
        with pytest.raises(grpc.RpcError) as raised:
            _predict(channel, "latest", 2.0, version=123)
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND

        rest = f"{server.rest_url}/v1/models/all"
        by_label = requests.post(f"{rest}/labels/stable:predict", json={"instances": [[2.0]]}, timeout=RPC_TIMEOUT)
        assert by_label.json() == {"predictions": [[3.0]]}
        assert requests.get(f"{rest}/labels/canary", timeout=RPC_TIMEOUT).json()["model_version_status"][0][
            "version"] == "124"
        unknown_label = requests.post(f"{rest}/labels/nope:predict", json={"instances": [[2.0]]}, timeout=RPC_TIMEOUT)
        assert unknown_label.status_code == 400

        # A reload that moves a label to a version that is not available is refused as a whole (even with
        # --allow_version_labels_for_unavailable_models, which only lets new labels name such versions).
        refused = model_management_pb2.ReloadConfigRequest()
        text_format.Parse(f'model_config_list {{ config {{ name: "all" base_path: "{base}" '
                          'version_labels { key: "stable" value: 999 } } }', refused.config)
        with pytest.raises(grpc.RpcError) as raised:
            model_service_pb2_grpc.ModelServiceStub(channel).HandleReloadConfigRequest(refused, RPC_TIMEOUT)
        assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert _predict(channel, "specific", 2.0) == (123, 3.0)  # nothing was dropped

        # HandleReloadConfigRequest: drop two models, add one; the kept one serves throughout.
        tiny_base = tmp_path / "tiny"
        copy_version(linear_versions[2], str(tiny_base), 2)
        reload = model_management_pb2.ReloadConfigRequest()
        text_format.Parse(f'model_config_list {{ config {{ name: "latest" base_path: "{base}" }} '
                          f'config {{ name: "tiny" base_path: "{tiny_base}" }} }}', reload.config)
        model_service_pb2_grpc.ModelServiceStub(channel).HandleReloadConfigRequest(reload, RPC_TIMEOUT)
        assert _predict(channel, "tiny", 2.0) == (2, 20.0)
        assert _predict(channel, "latest", 2.0) == (124, 3.0)
        with pytest.raises(grpc.RpcError) as raised:
            _predict(channel, "specific", 2.0)
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND


def test_new_version_is_picked_up_under_load_without_failed_requests(
        start_server: Any, tmp_path: Path, linear_versions: dict[int, str]) -> None:
    base = tmp_path / "linear"
    copy_version(linear_versions[1], str(base), 1)
    server: ServerProcess = start_server("--model_name=linear", f"--model_base_path={base}",
                                         "--file_system_poll_wait_seconds=1")
    failures: list[str] = []
    answered = 0
    stop_load = threading.Event()

    def load() -> None:
        nonlocal answered
        with grpc.insecure_channel(server.grpc_address) as load_channel:
            deadline = time.monotonic() + 120
            while not stop_load.is_set() and time.monotonic() < deadline:
                try:
                    version, y = _predict(load_channel, "linear", 3.0)
                    if y != {1: 3.0, 2: 30.0}[version]:
                        failures.append(f"version {version} answered {y}")
                    answered += 1
                except grpc.RpcError as error:
                    failures.append(f"{error.code()}: {error.details()}")

    loader = threading.Thread(target=load)
    loader.start()
    try:
        with grpc.insecure_channel(server.grpc_address) as channel:
            assert _predict(channel, "linear", 2.0) == (1, 2.0)
            copy_version(linear_versions[2], str(base), 2)
            for _ in range(120):  # bounded: the poller runs every second
                if _status(channel, "linear").get(1, (None,))[0] == END:
                    break
                time.sleep(0.5)
            assert _status(channel, "linear") == {2: (AVAILABLE, 0, ""), 1: (END, 0, "")}
            assert _predict(channel, "linear", 2.0) == (2, 20.0)
    finally:
        stop_load.set()
        loader.join(timeout=30)
    assert failures == []
    assert answered > 0


def test_version_that_fails_to_load_is_reported_and_others_serve(
        start_server: Any, tmp_path: Path, linear_versions: dict[int, str]) -> None:
    base = tmp_path / "linear"
    copy_version(linear_versions[1], str(base), 1)
    broken = save_broken_version(str(base), 2)
    config = _write_config(tmp_path / "models.config",
                           [f'name: "linear" base_path: "{base}" model_version_policy {{ all {{}} }}'])
    server: ServerProcess = start_server(f"--model_config_file={config}")
    with grpc.insecure_channel(server.grpc_address) as channel:
        statuses = _status(channel, "linear")
        assert statuses[1] == (AVAILABLE, 0, "")
        state, error_code, message = statuses[2]
        assert state == END and error_code != 0 and broken in message
        assert _predict(channel, "linear", 2.0) == (1, 2.0)
    rest_status = requests.get(f"{server.rest_url}/v1/models/linear/versions/2", timeout=RPC_TIMEOUT).json()
    assert rest_status["model_version_status"][0]["status"]["error_code"] == "UNKNOWN"
    assert "Failed to load servable version 2" in server.log()


def test_server_refuses_to_start_when_no_version_loads(start_server: Any, tmp_path: Path) -> None:
    base = tmp_path / "broken"
    broken = save_broken_version(str(base), 1)
    server: ServerProcess = start_server("--model_name=broken", f"--model_base_path={base}", wait=False)
    assert server.wait_exit(120) == 1
    last_line = server.log().strip().splitlines()[-1]
    assert last_line.startswith("tfship.server: error: Failed to load servable version 1 of broken")
    assert broken in last_line


def test_sigterm_drains_in_flight_requests_and_exits_0(start_server: Any, tmp_path: Path,
                                                       linear_versions: dict[int, str]) -> None:
    base = tmp_path / "linear"
    copy_version(linear_versions[1], str(base), 1)
    server: ServerProcess = start_server("--model_name=linear", f"--model_base_path={base}",
                                         "--shutdown_grace_seconds=120")
    iterations = 400_000  # a few seconds of loop steps on this kind of machine: long enough to be in flight
    results: dict[str, Any] = {}
    finished = {"grpc": threading.Event(), "rest": threading.Event()}

    def grpc_call() -> None:
        with grpc.insecure_channel(server.grpc_address) as channel:
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "linear"
            request.model_spec.signature_name = "busy"
            request.inputs["iterations"].CopyFrom(tf.make_tensor_proto(iterations, dtype=tf.int32))
            try:
                reply = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, 120)
                results["grpc"] = reply.outputs["total"].float_val[0]
            except grpc.RpcError as error:
                results["grpc"] = error
        finished["grpc"].set()

    def rest_call() -> None:
        try:
            reply = requests.post(f"{server.rest_url}/v1/models/linear:predict",
                                  json={"signature_name": "busy", "inputs": iterations}, timeout=120)
            results["rest"] = (reply.status_code, reply.json())
        except requests.RequestException as error:
            results["rest"] = error
        finished["rest"].set()

    callers = [threading.Thread(target=grpc_call), threading.Thread(target=rest_call)]
    for caller in callers:
        caller.start()
    time.sleep(1.0)  # let both requests reach the model
    assert not any(event.is_set() for event in finished.values()), "requests ended before SIGTERM: test is moot"
    os.kill(server.process.pid, signal.SIGTERM)
    assert server.wait_exit(120) == 0
    for caller in callers:
        caller.join(timeout=30)
    assert results["grpc"] == pytest.approx(2.0)
    assert results["rest"] == (200, {"outputs": pytest.approx(2.0)})
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{server.rest_url}/v1/models/linear", timeout=5)
    assert "Shutting down: draining in-flight requests" in server.log()


def test_ports_open_only_once_models_load_and_config_file_is_polled(
        start_server: Any, tmp_path: Path, linear_versions: dict[int, str]) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    copy_version(linear_versions[1], str(second), 1)
    config = _write_config(tmp_path / "models.config", [f'name: "first" base_path: "{first}"'])
    server: ServerProcess = start_server(f"--model_config_file={config}", "--file_system_poll_wait_seconds=1",
                                         "--model_config_file_poll_wait_seconds=1", "--rest_api_timeout_in_ms=1000",
                                         wait=False)
    # No version on disk yet: the server waits for one and keeps its ports closed (as TF Serving does).
    for _ in range(3):
        assert server.process.poll() is None
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{server.rest_url}/v1/models/first", timeout=5)
        time.sleep(1)
    copy_version(linear_versions[2], str(first), 2)
    server.wait_ready()
    with grpc.insecure_channel(server.grpc_address) as channel:
        assert _predict(channel, "first", 1.0) == (2, 10.0)
        _write_config(config, [f'name: "first" base_path: "{first}"', f'name: "second" base_path: "{second}"'])
        for _ in range(60):  # bounded: the config file is read every second
            try:
                if _predict(channel, "second", 1.0) == (1, 1.0):
                    break
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.NOT_FOUND
            time.sleep(0.5)
        assert _predict(channel, "second", 1.0) == (1, 1.0)
    # --rest_api_timeout_in_ms: a request running past it is answered 504 DEADLINE_EXCEEDED.
    slow = requests.post(f"{server.rest_url}/v1/models/first:predict",
                         json={"signature_name": "busy", "inputs": 300_000}, timeout=60)
    assert slow.status_code == 504
    assert slow.json() == {"error": "Request timed out"}


def test_port_in_use_is_a_one_line_error() -> None:
    require_testdata()
    with socket.socket() as occupant:
        occupant.bind(("127.0.0.1", 0))
        occupant.listen()
        port = occupant.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "tfship.server", f"--port={port}", "--bind_address=127.0.0.1",
                                 f"--model_base_path={HALF_PLUS_TWO}"], capture_output=True, text=True, timeout=180)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(f"tfship.server: error: cannot listen for gRPC on "
                                                             f"127.0.0.1:{port}")
