"""`python -m tfship.web`: serve the page with uvicorn (settings: see tfship.web.settings)."""

from __future__ import annotations

import os
import sys

from tfship.errors import ConfigError
from tfship.web.settings import settings_from


def main(argv: list[str] | None = None) -> int:
    try:
        settings, args = settings_from(sys.argv[1:] if argv is None else argv, os.environ)
    except ConfigError as error:
        print(error.one_line(), file=sys.stderr)
        return 2
    import uvicorn

    from tfship.web.app import create_app

    print(f"tfship-web on http://{args.host}:{args.port} -> model server {settings.model_server} "
          f"(models {', '.join(settings.models)})", file=sys.stderr, flush=True)
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level="info", access_log=False,
                server_header=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
