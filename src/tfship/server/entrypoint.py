"""The serving image's entrypoint, like the official image's tf_serving_entrypoint.sh.

`python -m tfship.server.entrypoint [FLAGS]` runs the server with --port=8500 --rest_api_port=8501
--model_name=$MODEL_NAME --model_base_path=$MODEL_BASE_PATH/$MODEL_NAME followed by FLAGS (later flags win,
and --model_config_file wins over the model flags, as with tensorflow_model_server).
"""

from __future__ import annotations

import os
import sys

from tfship.server.app import main as server_main

DEFAULT_MODEL_NAME = "model"  # the official image's ENV MODEL_NAME=model
DEFAULT_MODEL_BASE_PATH = "/models"


def entrypoint_argv(environ: dict[str, str], extra: list[str]) -> list[str]:
    model_name = environ.get("MODEL_NAME") or DEFAULT_MODEL_NAME
    base_path = (environ.get("MODEL_BASE_PATH") or DEFAULT_MODEL_BASE_PATH).rstrip("/")
    return ["--port=8500", "--rest_api_port=8501", f"--model_name={model_name}",
            f"--model_base_path={base_path}/{model_name}", *extra]


def main() -> int:
    return server_main(entrypoint_argv(dict(os.environ), sys.argv[1:]))


if __name__ == "__main__":
    raise SystemExit(main())
