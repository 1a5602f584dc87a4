"""tfship-web's settings from flags, else the environment (nothing heavy imported, so a wrong flag fails at once).

The model server is `--model-server HOST:PORT`, else TFSHIP_WEB_MODEL_SERVER, else the variables Kubernetes sets for
the model Service (`<SERVICE>_SERVICE_HOST` and `<SERVICE>_SERVICE_PORT_GRPC`; there may be no cluster DNS).
The model names are `--models a,b`, else TFSHIP_WEB_MODELS.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

from tfship.errors import ConfigError

DEFAULT_SERVICE = "tfship-serving"


@dataclass(frozen=True)
class Settings:
    model_server: str  # host:port of the model server's gRPC API
    models: tuple[str, ...]  # the model names it serves (TF Serving cannot list them)
    timeout: float = 5.0  # seconds, every gRPC call
    max_upload_bytes: int = 10 * 1024 * 1024
    pixel_max: tuple[tuple[str, float], ...] = ()  # per-model override of the value full ink maps to


def service_target(service: str, environ: os._Environ | dict) -> str | None:
    """host:port of a Service's gRPC port from the variables Kubernetes injects into pods, or None."""
    prefix = service.upper().replace("-", "_") + "_SERVICE_"
    host, port = environ.get(prefix + "HOST"), environ.get(prefix + "PORT_GRPC")
    return f"{host}:{port}" if host and port else None


def parse_pixel_max(items: list[str]) -> tuple[tuple[str, float], ...]:
    parsed = []
    for item in items:
        name, _, value = item.partition("=")
        try:
            parsed.append((name, float(value)))
        except ValueError:
            raise ConfigError(f"--pixel-max {item!r} is not NAME=NUMBER", "e.g. --pixel-max mnist=255")
    return tuple(parsed)


def settings_from(argv: list[str], environ: os._Environ | dict) -> tuple[Settings, argparse.Namespace]:
    parser = argparse.ArgumentParser(prog="python -m tfship.web", description=__doc__)
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--model-server", default=environ.get("TFSHIP_WEB_MODEL_SERVER", ""), help="HOST:PORT (gRPC)")
    parser.add_argument("--model-service", default=DEFAULT_SERVICE,
                        help="the model Service whose *_SERVICE_HOST/_PORT_GRPC variables to use")
    parser.add_argument("--models", default=environ.get("TFSHIP_WEB_MODELS", ""), help="comma-separated names")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per gRPC call")
    parser.add_argument("--max-upload-bytes", type=int, default=Settings.max_upload_bytes)
    parser.add_argument("--pixel-max", action="append", default=[], metavar="MODEL=VALUE",
                        help="the value full ink maps to for MODEL (default 16 for 8x8 inputs, else 1)")
    args = parser.parse_args(argv)
    target = args.model_server or service_target(args.model_service, environ)
    if not target:
        raise ConfigError("no model server to talk to",
                          f"pass --model-server HOST:PORT or run beside the {args.model_service} Service")
    models = tuple(name.strip() for name in args.models.split(",") if name.strip())
    if not models:
        raise ConfigError("no model names given", "pass --models digits[,other] or set TFSHIP_WEB_MODELS")
    if args.timeout <= 0 or args.max_upload_bytes <= 0:
        raise ConfigError("--timeout and --max-upload-bytes must be positive", "e.g. --timeout 5")
    settings = Settings(target, models, args.timeout, args.max_upload_bytes, parse_pixel_max(args.pixel_max))
    return settings, args


