"""The python runtime's entrypoint, like the official image's tf_serving_entrypoint.sh.

`python -m tfship.server.entrypoint [FLAGS]` runs the server with the serving contract's flags for this
environment (tfship.contract.server_argv: ports, MODEL_NAME under MODEL_BASE_PATH, or MODEL_CONFIG_FILE) followed
by FLAGS (later flags win). tfship.contract is the one module of tfship outside this package the server uses: it
imports nothing else of tfship, and the python runtime image carries it beside this package.
"""

from __future__ import annotations

import os
import sys

from tfship.contract import server_argv
from tfship.server.app import main as server_main

entrypoint_argv = server_argv  # the name tests and callers know


def main() -> int:
    return server_main(server_argv(dict(os.environ), sys.argv[1:]))


if __name__ == "__main__":
    raise SystemExit(main())
