"""REST: TF Serving's /v1/models API on a stdlib threading HTTP server, same JSON shapes and HTTP codes."""

from __future__ import annotations

import json
import logging
import re
import socket
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import grpc
from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2

from tfship.server import inference
from tfship.server.grpc_api import model_metadata, model_status
from tfship.server.metrics import Metrics
from tfship.server.model_config import MonitoringOptions
from tfship.server.models import DEFAULT_SIGNATURE, ModelManager
from tfship.server.rest_json import classification_json, error_json, regression_json
from tfship.server.status import ServingError, invalid_argument, not_found
from tfship.server.tensors import serialized_examples_from_json

log = logging.getLogger("tfship.server")

_MODEL_PATH = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>-?\d+)|/labels/(?P<label>[^/:]+))?"
    r"(?:(?P<metadata>/metadata)|:(?P<verb>predict|classify|regress))?$"
)


def _message_json(message: Any) -> bytes:
    """A protobuf response as TF Serving prints it (proto field names, defaults shown, 1-space indent)."""
    as_dict = json_format.MessageToDict(message, always_print_fields_with_no_presence=True,
                                        preserving_proto_field_name=True)
    return json.dumps(as_dict, indent=1).encode()


class InFlight:
    """Counts requests being handled so shutdown can wait for them."""

    def __init__(self) -> None:
        self._count = 0
        self._idle = threading.Condition()

    def __enter__(self) -> None:
        with self._idle:
            self._count += 1

    def __exit__(self, *exc: object) -> None:
        with self._idle:
            self._count -= 1
            if self._count == 0:
                self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        with self._idle:
            return self._idle.wait_for(lambda: self._count == 0, timeout)


class RestServer(ThreadingHTTPServer):
    daemon_threads = True  # idle keep-alive connections must not hold up exit; in-flight ones are counted
    request_queue_size = 128
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], manager: ModelManager, metrics: Metrics,
                 monitoring: MonitoringOptions, timeout_seconds: float, workers: int):
        self.manager = manager
        self.metrics = metrics
        self.monitoring = monitoring
        self.timeout_seconds = timeout_seconds
        self.in_flight = InFlight()
        self.draining = False
        # Inference runs on a pool so a request past --rest_api_timeout_in_ms can be answered with 504.
        self.pool = futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rest")
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: RestServer
    protocol_version = "HTTP/1.1"
    server_version = "tfship-model-server"

    def setup(self) -> None:
        super().setup()
        # Headers and body leave in separate writes: without NODELAY, Nagle + delayed ACK add ~40 ms each.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # per-request access logs would dominate the output under load

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def _handle(self, method: str) -> None:
        with self.server.in_flight:
            if self.server.draining:
                self.close_connection = True
            started = time.perf_counter()
            model_name, api = "", "unknown"
            try:
                body = self._read_body()
                path = self.path.split("?", 1)[0]
                if method == "GET" and self.server.monitoring.prometheus_enabled and \
                        path == self.server.monitoring.prometheus_path:
                    self._send(200, self.server.metrics.exposition().encode(), "text/plain; version=0.0.4")
                    return
                match = _MODEL_PATH.match(path)
                if match is None:
                    raise not_found(f"Malformed request: {method} {self.path}")
                model_name = match["name"]
                api = match["verb"] or ("metadata" if match["metadata"] else "status")
                expected_method = "POST" if match["verb"] else "GET"
                if method != expected_method:
                    raise ServingError(grpc.StatusCode.UNIMPLEMENTED, f"Malformed request: {method} {self.path}")
                version = int(match["version"]) if match["version"] is not None else None
                work = self._work(api, model_name, version, match["label"], body)
                future = self.server.pool.submit(work)
                try:
                    payload = future.result(timeout=self.server.timeout_seconds)
                except futures.TimeoutError:
                    raise ServingError(grpc.StatusCode.DEADLINE_EXCEEDED, "Request timed out")
                self._send(200, payload)
                self.server.metrics.record(model_name, api, "REST", "OK", time.perf_counter() - started)
            except ServingError as error:
                self._send(error.http_status, error_json(error.message))
                self.server.metrics.record(model_name, api, "REST", error.code.name, time.perf_counter() - started)
            except Exception as error:  # noqa: BLE001 - a server bug must still answer, not drop the connection
                log.exception("REST %s %s failed", method, self.path)
                self._send(500, error_json(f"Internal error: {error}"))

    def _read_body(self) -> bytes:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.close_connection = True  # the rest of the stream cannot be framed
            raise invalid_argument("Content-Length is not a number")
        return self.rfile.read(length) if length > 0 else b""

    def _work(self, api: str, name: str, version: int | None, label: str | None,
              body: bytes) -> Callable[[], bytes]:
        manager = self.server.manager

        def spec_into(spec: Any) -> None:
            spec.name = name
            if version is not None:
                spec.version.value = version
            elif label:
                spec.version_label = label

        if api == "status":
            status_request = get_model_status_pb2.GetModelStatusRequest()
            spec_into(status_request.model_spec)
            return lambda: _message_json(model_status(manager, status_request))
        if api == "metadata":
            metadata_request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
            spec_into(metadata_request.model_spec)
            return lambda: _metadata_json(model_metadata(manager, metadata_request))

        def infer() -> bytes:
            request = _parse_json(body)
            servable = manager.resolve(name, version, label)
            if api == "predict":
                return inference.predict_json(servable, request)
            signature_name = request.get("signature_name") or DEFAULT_SIGNATURE
            serialized = serialized_examples_from_json(request)
            if api == "classify":
                rows = inference.classify(servable, signature_name, serialized)
                return classification_json([[(c.label, c.score) for c in row] for row in rows])
            return regression_json(inference.regress(servable, signature_name, serialized))

        return infer

    def _send(self, code: int, payload: bytes, content_type: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)


def _parse_json(body: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise invalid_argument(f"JSON Parse error: {error}")
    if not isinstance(parsed, dict):
        raise invalid_argument("JSON Value: not an object")
    return parsed


def _metadata_json(response: get_model_metadata_pb2.GetModelMetadataResponse) -> bytes:
    """Metadata with the Any unpacked in place, as TF Serving's REST handler prints it."""
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signature_map)
    options = dict(always_print_fields_with_no_presence=True, preserving_proto_field_name=True)
    document = {
        "model_spec": json_format.MessageToDict(response.model_spec, **options),
        "metadata": {"signature_def": json_format.MessageToDict(signature_map, **options)},
    }
    return json.dumps(document, indent=1).encode()
