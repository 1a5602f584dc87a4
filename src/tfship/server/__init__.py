"""tfship's TF-Serving-compatible model server (the `python` serving runtime).

Run it as `python -m tfship.server FLAGS` (flags as tensorflow_model_server) or, in an image,
`python -m tfship.server.entrypoint` (MODEL_NAME / MODEL_BASE_PATH as the official image).
In Python: `parse_flags(argv) -> ServerOptions`, `start(options) -> RunningServer`, `RunningServer.stop(grace)`.
TensorFlow is imported only by start(), so flag mistakes fail fast.
"""

from tfship.server.app import RunningServer, main, start
from tfship.server.flags import FlagError, ServerOptions, parse_flags

__all__ = ["FlagError", "RunningServer", "ServerOptions", "main", "parse_flags", "start"]
