"""What resolving and asking the cluster costs, and how fast a hung command is stopped.

    .venv/bin/python bench/bench_cluster.py [--runs 5]

Prints min / median / max over the runs of:
  auto-choice   kubernetes.provider auto deciding (kubectl config current-context, and a /version probe if set)
  status        cluster.status on the configured cluster (kubectl get nodes + config view)
  check-pull    the registry reachability check deploy runs first (status + address checks)
  timeout-stop  proc.run with a 1 s timeout on a streamed command whose child sleeps 30 s: time until it is stopped
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from tfship import cluster  # noqa: E402
from tfship import config as tfconfig  # noqa: E402
from tfship.errors import TfshipError  # noqa: E402
from tfship.host import proc  # noqa: E402


def figure(label: str, runs: int, body: Callable[[], object]) -> None:
    seconds = []
    for _ in range(runs):
        started = time.monotonic()
        body()
        seconds.append(time.monotonic() - started)
    print(f"{label:13} min {min(seconds):6.3f}s  median {statistics.median(seconds):6.3f}s  max {max(seconds):6.3f}s",
          flush=True)


def stopped_hung_command() -> None:
    try:
        proc.run(["sh", "-c", "echo started; sleep 30 & wait"], on_line=lambda line: None, timeout=1)
    except TfshipError:
        return
    raise SystemExit("the hung command was not stopped")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    config = tfconfig.load(REPO / tfconfig.CONFIG_FILE_NAME)
    figure("auto-choice", args.runs, lambda: cluster.auto.choose(config))
    try:
        figure("status", args.runs, lambda: cluster.status(config))
        figure("check-pull", args.runs, lambda: cluster.check_pull(config, f"{config.registry.url}/tfship/x:1"))
    except TfshipError as error:
        print(f"status        skipped: {error.one_line()}")
    figure("timeout-stop", args.runs, stopped_hung_command)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
