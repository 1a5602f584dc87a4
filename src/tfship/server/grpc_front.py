"""The gRPC transport under the servicers of grpc_api: grpc++ (the C++ extension _grpc_front) or grpcio.

Why a C++ front: grpcio's Python server runs a few hundred lines of Python per call (its polling thread, a thread
pool hand-off, the receive and send state machine): on one core that alone caps a no-op Predict at about 3,500
calls/s, above what any model adds. With grpc++ taking the calls, Python's share of a call is next_call() and
finish() around the unchanged servicer method. The servicers are registered exactly as on a grpcio server (the
generated add_*Servicer_to_server functions), so both transports serve the same methods with the same code.

Build the extension with `python -m tfship.server.front_build` (./run and the serving image do). Without it the
server falls back to grpcio and says so once in its log.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tfship.server.replica import ReplicaInterceptor

log = logging.getLogger("tfship.server")

Registration = Callable[[Any], None]  # registers servicers on a server, as the generated add_*_to_server do

try:
    from tfship.server import _grpc_front
except ImportError as error:  # not built here: grpcio serves
    _grpc_front = None
    NATIVE_MISSING = str(error)
else:
    NATIVE_MISSING = ""


class _Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str):
        super().__init__(details)
        self.code = code
        self.details = details


class _CallContext:
    """What the servicers use of grpc.ServicerContext (grpc_api._Handler._serve); the front adds the replica's
    trailing metadata itself."""

    __slots__ = ("_deadline",)

    def __init__(self, seconds_remaining: float | None):
        self._deadline = None if seconds_remaining is None else time.monotonic() + seconds_remaining

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else self._deadline - time.monotonic()

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise _Aborted(code, details)


class _CallDetails(grpc.HandlerCallDetails):
    def __init__(self, method: str):
        self.method = method
        self.invocation_metadata = ()


class _Registry:
    """Stands in for grpc.Server while the generated add_*Servicer_to_server functions register handlers."""

    def __init__(self) -> None:
        self.generic_handlers: list[grpc.GenericRpcHandler] = []

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self.generic_handlers.extend(handlers)

    def add_registered_method_handlers(self, service: str, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        self.generic_handlers.append(grpc.method_handlers_generic_handler(service, handlers))

    def handler(self, method: str) -> grpc.RpcMethodHandler | None:
        for generic in self.generic_handlers:
            found = generic.service(_CallDetails(method))
            if found is not None:
                return found
        return None


_OK = grpc.StatusCode.OK.value[0]


class NativeServer:
    """grpc++ takes the calls (bound and listening from construction on); start() starts the worker threads.
    Offers what app.RunningServer uses of grpc.Server: start() and stop(grace) -> an Event set once drained."""

    front_name = "native"

    def __init__(self, registrations: Sequence[Registration], address: str,
                 options: Sequence[tuple[str, int | str]], max_workers: int, max_queued: int):
        registry = _Registry()
        for register in registrations:
            register(registry)
        self._registry = registry
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}
        self._max_workers = max_workers
        self._front = _grpc_front.Front(address, list(options), max_workers + max_queued, socket.gethostname())
        self.health = NativeHealth(self._front)
        self.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)  # grpc++ starts "" as SERVING

    @property
    def port(self) -> int:
        return self._front.port

    def start(self) -> None:
        for index in range(self._max_workers):
            threading.Thread(target=self._work, name=f"grpc-{index}", daemon=True).start()

    def stop(self, grace_seconds: float) -> threading.Event:
        """Refuse new calls now; running and queued ones get grace_seconds, then are cancelled."""
        drained = threading.Event()

        def drain() -> None:
            if self._front.stop(grace_seconds):
                drained.set()

        threading.Thread(target=drain, name="grpc-drain", daemon=True).start()
        return drained

    def _work(self) -> None:
        front = self._front
        while (call := front.next_call()) is not None:
            handle, method, payload, seconds_remaining = call
            code, details, answer = grpc.StatusCode.INTERNAL.value[0], "Internal error", None
            try:
                code, details, answer = self._answer(method, payload, seconds_remaining)
            finally:  # every call is answered exactly once, whatever happened
                front.finish(handle, code, details, answer)

    def _answer(self, method: str, payload: bytes, seconds_remaining: float | None) -> tuple[int, str, bytes | None]:
        """As grpcio answers: the servicer's response, its abort, or the texts grpcio uses for the rest."""
        handler = self._handlers.get(method)
        if handler is None:  # only found handlers are kept: a client's made-up method names must not pile up
            handler = self._registry.handler(method)
            if handler is not None:
                self._handlers[method] = handler
        if handler is None or handler.unary_unary is None:
            return grpc.StatusCode.UNIMPLEMENTED.value[0], "Method not found!", None
        try:
            request = handler.request_deserializer(payload)
        except Exception:  # noqa: BLE001 - a malformed request is the client's problem
            return grpc.StatusCode.INTERNAL.value[0], "Exception deserializing request!", None
        try:
            response = handler.unary_unary(request, _CallContext(seconds_remaining))
        except _Aborted as aborted:
            return aborted.code.value[0], aborted.details, None
        except Exception as error:  # noqa: BLE001 - as grpcio: logged, UNKNOWN with its text
            log.exception("Exception calling application: %s", error)
            return grpc.StatusCode.UNKNOWN.value[0], f"Exception calling application: {error}", None
        return _OK, "", handler.response_serializer(response)


class NativeHealth:
    """grpc.health.v1 of the C++ front (grpc++'s own Check and Watch); the calls of grpc_health's servicer."""

    def __init__(self, front: Any):
        self._front = front

    def set(self, service: str, status: int) -> None:
        self._front.set_health(service, status == health_pb2.HealthCheckResponse.SERVING)

    def enter_graceful_shutdown(self) -> None:
        pass  # stop() reports NOT_SERVING for every service before it drains


class GrpcioServer:
    """grpcio's Python server with the same registrations; the fallback when _grpc_front is not built."""

    front_name = "grpcio"

    def __init__(self, registrations: Sequence[Registration], address: str,
                 options: Sequence[tuple[str, int | str]], max_workers: int, max_queued: int):
        from concurrent import futures

        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc"),
                                   interceptors=[ReplicaInterceptor()], options=list(options),
                                   maximum_concurrent_rpcs=max_workers + max_queued)
        for register in registrations:
            register(self._server)
        self.health = health.HealthServicer(experimental_non_blocking=True)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        self.port = self._server.add_insecure_port(address)
        if self.port == 0:  # older grpcio reports a failed bind this way, newer ones raise
            raise RuntimeError("address in use or not available")

    def start(self) -> None:
        self._server.start()

    def stop(self, grace_seconds: float) -> threading.Event:
        return self._server.stop(grace_seconds)


def choose_front(wanted: str) -> type[NativeServer] | type[GrpcioServer]:
    """--grpc_front: auto takes the C++ front when it is built; native without it is an error."""
    if wanted == "grpcio" or (wanted == "auto" and _grpc_front is None):
        if wanted == "auto":
            log.warning("gRPC served by grpcio's Python server (slower): the C++ front is not built (%s); "
                        "build it with: python -m tfship.server.front_build", NATIVE_MISSING)
        return GrpcioServer
    if _grpc_front is None:
        raise RuntimeError(f"--grpc_front=native: the C++ front is not built ({NATIVE_MISSING}); build it with: "
                           "python -m tfship.server.front_build")
    return NativeServer

