"""python -m tfship.exporters --exporter NAME --output DIR [--seed N]: write one SavedModel version.

Exit codes: 0 written, 2 bad arguments or the output exists, 1 the exporter failed (nothing is left at DIR).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out of the progress lines

from tfship.exporters import EXPORTERS, RESULT_PREFIX, exporter  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tfship.exporters", description=__doc__.splitlines()[0])
    parser.add_argument("--exporter", required=True, choices=EXPORTERS)
    parser.add_argument("--output", required=True, type=Path, help="version folder to create")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.output.exists():
        print(f"error: {args.output} already exists", file=sys.stderr)
        return 2
    started = time.monotonic()
    try:
        summary = exporter(args.exporter).export(args.output, seed=args.seed, log=_log)
    except Exception as error:  # report one line; the caller turns it into a ModelError
        shutil.rmtree(args.output, ignore_errors=True)
        print(f"error: exporter {args.exporter} failed: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
        return 1
    summary = {"exporter": args.exporter, "seed": args.seed, "seconds": round(time.monotonic() - started, 2), **summary}
    print(RESULT_PREFIX + json.dumps(summary, sort_keys=True), flush=True)
    return 0


def _log(line: str) -> None:
    print(line, flush=True)


if __name__ == "__main__":
    sys.exit(main())
