"""tfship-web's cost per upload: the page's /api/classify end to end vs the model server's gRPC round trip inside
it, for a small PNG and a large JPEG; plus the web process's memory and start-up time.

    .venv/bin/python bench/bench_web.py [--requests 100]

Starts `python -m tfship.server` (digits exported here into a temporary folder) and `python -m tfship.web` on
127.0.0.1; one client, sequential requests. Client, web app and model server share this machine's cores.
"""

from __future__ import annotations

import argparse
import io
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests
from PIL import Image

SRC = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(SRC))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_http(url: str, timeout: float = 180) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return time.monotonic() - started
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not answer within {timeout}s")


def digit(scale: int, fmt: str) -> bytes:
    from sklearn.datasets import load_digits

    pixels = load_digits().images[3]
    gray = Image.fromarray((255 - pixels * 255 / 16).astype(np.uint8), "L").resize((8 * scale, 8 * scale))
    buffer = io.BytesIO()
    gray.convert("RGB").save(buffer, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=100)
    args = parser.parse_args()
    from tfship.exporters import digits

    with tempfile.TemporaryDirectory() as folder:
        version = Path(folder) / "digits" / "1"
        version.parent.mkdir()
        digits.export(version, log=lambda line: None)
        grpc_port, rest_port, web_port = free_port(), free_port(), free_port()
        env = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}
        server = subprocess.Popen([sys.executable, "-m", "tfship.server", f"--port={grpc_port}",
                                   f"--rest_api_port={rest_port}", "--bind_address=127.0.0.1", "--model_name=digits",
                                   f"--model_base_path={version.parent}"], env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        web = None
        try:
            wait_http(f"http://127.0.0.1:{rest_port}/v1/models/digits")
            started = time.monotonic()
            web = subprocess.Popen([sys.executable, "-m", "tfship.web", "--host=127.0.0.1", f"--port={web_port}",
                                    f"--model-server=127.0.0.1:{grpc_port}", "--models=digits"], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            url = f"http://127.0.0.1:{web_port}"
            wait_http(url + "/readyz")
            print(f"web start-up to ready: {time.monotonic() - started:.1f} s")
            session = requests.Session()
            for name, data in [("PNG 200x200", digit(25, "PNG")), ("JPEG 4000x4000", digit(500, "JPEG"))]:
                total, model = [], []
                for _ in range(args.requests):
                    t0 = time.perf_counter()
                    body = session.post(url + "/api/classify", data={"model": "digits"},
                                        files={"image": ("d", data)}, timeout=60).json()
                    total.append((time.perf_counter() - t0) * 1000)
                    model.append(body["latency_ms"])
                    assert body["classes"][0]["label"] == "3", body
                cut = lambda xs, q: statistics.quantiles(xs, n=100)[q - 1]  # noqa: E731
                print(f"{name:15} {len(data):>9,} bytes  end to end p50 {cut(total, 50):6.1f} ms p99 {cut(total, 99):6.1f}"
                      f" ms | model server gRPC p50 {cut(model, 50):5.1f} ms p99 {cut(model, 99):5.1f} ms")
            print(f"web process RSS: {rss_mb(web.pid):.0f} MB (the tensorflow-serving-api stubs import TensorFlow)")
        finally:
            for process in (web, server):
                if process is not None:
                    process.terminate()
                    process.wait(timeout=30)


if __name__ == "__main__":
    main()
