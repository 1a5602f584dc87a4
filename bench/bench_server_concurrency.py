"""Requests/s of tfship.server's Predict vs client concurrency (1..16), with and without --enable_batching.

    .venv/bin/python bench/bench_server_concurrency.py [--seconds 2] [--no-pin]

Same models, clients and CPU placement as bench_server.py (client on CPU 0, server on CPU 1 where there are two).
Prints the table; saves build/bench/server_concurrency.json and build/bench/server_concurrency.png.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import tempfile

import grpc

from bench_server import PROJECT, bench_models, pin_client, placement, run_cell, start_server, transport_calls

CONCURRENCIES = (1, 2, 4, 8, 12, 16)
RUNS = (("", []), ("+batch", ["--enable_batching"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="duration of each cell")
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="let client and server share all CPUs")
    args = parser.parse_args()
    pin = pin_client(args.pin)
    models, config_path = bench_models(tempfile.mkdtemp(prefix="tfship-bench-concurrency-"))

    cells = []
    for suffix, flags in RUNS:
        process, grpc_address, rest_url = start_server(config_path, flags, pin)
        try:
            with grpc.insecure_channel(grpc_address) as channel:
                for model in models:
                    for transport, call in transport_calls(channel, rest_url, model):
                        for concurrency in CONCURRENCIES:
                            cell = run_cell(call, concurrency, args.seconds)
                            cells.append({"model": model.name, "path": transport + suffix,
                                          "concurrency": concurrency, "rps": cell.rps,
                                          "p50_ms": cell.percentile(0.5), "p99_ms": cell.percentile(0.99)})
                            print(f"{model.name:<14}{transport + suffix:<12}{concurrency:>4}{cell.rps:>8.0f} req/s"
                                  f"{cell.percentile(0.5):>8.2f} ms p50", flush=True)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)

    out = PROJECT / "build" / "bench" / "server_concurrency.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"placement": placement(pin), "seconds_per_cell": args.seconds,
                               "load_average": os.getloadavg()[0], "cells": cells}, indent=1) + "\n")
    plot = plot_cells(cells, out.with_suffix(".png"), placement(pin))
    print(f"({placement(pin)}; load average {os.getloadavg()[0]:.1f}) saved {out.relative_to(PROJECT)}, "
          f"{plot.relative_to(PROJECT)}")


def plot_cells(cells: list[dict], path, subtitle: str):
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(cell["model"] for cell in cells))
    figure, axes = plt.subplots(1, len(names), figsize=(6 * len(names), 4.5), squeeze=False)
    for axis, name in zip(axes[0], names):
        for series in dict.fromkeys(cell["path"] for cell in cells):
            points = [(c["concurrency"], c["rps"]) for c in cells if c["model"] == name and c["path"] == series]
            axis.plot(*zip(*points), marker="o", label=series)
        axis.set_title(name)
        axis.set_xlabel("client concurrency")
        axis.set_ylabel("requests/s")
        axis.set_xticks(CONCURRENCIES)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(f"tfship.server Predict throughput ({subtitle})", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path


if __name__ == "__main__":
    main()
