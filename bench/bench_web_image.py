"""tfship-web images side by side: start to /healthz and the container's memory, over a few runs each, e.g. the page
on the TensorFlow venv (before) and on the stubs and protocol-buffer modules alone (after).

    .venv/bin/python bench/bench_web_image.py --image before=tfship-web:OLD --image after=tfship-web:NEW [--runs 3]

Each run starts the image on 127.0.0.1 (host network, read-only, no capabilities) with a model server address where
nothing listens (start-up does not wait for one), then removes it. Sizes: bench/bench_image_size.py.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import time

import docker
import requests


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def one_start(client: docker.DockerClient, ref: str) -> tuple[float, float]:
    """Seconds from `docker run` to /healthz answering, and the container's memory then (MB)."""
    port, nobody = free_port(), free_port()
    started = time.monotonic()
    container = client.containers.run(ref, [f"--port={port}", "--host=127.0.0.1", f"--model-server=127.0.0.1:{nobody}",
                                            "--models=digits"], detach=True, network_mode="host", read_only=True,
                                      tmpfs={"/tmp": ""}, cap_drop=["ALL"])
    try:
        for _ in range(1200):  # bounded: 120 s
            try:
                if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.1)
        else:
            raise SystemExit(f"{ref} did not answer /healthz within 120 s")
        seconds = time.monotonic() - started
        memory = container.stats(stream=False)["memory_stats"]["usage"] / 1e6
        return seconds, memory
    finally:
        container.remove(force=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", action="append", required=True, metavar="LABEL=REFERENCE")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    client = docker.from_env(timeout=300)
    images = [item.split("=", 1) if "=" in item else [item, item] for item in args.image]
    print(f"{'image':<40} {'size MB':>8} {'start s (min/median/max)':>26} {'memory MB':>10}")
    for label, ref in images:
        size = client.images.get(ref).attrs["Size"] / 1e6
        runs = [one_start(client, ref) for _ in range(args.runs)]
        starts = sorted(seconds for seconds, _ in runs)
        print(f"{label + ' ' + ref:<40} {size:>8.0f} "
              f"{f'{starts[0]:.1f} / {statistics.median(starts):.1f} / {starts[-1]:.1f}':>26} "
              f"{statistics.median(memory for _, memory in runs):>10.0f}")


if __name__ == "__main__":
    main()
