"""Deploy-to-ready times on the configured cluster, in a namespace of its own (the deployed app is not touched).

    .venv/bin/python bench/bench_deploy.py [--replicas 3] [--namespace tfship-bench] [--keep]
    .venv/bin/python bench/bench_deploy.py --curve 1,3,6,10

Uses the images `invoke push` recorded in build/artifacts.json (the image on the node: see bench_cold_pull.py for
a cold node). Prints:
  cold     from nothing (app deleted first) to N Ready replicas
  noop     the same deploy again (apply + check; nothing changes)
  rolling  a new revision (a changed server flag) rolled over N running replicas, one surge pod at a time
With --curve: cold deploy-to-ready for each replica count (pods request 100m CPU so 10 fit the 2-core node), saved
as build/bench/deploy_curve.json and .png.
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


def curve(config: tfconfig.Config, counts: list[int]) -> dict[int, float]:
    """Cold deploy-to-ready for each replica count, the app deleted before each."""
    config.kubernetes.resources.cpu_request = "100m"
    figures = {}
    for count in counts:
        deploy.destroy(config)
        figures[count] = timed(f"{count} replicas", config, count)
    return figures


def save_curve(figures: dict[int, float]) -> Path:
    import json

    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    out = REPO / "build" / "bench" / "deploy_curve.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({str(count): seconds for count, seconds in figures.items()}, indent=1))
    figure, axes = plt.subplots(figsize=(6, 4))
    axes.plot(list(figures), list(figures.values()), marker="o")
    axes.set_xlabel("replicas")
    axes.set_ylabel("deploy to all Ready (s)")
    axes.set_title("deploy-to-ready vs replicas (image on the node)")
    axes.set_ylim(bottom=0)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(out.with_suffix(".png"), dpi=100)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--namespace", default="tfship-bench")
    parser.add_argument("--keep", action="store_true", help="leave the app and its namespace afterwards")
    parser.add_argument("--curve", help="replica counts, e.g. 1,3,6,10: cold deploy-to-ready for each")
    args = parser.parse_args()
    config = tfconfig.load(REPO / tfconfig.CONFIG_FILE_NAME, overrides={"kubernetes.namespace": args.namespace})
    figures: dict[str, float] = {}
    try:
        if args.curve:
            counts = [int(count) for count in args.curve.split(",")]
            curve_figures = curve(config, counts)
            print("deploy-to-ready vs replicas: "
                  + ", ".join(f"{count}: {seconds:.1f}s" for count, seconds in curve_figures.items()))
            print(f"saved {save_curve(curve_figures)} and .png")
            return 0
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
