"""REST: TF Serving's /v1/models API on a stdlib threading HTTP server, same JSON shapes and HTTP codes."""

from __future__ import annotations

import io
import json
import logging
import re
import socket
import threading
import time
import urllib.parse
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
from tfship.server.models import ModelManager
from tfship.server.rest_json import classification_json, error_json, regression_json
from tfship.server.rest_request import examples_body, parse_json_object, predict_body, signature_name_of
from tfship.server.status import ServingError, failed_precondition, invalid_argument

log = logging.getLogger("tfship.server")

# http_rest_api_util.cc: what the REST handler takes (everything under /v1/, case-insensitively), and the
# shapes of its POST and GET paths, matched whole.
_HANDLED_PATH = re.compile(r"(?i)/v1/.*")
_PREDICTION_PATH = re.compile(
    r"(?i)/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)")
_STATUS_PATH = re.compile(r"(?i)/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:\/(metadata))?")
_INT64_MAX = 2**63 - 1
_MAX_CHUNK_LINE = 4096  # a chunk-size line or trailer longer than this is not HTTP
_CHUNK_SIZE = re.compile(rb"[0-9a-fA-F]{1,16}")


class _HttpRefusal(ServingError):
    """A request refused before the API sees it, with an HTTP code of its own (413, 501)."""

    def __init__(self, code: grpc.StatusCode, message: str, http_status: int):
        super().__init__(code, message)
        self._http_status = http_status

    @property
    def http_status(self) -> int:
        return self._http_status


class BoundedPool:
    """The REST workers with a bounded queue: at most workers + max_queued requests running or waiting; one
    more is refused at once (UNAVAILABLE, 503) rather than piling up behind work that will time out anyway."""

    def __init__(self, workers: int, max_queued: int):
        self._executor = futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rest")
        self._slots = threading.BoundedSemaphore(workers + max_queued)

    def submit(self, work: Callable[[], bytes]) -> futures.Future:
        if not self._slots.acquire(blocking=False):
            raise ServingError(grpc.StatusCode.UNAVAILABLE, "Too many requests queued; retry later")
        try:
            future = self._executor.submit(work)
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(lambda _: self._slots.release())  # also when cancelled before it ran
        return future

    def shutdown(self, wait: bool) -> None:
        self._executor.shutdown(wait=wait)


class _DeadlineReader(io.RawIOBase):
    """The socket's read side with a deadline for the whole request, not just each recv(): a client that
    trickles bytes (slowloris) or stays idle is cut off when the deadline passes."""

    def __init__(self, sock: socket.socket):
        self._sock = sock
        self.deadline = 0.0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("read deadline passed")
        self._sock.settimeout(remaining)
        return self._sock.recv_into(buffer)


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
                 monitoring: MonitoringOptions, timeout_seconds: float, workers: int, max_queued: int = 64,
                 max_body_bytes: int = 64 * 2**20, read_timeout_seconds: float = 30.0,
                 idle_timeout_seconds: float = 60.0):
        self.manager = manager
        self.metrics = metrics
        self.monitoring = monitoring
        self.timeout_seconds = timeout_seconds
        self.max_body_bytes = max_body_bytes
        self.read_timeout_seconds = read_timeout_seconds
        self.idle_timeout_seconds = idle_timeout_seconds
        self.in_flight = InFlight()
        self.draining = False
        # Inference runs on a pool so a request past --rest_api_timeout_in_ms can be answered with 504.
        self.pool = BoundedPool(workers, max_queued)
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: RestServer
    protocol_version = "HTTP/1.1"
    server_version = "tfship-model-server"

    def setup(self) -> None:
        super().setup()
        # Headers and body leave in separate writes: without NODELAY, Nagle + delayed ACK add ~40 ms each.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rfile.close()  # replaced by one whose reads share a deadline
        self._reader = _DeadlineReader(self.connection)
        self.rfile = io.BufferedReader(self._reader)

    def handle_one_request(self) -> None:
        """Waits --rest_api_idle_timeout_in_ms for a request to start, then gives its headers and body
        --rest_api_read_timeout_in_ms in all; past either the connection is closed without an answer."""
        self._reader.deadline = time.monotonic() + self.server.idle_timeout_seconds
        try:
            started = bool(self.rfile.peek(1))
        except OSError:  # TimeoutError included: idle too long
            started = False
        if not started:
            self.close_connection = True
            return
        self._reader.deadline = time.monotonic() + self.server.read_timeout_seconds
        super().handle_one_request()

    def handle_expect_100(self) -> bool:
        """`Expect: 100-continue` (curl sends it for big bodies): a body too large is refused before it is sent."""
        try:
            self._content_length()
        except ServingError as error:
            self._send(error.http_status, error_json(error.message))
            return False
        return super().handle_expect_100()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # per-request access logs would dominate the output under load

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def do_OPTIONS(self) -> None:  # noqa: N802
        self._handle("OPTIONS")

    def do_PUT(self) -> None:  # noqa: N802 - any other method is a "Malformed request", as in TF Serving
        self._handle("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._handle("DELETE")

    def _handle(self, method: str) -> None:
        with self.server.in_flight:
            if self.server.draining:
                self.close_connection = True
            try:
                body = self._read_body()
            except ServingError as error:
                self._send(error.http_status, error_json(error.message))
                return
            path = self.path.split("?", 1)[0]
            monitoring = self.server.monitoring
            if monitoring.prometheus_enabled and path == monitoring.prometheus_path:
                self._send(200, self.server.metrics.exposition().encode(), "text/plain")
                return
            if not _HANDLED_PATH.fullmatch(path):
                self._send(404, b"", "text/html")  # no handler: TF Serving's HTTP server answers a bare 404
                return
            self._dispatch(method, path, body)

    def _dispatch(self, method: str, path: str, body: bytes) -> None:
        """RestApiRequestDispatcher::ProcessRequest: every request under /v1/ is counted in request_count with
        its model name and status, and timed in request_latency (API = the verb, empty for GETs) when OK."""
        started = time.perf_counter()
        request = _RestRequest(method, path)
        payload = b""
        try:
            if method == "OPTIONS":  # a CORS preflight
                if not re.search(r"https?://", self.headers.get("Origin", "")):
                    raise failed_precondition("Origin header is missing in CORS preflight")
            else:
                request.parse()
                payload = self._answer(request, body)
            code = grpc.StatusCode.OK
        except ServingError as error:
            code = error.code
            if not request.parse_failed:  # an unparsable version or name gets an empty body, as in TF Serving
                payload = error_json(error.message) if method != "OPTIONS" else b""
            self._send(error.http_status, payload)
        except Exception:  # noqa: BLE001 - a server bug must still answer, not drop the connection
            log.exception("REST %s %s failed", method, self.path[:200])
            code = grpc.StatusCode.INTERNAL
            self._send(500, error_json("Internal error"))  # its text stays in the log
        else:
            self._send(200, payload)
        metrics = self.server.metrics
        metrics.record_request(request.model_name, code.name)
        if code == grpc.StatusCode.OK:
            metrics.record_latency(request.model_name, request.verb, "REST", time.perf_counter() - started)

    def _answer(self, request: "_RestRequest", body: bytes) -> bytes:
        """HttpRestApiHandler::ProcessRequest after the path is parsed."""
        if not request.matched or (request.method == "POST" and request.verb not in ("predict", "classify",
                                                                                     "regress")):
            raise invalid_argument(f"Malformed request: {request.method} {request.path}")
        if request.method == "GET" and not request.model_name:
            raise invalid_argument("Missing model name in request.")
        work = self._work(request, body)
        if request.method == "GET":  # status and metadata compute nothing: answered even when the queue is full
            return work()
        future = self.server.pool.submit(work)
        try:
            return future.result(timeout=self.server.timeout_seconds)
        except futures.TimeoutError:
            future.cancel()  # still queued: never runs (one already running cannot be stopped)
            raise ServingError(grpc.StatusCode.DEADLINE_EXCEEDED, "Request timed out")

    def _read_body(self) -> bytes:
        """The body, at most --rest_api_max_body_bytes, by Content-Length or chunked; a refused body closes
        the connection (the rest of the stream cannot be framed, or is not worth reading)."""
        transfer_encoding = self.headers.get("Transfer-Encoding")
        if transfer_encoding is not None:
            keep_alive = not self.close_connection and "Content-Length" not in self.headers  # RFC 9112 6.1
            self.close_connection = True
            if transfer_encoding.strip().lower() != "chunked":
                raise _HttpRefusal(grpc.StatusCode.UNIMPLEMENTED,
                                   f"Transfer-Encoding {transfer_encoding!r} is not supported", 501)
            body = self._read_chunked()
            self.close_connection = not keep_alive
            return body
        length = self._content_length()
        if length == 0:
            return b""
        body = self.rfile.read(length)
        if len(body) < length:
            self.close_connection = True
            raise invalid_argument("Request body is shorter than its Content-Length")
        return body

    def _content_length(self) -> int:
        text = self.headers.get("Content-Length")
        if text is None:
            return 0
        if not text.strip().isdigit():
            self.close_connection = True
            raise invalid_argument("Content-Length is not a number")
        length = int(text)
        if length > self.server.max_body_bytes:
            self.close_connection = True
            raise self._too_large()
        return length

    def _too_large(self) -> ServingError:
        return _HttpRefusal(grpc.StatusCode.RESOURCE_EXHAUSTED,
                            f"Request body is larger than {self.server.max_body_bytes} bytes "
                            "(--rest_api_max_body_bytes)", 413)

    def _read_chunked(self) -> bytes:
        """RFC 9112 7.1 chunked coding, bounded: the body as it grows, each size line and trailer."""
        parts: list[bytes] = []
        total = 0
        while True:
            size_text = self._chunk_line().split(b";", 1)[0].strip()
            if not _CHUNK_SIZE.fullmatch(size_text):
                raise invalid_argument("Malformed chunked body: bad chunk size")
            size = int(size_text, 16)
            if size == 0:
                break
            total += size
            if total > self.server.max_body_bytes:
                raise self._too_large()
            chunk = self.rfile.read(size)
            if len(chunk) < size or self.rfile.read(2) != b"\r\n":
                raise invalid_argument("Malformed chunked body: truncated chunk")
            parts.append(chunk)
        for _ in range(64):  # trailer fields, ignored
            if self._chunk_line() in (b"\r\n", b"\n"):
                return b"".join(parts)
        raise invalid_argument("Malformed chunked body: too many trailer fields")

    def _chunk_line(self) -> bytes:
        line = self.rfile.readline(_MAX_CHUNK_LINE + 1)
        if not line.endswith(b"\n"):
            raise invalid_argument("Malformed chunked body: line too long or body truncated")
        return line

    def _work(self, request: "_RestRequest", body: bytes) -> Callable[[], bytes]:
        manager = self.server.manager
        name, version, label = request.model_name, request.version, request.label

        def spec_into(spec: Any) -> None:
            spec.name = name
            if version is not None:
                spec.version.value = version
            elif label is not None:
                spec.version_label = label

        if request.method == "GET":
            if request.subresource == "metadata":
                metadata_request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
                spec_into(metadata_request.model_spec)
                return lambda: _metadata_json(model_metadata(manager, metadata_request))
            status_request = get_model_status_pb2.GetModelStatusRequest()
            spec_into(status_request.model_spec)
            return lambda: _message_json(model_status(manager, status_request))

        def infer() -> bytes:
            document = parse_json_object(body)
            if request.verb == "predict":
                signature_name_of(document)
                servable = manager.resolve(name, version, label)
                may_hold_booleans = b"true" in body or b"false" in body
                return inference.predict_json(servable, predict_body(document), may_hold_booleans)
            examples = examples_body(document)
            servable = manager.resolve(name, version, label)
            if request.verb == "classify":
                rows = inference.classify(servable, examples.signature_name, examples.serialized)
                return classification_json([[(c.label, c.score) for c in row] for row in rows])
            return regression_json(inference.regress(servable, examples.signature_name, examples.serialized))

        return infer

    def _send(self, code: int, payload: bytes, content_type: str = "application/json") -> None:
        self.connection.settimeout(self.server.read_timeout_seconds)  # a client that does not read is let go
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)


class _RestRequest:
    """ParseModelInfo (http_rest_api_util.cc): model name, version or label and verb of a /v1/ path."""

    def __init__(self, method: str, path: str):
        self.method = method
        self.path = path
        self.model_name = ""
        self.version: int | None = None
        self.label: str | None = None
        self.verb = ""  # predict/classify/regress for POSTs; empty for GETs (the request_latency API label)
        self.subresource = ""
        self.matched = False
        self.parse_failed = False

    def parse(self) -> None:
        match = None
        if self.method == "POST":
            match = _PREDICTION_PATH.fullmatch(self.path)
        elif self.method == "GET":
            match = _STATUS_PATH.fullmatch(self.path)
        if match is None:
            return
        self.matched = True
        name, version, label, last = match.groups()
        if self.method == "POST":
            self.verb = last
        else:
            self.subresource = last or ""
        self.model_name = _url_decoded(name or "")
        if version:
            if int(version) > _INT64_MAX:
                self.parse_failed = True
                raise invalid_argument(f"Failed to convert version: {version} to numeric.")
            self.version = int(version)
        if label:
            self.label = _url_decoded(label)


def _url_decoded(text: str) -> str:
    """curl_easy_unescape: %XX sequences decoded, '+' kept."""
    return urllib.parse.unquote_to_bytes(text).decode("utf-8", errors="replace")


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
