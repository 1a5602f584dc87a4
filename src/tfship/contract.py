"""The serving contract: what every tfship serving image promises, defined once.

It is the official tensorflow/serving image's: gRPC and REST on two ports (8500 and 8501 unless serving.grpc_port /
serving.rest_port say otherwise), one model named by MODEL_NAME under MODEL_BASE_PATH, or several through
MODEL_CONFIG_FILE (TF Serving's ModelServerConfig in text format), extra server flags appended as container args.

Who uses it: the image build (images.py: build arguments, the entrypoint script, models.config, the acceptance
run's ports), rendering (render.py: container ports, environment, the model config map) and the python runtime's
own entrypoint (tfship.server.entrypoint). This module imports nothing else of tfship, so the python runtime image
carries it beside the server package and the server stays independent of the pipeline.

The entrypoint exists twice by necessity (the official image has no Python): `server_argv` for Python and
`entrypoint_script()`, the same rule written out as POSIX sh from the same names. tests/unit/test_contract.py runs
the script against `server_argv` for every case.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

GRPC_PORT = 8500
REST_PORT = 8501
MODELS_ROOT = "/models"
MODEL_CONFIG_PATH = f"{MODELS_ROOT}/models.config"  # baked into the image when a config file is needed
DEFAULT_MODEL_NAME = "model"  # the official image's ENV MODEL_NAME=model
SERVER_COMMAND = "tensorflow_model_server"

# The serving container's environment.
ENV_MODEL_NAME = "MODEL_NAME"
ENV_MODEL_BASE_PATH = "MODEL_BASE_PATH"
ENV_MODEL_CONFIG_FILE = "MODEL_CONFIG_FILE"
ENV_GRPC_PORT = "TFSHIP_GRPC_PORT"
ENV_REST_PORT = "TFSHIP_REST_PORT"
ENV_SERVER = "TFSHIP_SERVER"  # the command run in place of tensorflow_model_server (the python runtime's)
# What an unset or empty variable means.
ENV_DEFAULTS = {
    ENV_MODEL_NAME: DEFAULT_MODEL_NAME,
    ENV_MODEL_BASE_PATH: MODELS_ROOT,
    ENV_GRPC_PORT: str(GRPC_PORT),
    ENV_REST_PORT: str(REST_PORT),
    ENV_SERVER: SERVER_COMMAND,
}

VERSION_POLICIES = ("latest", "all", "specific")


@dataclass(frozen=True)
class ServedModel:
    """One model baked into a serving image: the versions it holds and TF Serving's policy over them."""

    name: str
    versions: tuple[int, ...]
    policy: str = "latest"  # model_version_policy: latest (newest only), all, specific (the versions held)
    labels: Mapping[str, int] = field(default_factory=dict)  # version_labels


# --------------------------------------------------------------------------------------------------------------
# Versions and the model config


def served_versions(policy: str, listed: Sequence[int], found: Iterable[int]) -> list[int]:
    """The versions `policy` serves out of those `found` on disk (`listed`: the versions a specific policy names;
    the caller reports listed versions that were not found)."""
    available = sorted(set(found))
    if policy == "latest":
        return available[-1:]
    if policy == "all":
        return available
    if policy == "specific":
        return [version for version in sorted(set(listed)) if version in available]
    raise ValueError(f"unknown version policy {policy!r} (one of {', '.join(VERSION_POLICIES)})")


def needs_model_config_file(models: Sequence[ServedModel]) -> bool:
    """One model at its latest version is served by name; anything else needs the model config file."""
    return len(models) > 1 or any(model.policy != "latest" or model.labels for model in models)


def model_config_text(models: Sequence[ServedModel]) -> str:
    """TF Serving's model config (protobuf text format) for `models`, in their order, under MODELS_ROOT."""
    lines = ["model_config_list {"]
    for model in models:
        if model.policy == "all":
            policy = "all {}"
        elif model.policy == "specific":
            policy = "specific { " + " ".join(f"versions: {v}" for v in model.versions) + " }"
        else:
            policy = "latest { num_versions: 1 }"
        lines += [
            "  config {",
            f'    name: "{model.name}"',
            f'    base_path: "{MODELS_ROOT}/{model.name}"',
            '    model_platform: "tensorflow"',
            f"    model_version_policy {{ {policy} }}",
        ]
        lines += [f'    version_labels {{ key: "{k}" value: {v} }}' for k, v in sorted(model.labels.items())]
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------------------
# The image and the pod


def image_build_args(models: Sequence[ServedModel], grpc_port: int, rest_port: int) -> dict[str, str]:
    """Dockerfile.serving's build arguments: the environment the image bakes in and the ports it exposes."""
    return {
        "MODELS_ROOT": MODELS_ROOT,
        "MODEL_NAME": models[0].name,
        "MODEL_CONFIG_FILE": MODEL_CONFIG_PATH if needs_model_config_file(models) else "",
        "GRPC_PORT": str(grpc_port),
        "REST_PORT": str(rest_port),
    }


def pod_environment(model_config_file: str | None, model_name: str) -> dict[str, str]:
    """The serving container's environment in a pod: the mounted model config file, or the one model by name."""
    if model_config_file:
        return {ENV_MODEL_CONFIG_FILE: model_config_file}
    return {ENV_MODEL_NAME: model_name, ENV_MODEL_BASE_PATH: MODELS_ROOT}


def status_path(model_name: str) -> str:
    """REST model status: answers once the model is loaded (the probes' target)."""
    return f"/v1/models/{model_name}"


# --------------------------------------------------------------------------------------------------------------
# The entrypoint


def server_argv(environ: Mapping[str, str], extra: Sequence[str] = ()) -> list[str]:
    """tensorflow_model_server's flags in a serving container, from its environment (an unset or empty variable
    takes its default), then `extra` (later flags win)."""

    def value(name: str) -> str:
        return environ.get(name) or ENV_DEFAULTS[name]

    argv = [f"--port={value(ENV_GRPC_PORT)}", f"--rest_api_port={value(ENV_REST_PORT)}"]
    config_file = environ.get(ENV_MODEL_CONFIG_FILE)
    if config_file:
        argv.append(f"--model_config_file={config_file}")
    else:
        name = value(ENV_MODEL_NAME)
        base = value(ENV_MODEL_BASE_PATH).rstrip("/")
        argv += [f"--model_name={name}", f"--model_base_path={base}/{name}"]
    return [*argv, *extra]


def entrypoint_script() -> str:
    """The serving image's entrypoint, for both runtimes: server_argv as POSIX sh, then exec the server."""
    d = ENV_DEFAULTS
    return f"""#!/bin/sh
# Generated by tfship.contract.entrypoint_script: the serving contract's entrypoint (same rule as server_argv).
set -e
server=${{{ENV_SERVER}:-{d[ENV_SERVER]}}}
grpc_port=${{{ENV_GRPC_PORT}:-{d[ENV_GRPC_PORT]}}}
rest_port=${{{ENV_REST_PORT}:-{d[ENV_REST_PORT]}}}
if [ -n "${{{ENV_MODEL_CONFIG_FILE}:-}}" ]; then
    # shellcheck disable=SC2086  # $server may be "python -m tfship.server"
    exec $server --port="$grpc_port" --rest_api_port="$rest_port" --model_config_file="${{{ENV_MODEL_CONFIG_FILE}}}" "$@"
fi
name=${{{ENV_MODEL_NAME}:-{d[ENV_MODEL_NAME]}}}
base=${{{ENV_MODEL_BASE_PATH}:-{d[ENV_MODEL_BASE_PATH]}}}
while [ "$base" != "${{base%/}}" ]; do base=${{base%/}}; done
# shellcheck disable=SC2086
exec $server --port="$grpc_port" --rest_api_port="$rest_port" --model_name="$name" \\
    --model_base_path="$base/$name" "$@"
"""
