"""Deploy-to-ready times on the configured cluster, in a namespace of its own (the deployed app is not touched).

    .venv/bin/python bench/bench_deploy.py [--replicas 3] [--namespace tfship-bench] [--keep]

Uses the images `invoke push` recorded in build/artifacts.json. Prints:
  cold     from nothing (app deleted first) to N Ready replicas
  noop     the same deploy again (apply + check; nothing changes)
  rolling  a new revision (a changed server flag) rolled over N running replicas, one surge pod at a time
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from tfship import config as tfconfig  # noqa: E402
from tfship import cluster, deploy  # noqa: E402
from tfship.errors import TfshipError  # noqa: E402

# A harmless server flag whose value changes the pod template, so each rolling run is a new revision.
ROLL_FLAG = "--rest_api_timeout_in_ms"


def timed(label: str, config: tfconfig.Config, replicas: int) -> float:
    started = time.monotonic()
    result = deploy.deploy(config, replicas)
    seconds = time.monotonic() - started
    print(f"{label:8} {seconds:7.1f}s  {result}", flush=True)
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--namespace", default="tfship-bench")
    parser.add_argument("--keep", action="store_true", help="leave the app and its namespace afterwards")
    args = parser.parse_args()
    config = tfconfig.load(REPO / tfconfig.CONFIG_FILE_NAME, overrides={"kubernetes.namespace": args.namespace})
    figures: dict[str, float] = {}
    try:
        deploy.destroy(config)
        figures["cold"] = timed("cold", config, args.replicas)
        figures["noop"] = timed("noop", config, args.replicas)
        config.serving.extra_args = [*config.serving.extra_args, f"{ROLL_FLAG}={30000 + int(time.time()) % 1000}"]
        figures["rolling"] = timed("rolling", config, args.replicas)
    except TfshipError as error:
        print(error.one_line(), file=sys.stderr)
        return 1
    finally:
        if not args.keep:
            deploy.destroy(config)
            cluster.target(config).run("delete", "namespace", args.namespace, "--ignore-not-found", "--wait=false", check=False)
    print(f"deploy-to-ready, {args.replicas} replicas: "
          + ", ".join(f"{name} {seconds:.1f}s" for name, seconds in figures.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
