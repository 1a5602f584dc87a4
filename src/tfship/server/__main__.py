"""`python -m tfship.server FLAGS`, flags as tensorflow_model_server."""

from tfship.server.app import main

raise SystemExit(main())
