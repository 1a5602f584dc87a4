"""The model server process: load the initial models, then open gRPC and REST, poll, and drain on SIGTERM."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from tfship.server.flags import USAGE_EXIT_CODE, FlagError, ServerOptions, grpc_channel_arguments, parse_flags

if TYPE_CHECKING:  # the real imports wait for start(): TensorFlow is slow to import, flag errors are not
    from tfship.server.grpc_front import GrpcioServer, NativeServer
    from tfship.server.models import ModelManager
    from tfship.server.rest_api import RestServer

log = logging.getLogger("tfship.server")


@dataclass
class RunningServer:
    """A started server (in this process); stop() drains it. Used by the CLI, tests and the bench."""

    grpc_server: NativeServer | GrpcioServer
    rest_server: RestServer | None
    manager: ModelManager
    grpc_port: int
    rest_port: int
    _pollers: list[threading.Thread]
    _stopping: threading.Event

    def stop(self, grace_seconds: float) -> bool:
        """Stop accepting, let in-flight requests finish within grace_seconds; True when all of them did."""
        self._stopping.set()
        self.grpc_server.health.enter_graceful_shutdown()
        deadline = time.monotonic() + grace_seconds
        grpc_done = self.grpc_server.stop(grace_seconds)
        rest_drained = True
        if self.rest_server is not None:
            rest = self.rest_server
            rest.draining = True
            rest.shutdown()
            rest.server_close()
            rest_drained = rest.in_flight.wait_idle(max(0.0, deadline - time.monotonic()))
            rest.pool.shutdown(wait=False)
        grpc_drained = grpc_done.wait(max(0.0, deadline - time.monotonic()))
        for poller in self._pollers:
            poller.join(timeout=1.0)
        return bool(rest_drained and grpc_drained)


def _configure_tensorflow(options: ServerOptions) -> None:
    import tensorflow as tf

    if options.tensorflow_intra_op_parallelism:
        tf.config.threading.set_intra_op_parallelism_threads(options.tensorflow_intra_op_parallelism)
    if options.tensorflow_inter_op_parallelism:
        tf.config.threading.set_inter_op_parallelism_threads(options.tensorflow_inter_op_parallelism)


def start(options: ServerOptions) -> RunningServer:
    """Load the configured models (blocking), then bind and start gRPC and REST. Raises FlagError or
    RuntimeError with a one-line message when the models cannot be served or a port cannot be bound."""
    from tfship.server.model_config import initial_model_server_config, read_batching_parameters, \
        read_model_server_config, read_monitoring_config

    # Config mistakes are reported before TensorFlow's import (seconds) is paid.
    config = initial_model_server_config(options)
    monitoring = read_monitoring_config(options.monitoring_config_file)
    batching = read_batching_parameters(options.batching_parameters_file) if options.enable_batching else None
    channel_arguments = grpc_channel_arguments(options.grpc_channel_arguments)
    _configure_tensorflow(options)
    from tfship.server.grpc_api import build_grpc_server, update_health
    from tfship.server.metrics import Metrics
    from tfship.server.models import ModelManager
    from tfship.server.rest_api import RestServer
    from tfship.server.status import ServingError

    from tfship.server.warmup import warm_up

    manager = ModelManager(options.allow_version_labels_for_unavailable_models, batching,
                           warm_up if options.enable_model_warmup else None)
    try:
        manager.apply_config(config)
    except ServingError as error:
        raise RuntimeError(error.message)
    _wait_for_initial_models(manager, options)

    metrics = Metrics()
    try:
        grpc_server = build_grpc_server(manager, metrics, f"{options.bind_address}:{options.port}",
                                        options.grpc_max_threads, channel_arguments, options.max_queued_requests,
                                        options.grpc_front)
    except RuntimeError as error:
        raise RuntimeError(f"cannot listen for gRPC on {options.bind_address}:{options.port}: {error}")
    rest_server = None
    if options.rest_api_port:
        try:
            rest_server = RestServer((options.bind_address, options.rest_api_port), manager, metrics, monitoring,
                                     options.rest_api_timeout_in_ms / 1000.0, options.rest_api_num_threads,
                                     options.max_queued_requests, options.rest_api_max_body_bytes,
                                     options.rest_api_read_timeout_in_ms / 1000.0,
                                     options.rest_api_idle_timeout_in_ms / 1000.0)
        except OSError as error:
            raise RuntimeError(f"cannot listen for REST on {options.bind_address}:{options.rest_api_port}: "
                               f"{error.strerror}")
    manager.on_change = lambda: update_health(grpc_server.health, manager)
    update_health(grpc_server.health, manager)
    try:
        grpc_server.start()
    except RuntimeError as error:
        if rest_server is not None:
            rest_server.server_close()
        raise RuntimeError(f"cannot listen for gRPC on {options.bind_address}:{options.port}: {error}")
    if rest_server is not None:
        threading.Thread(target=rest_server.serve_forever, name="rest-accept", daemon=True).start()
    log.info("Running gRPC ModelServer at %s:%d (%s) ...", options.bind_address, options.port,
             grpc_server.front_name)
    if rest_server is not None:
        log.info("Exporting HTTP/REST API at:%s:%d ...", options.bind_address, options.rest_api_port)

    stopping = threading.Event()
    pollers = []
    if options.file_system_poll_wait_seconds > 0:
        pollers.append(_poller("fs-poll", options.file_system_poll_wait_seconds, stopping, manager.poll))
    if options.model_config_file and options.model_config_file_poll_wait_seconds > 0:
        def reload_config() -> None:
            manager.apply_config(read_model_server_config(options.model_config_file))

        pollers.append(_poller("config-poll", options.model_config_file_poll_wait_seconds, stopping, reload_config))
    return RunningServer(grpc_server, rest_server, manager, options.port, options.rest_api_port,
                         pollers, stopping)


def _wait_for_initial_models(manager: ModelManager, options: ServerOptions) -> None:
    """Ports open only once every model has a version AVAILABLE (as TF Serving); a model whose versions all
    failed to load is fatal; a model with no version yet on disk is waited for, polling the base path."""
    while True:
        failures = manager.initial_failures()
        if failures:
            raise RuntimeError(failures[0])
        missing = [name for name in manager.model_names() if not manager.has_available(name)]
        if not missing:
            return
        time.sleep(max(options.file_system_poll_wait_seconds, 1))
        manager.poll()


def _poller(name: str, period: float, stopping: threading.Event, work: Callable[[], None]) -> threading.Thread:
    def loop() -> None:
        while not stopping.wait(period):
            try:
                work()
            except Exception as error:  # noqa: BLE001 - a bad poll is logged; serving goes on
                log.error("%s failed: %s", name, str(error).split("\n")[0])

    thread = threading.Thread(target=loop, name=name, daemon=True)
    thread.start()
    return thread


def main(argv: list[str] | None = None) -> int:
    """`python -m tfship.server FLAGS`: exit 0 after a SIGTERM drain, 2 on bad flags, 1 when it cannot serve."""
    args = sys.argv[1:] if argv is None else argv
    try:
        options = parse_flags(args)
    except FlagError as error:
        print(f"tfship.server: error: {error}", file=sys.stderr)
        return USAGE_EXIT_CODE
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    for noisy in ("tensorflow", "absl"):  # loader chatter (reference variables, fingerprints) drowns real news
        logging.getLogger(noisy).setLevel(logging.ERROR)
    stop_requested = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop_requested.set())
    try:
        server = start(options)
    except (FlagError, RuntimeError) as error:
        print(f"tfship.server: error: {str(error).splitlines()[0]}", file=sys.stderr)
        return 1
    while not stop_requested.wait(3600):
        pass
    log.info("Shutting down: draining in-flight requests (grace %.1fs)", options.shutdown_grace_seconds)
    drained = server.stop(options.shutdown_grace_seconds)
    if not drained:
        # Computations still running cannot be interrupted, and the interpreter would join their worker
        # threads at exit: leave now, as the grace period promised.
        log.warning("Stopped with requests still running after the %.1fs grace period", options.shutdown_grace_seconds)
        logging.shutdown()
        os._exit(0)
    log.info("Stopped")
    return 0
