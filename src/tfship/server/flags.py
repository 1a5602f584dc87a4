"""The command line of `tensorflow_model_server`, parsed without importing TensorFlow (so mistakes fail fast).

Both `--flag=value` and `--flag value` are accepted. TF Serving's rule is kept: when --model_config_file is
given it wins over --model_name/--model_base_path (the official image always passes both).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

USAGE_EXIT_CODE = 2
GRPC_FRONTS = ("auto", "native", "grpcio")


class FlagError(Exception):
    """A flag is unknown, malformed or contradicts another; printed as one line, exit code 2."""


@dataclass(frozen=True)
class ServerOptions:
    port: int = 8500
    rest_api_port: int = 0  # 0 disables REST, as in tensorflow_model_server
    model_name: str = "default"
    model_base_path: str = ""
    model_config_file: str = ""
    model_config_file_poll_wait_seconds: int = 0
    file_system_poll_wait_seconds: int = 1
    monitoring_config_file: str = ""
    rest_api_timeout_in_ms: int = 30000
    rest_api_num_threads: int = 16
    grpc_max_threads: int = 16
    tensorflow_intra_op_parallelism: int = 0
    tensorflow_inter_op_parallelism: int = 0
    allow_version_labels_for_unavailable_models: bool = False
    enable_batching: bool = False  # opportunistic unless --batching_parameters_file says otherwise (batching.py)
    batching_parameters_file: str = ""  # TF Serving's BatchingParameters, protobuf text format
    enable_model_warmup: bool = True  # replay assets.extra/tf_serving_warmup_requests at load (warmup.py)
    grpc_channel_arguments: str = ""  # comma-separated key=value, e.g. grpc.max_connection_age_ms=30000
    # tfship extensions, not in tensorflow_model_server:
    bind_address: str = "0.0.0.0"
    shutdown_grace_seconds: float = 10.0
    # Limits (tfship extensions; TF Serving has no flags for them, it bounds less):
    rest_api_max_body_bytes: int = 64 * 2**20  # larger bodies get 413 before they are read
    rest_api_read_timeout_in_ms: int = 30000  # a request's headers and body must arrive within this
    rest_api_idle_timeout_in_ms: int = 60000  # a connection with no request started for this long is closed
    max_queued_requests: int = 64  # per protocol, beyond the running ones; then 503 / RESOURCE_EXHAUSTED
    grpc_front: str = "auto"  # who takes gRPC calls: native (grpc++, grpc_front.py says why), grpcio, or auto


def _boolean(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise FlagError(message)


def _parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="python -m tfship.server", allow_abbrev=False, add_help=True)
    defaults = ServerOptions()
    for field_name, value in vars(defaults).items():
        flag = f"--{field_name}"
        if isinstance(value, bool):
            parser.add_argument(flag, type=_boolean, nargs="?", const=True, default=value)
        else:
            parser.add_argument(flag, type=type(value), default=value)
    return parser


def parse_flags(argv: list[str]) -> ServerOptions:
    """ServerOptions from tensorflow_model_server-style flags; raises FlagError on unknown or contradictory ones."""
    namespace = _parser().parse_args(argv)
    options = ServerOptions(**vars(namespace))
    if options.model_config_file:
        if not os.path.isfile(options.model_config_file):
            raise FlagError(f"--model_config_file={options.model_config_file}: no such file")
    elif not options.model_base_path:
        raise FlagError("Both --model_base_path and --model_config_file are empty: give one of them")
    elif not options.model_name:
        raise FlagError("--model_name is empty")
    for name in ("port", "rest_api_port"):
        port = getattr(options, name)
        if not 0 <= port <= 65535:
            raise FlagError(f"--{name}={port} is not a TCP port (0..65535)")
    if options.port == 0:
        raise FlagError("--port=0: the gRPC port is required")
    if options.port == options.rest_api_port:
        raise FlagError(f"--port and --rest_api_port are both {options.port}: give them different ports")
    if options.rest_api_timeout_in_ms <= 0:
        raise FlagError("--rest_api_timeout_in_ms must be positive")
    for name in ("rest_api_max_body_bytes", "rest_api_read_timeout_in_ms", "rest_api_idle_timeout_in_ms"):
        if getattr(options, name) <= 0:
            raise FlagError(f"--{name}={getattr(options, name)} must be positive")
    if options.max_queued_requests < 0:
        raise FlagError(f"--max_queued_requests={options.max_queued_requests} must not be negative")
    for name in ("grpc_max_threads", "rest_api_num_threads"):
        if getattr(options, name) < 1:
            raise FlagError(f"--{name}={getattr(options, name)} must be at least 1")
    if options.grpc_front not in GRPC_FRONTS:
        raise FlagError(f"--grpc_front={options.grpc_front}: expected one of {', '.join(GRPC_FRONTS)}")
    if options.batching_parameters_file and not options.enable_batching:
        raise FlagError("--batching_parameters_file is set without setting --enable_batching to true")
    grpc_channel_arguments(options.grpc_channel_arguments)  # refused now rather than after TensorFlow's import
    if options.shutdown_grace_seconds < 0:
        raise FlagError("--shutdown_grace_seconds must not be negative")
    return options


INT32_RANGE = range(-2**31, 2**31)


def grpc_channel_arguments(text: str) -> list[tuple[str, int | str]]:
    """--grpc_channel_arguments as TF Serving reads it: `key=value` pairs separated by commas, a value that is a
    32-bit integer passed as one, anything else as a string (gRPC ignores keys it does not know)."""
    arguments: list[tuple[str, int | str]] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, separator, value = item.partition("=")
        if not separator or not key.strip():
            raise FlagError(f"--grpc_channel_arguments: {item!r} is not key=value "
                            "(e.g. grpc.max_connection_age_ms=30000)")
        try:
            number = int(value)
        except ValueError:
            number = None
        arguments.append((key.strip(), number if number is not None and number in INT32_RANGE else value))
    return arguments
