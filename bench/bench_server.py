"""Throughput and latency of tfship.server's Predict over gRPC and REST vs calling the model in-process.

    .venv/bin/python bench/bench_server.py [--seconds 3]

Models: TF Serving's half_plus_two and a digits-like model built here (64 floats -> dense -> softmax over 10).
Concurrency 1 and 8 (client threads). Each cell runs a bounded time. The server runs twice: as is, and with
--enable_batching ("+batch" rows: concurrent requests merged into one model run). The server runs as a subprocess on
127.0.0.1; client and server share this machine's cores, so the figures are a lower bound for the server.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import grpc
import numpy as np
import requests
import tensorflow as tf
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

TESTDATA = Path(__file__).resolve().parents[2] / "shared" / "testdata" / "tf_serving"  # ../shared beside the repository
HALF_PLUS_TWO = TESTDATA / "saved_model_half_plus_two_cpu"
CONCURRENCIES = (1, 8)


@dataclass(frozen=True)
class BenchModel:
    name: str
    base_path: str
    input_alias: str
    example: np.ndarray


@dataclass
class Cell:
    requests: int
    seconds: float
    latencies: list[float]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000.0


class _Digits(tf.Module):
    def __init__(self) -> None:
        super().__init__()
        generator = np.random.default_rng(0)
        self.kernel = tf.Variable(generator.normal(size=(64, 10)).astype(np.float32) * 0.1)
        self.bias = tf.Variable(np.zeros(10, np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, 64], tf.float32, name="x")])
    def predict(self, x):
        return {"probabilities": tf.nn.softmax(tf.matmul(x, self.kernel) + self.bias)}


def build_digits_model(root: str) -> str:
    base = os.path.join(root, "digits")
    module = _Digits()
    tf.saved_model.save(module, os.path.join(base, "1"), signatures={"serving_default": module.predict})
    return base


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_cell(call: Callable[[], None], concurrency: int, seconds: float) -> Cell:
    """concurrency threads calling as fast as they can for `seconds` (after one warm-up call each)."""
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    start_barrier = threading.Barrier(concurrency + 1)
    deadline = [0.0]

    def worker(index: int) -> None:
        call()
        start_barrier.wait()
        mine = latencies[index]
        while True:
            started = time.perf_counter()
            if started >= deadline[0]:
                return
            call()
            mine.append(time.perf_counter() - started)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    deadline[0] = time.perf_counter() + seconds + 3600  # placeholder until every warm-up is done
    start_barrier.wait()
    began = time.perf_counter()
    deadline[0] = began + seconds
    for thread in threads:
        thread.join(timeout=seconds + 120)
    elapsed = time.perf_counter() - began
    merged = [value for per_thread in latencies for value in per_thread]
    return Cell(len(merged), elapsed, merged)


def start_server(config_path: str, extra_flags: list[str]) -> tuple[subprocess.Popen, str, str]:
    grpc_port, rest_port = free_port(), free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tfship.server", f"--port={grpc_port}", f"--rest_api_port={rest_port}",
         "--bind_address=127.0.0.1", f"--model_config_file={config_path}", *extra_flags],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    address = f"127.0.0.1:{grpc_port}"
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for _ in range(300):  # bounded: 300 x ~0.3 s
            if process.poll() is not None:
                raise SystemExit(f"server exited with {process.returncode}")
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == \
                        health_pb2.HealthCheckResponse.SERVING:
                    return process, address, f"http://127.0.0.1:{rest_port}"
            except grpc.RpcError:
                pass
            time.sleep(0.3)
    process.kill()
    raise SystemExit("server did not become SERVING")


def bench_server(config_path: str, flags: list[str], suffix: str, models: list[BenchModel],
                 seconds: float) -> list[tuple[str, str, int, Cell]]:
    rows = []
    process, grpc_address, rest_url = start_server(config_path, flags)
    try:
        channel = grpc.insecure_channel(grpc_address)
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        session_local = threading.local()
        for model in models:
            request = predict_pb2.PredictRequest()
            request.model_spec.name = model.name
            request.inputs[model.input_alias].CopyFrom(tf.make_tensor_proto(model.example))
            body = json.dumps({"instances": model.example.tolist()})
            url = f"{rest_url}/v1/models/{model.name}:predict"

            def grpc_call(request=request) -> None:
                stub.Predict(request, timeout=30)

            def rest_call(body=body, url=url) -> None:
                session = getattr(session_local, "session", None)
                if session is None:
                    session = session_local.session = requests.Session()
                reply = session.post(url, data=body, timeout=30)
                if reply.status_code != 200:
                    raise RuntimeError(reply.text)

            for transport, call in (("gRPC", grpc_call), ("REST", rest_call)):
                for concurrency in CONCURRENCIES:
                    rows.append((model.name, transport + suffix, concurrency, run_cell(call, concurrency, seconds)))
        channel.close()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each cell")
    seconds = parser.parse_args().seconds

    workdir = tempfile.mkdtemp(prefix="tfship-bench-server-")
    models = [
        BenchModel("half_plus_two", str(HALF_PLUS_TWO), "x", np.array([[2.0]], np.float32)),
        BenchModel("digits", build_digits_model(workdir), "x",
                   np.random.default_rng(1).random((1, 64), dtype=np.float32)),
    ]
    config_path = os.path.join(workdir, "models.config")
    with open(config_path, "w") as handle:
        handle.write("model_config_list {\n" + "".join(
            f'  config {{ name: "{m.name}" base_path: "{m.base_path}" }}\n' for m in models) + "}\n")

    rows: list[tuple[str, str, int, Cell]] = []
    for model in models:  # in-process first, while no server competes for the cores
        version_dir = max((p for p in Path(model.base_path).iterdir() if p.name.isdigit()),
                          key=lambda p: int(p.name))
        function = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
        tensor_input = model.example

        def in_process(function=function, tensor_input=tensor_input, alias=model.input_alias) -> None:
            function(**{alias: tf.constant(tensor_input)})

        for concurrency in CONCURRENCIES:
            rows.append((model.name, "in-process", concurrency, run_cell(in_process, concurrency, seconds)))

    for suffix, flags in (("", []), ("+batch", ["--enable_batching"])):
        rows += bench_server(config_path, flags, suffix, models, seconds)

    baseline = {(name, concurrency): cell.rps for name, transport, concurrency, cell in rows
                if transport == "in-process"}
    rows.sort(key=lambda row: ([m.name for m in models].index(row[0]), row[1].split("+")[0] != "in-process"))
    print(f"{'model':<14}{'path':<12}{'conc':>5}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'vs in-proc':>12}")
    for name, transport, concurrency, cell in rows:
        ratio = cell.rps / baseline[(name, concurrency)]
        print(f"{name:<14}{transport:<12}{concurrency:>5}{cell.rps:>10.0f}{cell.percentile(0.5):>9.2f}"
              f"{cell.percentile(0.99):>9.2f}{ratio:>12.2f}")
    print(f"({os.cpu_count()} CPUs shared by client and server; {seconds:.0f} s per cell; "
          f"median of per-cell p50 {statistics.median(c.percentile(0.5) for *_, c in rows):.2f} ms)")


if __name__ == "__main__":
    main()
