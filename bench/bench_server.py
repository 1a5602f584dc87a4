"""Throughput and latency of tfship.server's Predict over gRPC and REST vs calling the model in-process.

    .venv/bin/python bench/bench_server.py [--seconds 3] [--rounds 3] [--no-pin] [--flags=--enable_batching]

Models: TF Serving's half_plus_two, a digits-like model built here (64 floats -> dense -> softmax over 10) and a
dense one (three 1024-wide layers, about a millisecond of its own). Also the gRPC floor: the same grpcio server
set-up with a Predict that runs nothing; its cost per call bounds what any model's gRPC ratio can reach.
Concurrency 1 and 8 (client threads). Each cell runs a bounded time, --rounds times (rounds interleaved, so a
slow spell of this shared machine hits one round of every cell rather than all rounds of one); the table shows
the median round and the range of the ratio. The server runs twice: as is, and with --enable_batching (rows
marked so: concurrent requests merged into one model run). The floor is measured on both gRPC fronts: the C++
one tfship serves with, and grpcio's Python server (the fallback).

Where the machine has 2+ CPUs the load generator (this process) runs on CPU 0 and the measured side on CPU 1:
the server subprocess under `taskset -c 1`, and the in-process baseline in a worker subprocess under the same
`taskset -c 1`, so both get the same one core and neither competes with the client. Each server cell is
measured right after its own baseline cell (same model, same concurrency), so load from other processes on a
shared machine skews both alike; "vs in-proc" is the ratio of the two. Prints a table; saves build/bench/server.json.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
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
import tensorflow as tf
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from tfship.host.net import free_port

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


class _Dense(tf.Module):
    """Three 1024-wide dense layers: a model whose own cost (about a millisecond) dwarfs the transport's."""

    def __init__(self) -> None:
        super().__init__()
        generator = np.random.default_rng(0)
        self.kernels = [tf.Variable(generator.normal(size=(1024, 1024)).astype(np.float32) * 0.03) for _ in range(3)]

    @tf.function(input_signature=[tf.TensorSpec([None, 1024], tf.float32, name="x")])
    def predict(self, x):
        for kernel in self.kernels:
            x = tf.nn.relu(tf.matmul(x, kernel))
        return {"y": x}


def build_dense_model(root: str) -> str:
    base = os.path.join(root, "dense")
    module = _Dense()
    tf.saved_model.save(module, os.path.join(base, "1"), signatures={"serving_default": module.predict})
    return base


def build_digits_model(root: str) -> str:
    base = os.path.join(root, "digits")
    module = _Digits()
    tf.saved_model.save(module, os.path.join(base, "1"), signatures={"serving_default": module.predict})
    return base



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


SERVER_CPU, CLIENT_CPU = 1, 0
PROJECT = Path(__file__).resolve().parents[1]


def pinned(argv: list[str], pin: bool) -> list[str]:
    return ["taskset", "-c", str(SERVER_CPU), *argv] if pin else argv


def start_server(config_path: str, extra_flags: list[str], pin: bool,
                 floor: str = "") -> tuple[subprocess.Popen, str, str]:
    """tfship.server with extra_flags, or (floor: a front's name) the no-op server on that front."""
    grpc_port, rest_port = free_port(), free_port()
    argv = ([sys.executable, __file__, "--floor-server", str(grpc_port), floor] if floor else
            [sys.executable, "-m", "tfship.server", f"--port={grpc_port}", f"--rest_api_port={rest_port}",
             "--bind_address=127.0.0.1", f"--model_config_file={config_path}", *extra_flags])
    process = subprocess.Popen(pinned(argv, pin), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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


class InProcessWorker:
    """A subprocess (this script with --worker, on the server's CPU) that loads the models and runs cells of
    direct signature calls on request: the baseline, on the same core the server gets."""

    def __init__(self, pin: bool):
        self.process = subprocess.Popen(pinned([sys.executable, __file__, "--worker"], pin), stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

    def cell(self, model: BenchModel, concurrency: int, seconds: float) -> Cell:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps({"base_path": model.base_path, "alias": model.input_alias,
                                             "example": model.example.tolist(), "concurrency": concurrency,
                                             "seconds": seconds}) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit("the in-process worker died")
        return Cell(**json.loads(line))

    def close(self) -> None:
        self.process.kill()
        self.process.wait(timeout=30)


def floor_server_main(port: int, front: str) -> None:
    """--floor-server PORT FRONT: a gRPC server on `front` set up as tfship.server sets it up (its thread count,
    limits, health, replica metadata), whose Predict answers a fixed response without running anything: the
    transport's floor."""
    from tfship.server.grpc_front import GrpcioServer, NativeServer

    answer = predict_pb2.PredictResponse()
    answer.outputs["y"].CopyFrom(tf.make_tensor_proto(np.array([[3.0]], np.float32)))

    class NoOp(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):
            return answer

    server_type = NativeServer if front == "native" else GrpcioServer
    server = server_type([lambda server: prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        NoOp(), server)], f"127.0.0.1:{port}", [], max_workers=16, max_queued=64)
    server.health.set("", health_pb2.HealthCheckResponse.SERVING)
    server.start()
    threading.Event().wait()


def worker_main() -> None:
    """--worker: one JSON cell request per stdin line, one JSON Cell per stdout line."""
    functions: dict[str, Callable] = {}
    for line in sys.stdin:
        order = json.loads(line)
        base = Path(order["base_path"])
        if order["base_path"] not in functions:
            version_dir = max((p for p in base.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
            functions[order["base_path"]] = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
        function = functions[order["base_path"]]
        example = np.array(order["example"], np.float32)

        def in_process(function=function, alias=order["alias"], example=example) -> None:
            function(**{alias: tf.constant(example)})

        cell = run_cell(in_process, order["concurrency"], order["seconds"])
        print(json.dumps({"requests": cell.requests, "seconds": cell.seconds, "latencies": cell.latencies}),
              flush=True)


def transport_calls(channel: grpc.Channel, rest_url: str, model: BenchModel) -> list[tuple[str, Callable[[], None]]]:
    """One Predict of `model`'s example over gRPC (a shared channel) and over REST (a keep-alive connection per
    client thread)."""
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model.name
    request.inputs[model.input_alias].CopyFrom(tf.make_tensor_proto(model.example))
    body = json.dumps({"instances": model.example.tolist()}).encode()
    path = f"/v1/models/{model.name}:predict"
    rest_host = rest_url.removeprefix("http://")
    connection_local = threading.local()

    def grpc_call() -> None:
        stub.Predict(request, timeout=30)

    def rest_call() -> None:
        # http.client, one keep-alive connection per thread: `requests` costs the client about a millisecond
        # of CPU per call, enough to make the client the bottleneck on a shared core.
        connection = getattr(connection_local, "connection", None)
        if connection is None:
            connection = connection_local.connection = http.client.HTTPConnection(rest_host, timeout=30)
        connection.request("POST", path, body, {"Content-Type": "application/json"})
        reply = connection.getresponse()
        text = reply.read()
        if reply.status != 200:
            raise RuntimeError(text)

    return [("gRPC", grpc_call), ("REST", rest_call)]


def bench_server(config_path: str, flags: list[str], suffix: str, models: list[BenchModel], seconds: float,
                 rounds: int, pin: bool, worker: InProcessWorker) -> list[tuple[str, str, int, Cell, Cell]]:
    """(model, transport, concurrency, server cell, baseline cell measured just before it), `rounds` per cell."""
    rows = []
    process, grpc_address, rest_url = start_server(config_path, flags, pin)
    try:
        with grpc.insecure_channel(grpc_address) as channel:
            cells = [(model, concurrency, transport, call) for model in models
                     for concurrency in CONCURRENCIES for transport, call in transport_calls(channel, rest_url, model)]
            for _ in range(rounds):
                for model, concurrency, transport, call in cells:
                    baseline = worker.cell(model, concurrency, seconds)
                    served = run_cell(call, concurrency, seconds)
                    rows.append((model.name, transport + suffix, concurrency, served, baseline))
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    return rows


def bench_floor(config_path: str, model: BenchModel, seconds: float, pin: bool, front: str) -> dict[int, Cell]:
    """gRPC Predict against the no-op server (--floor-server) on `front`, per concurrency."""
    process, grpc_address, _ = start_server(config_path, [], pin, floor=front)
    try:
        with grpc.insecure_channel(grpc_address) as channel:
            call = dict(transport_calls(channel, "http://127.0.0.1:1", model))["gRPC"]
            return {concurrency: run_cell(call, concurrency, seconds) for concurrency in CONCURRENCIES}
    finally:
        process.kill()
        process.wait(timeout=30)


def bench_models(workdir: str) -> tuple[list[BenchModel], str]:
    """half_plus_two and the digits-like model, and a model config file serving both."""
    models = [
        BenchModel("half_plus_two", str(HALF_PLUS_TWO), "x", np.array([[2.0]], np.float32)),
        BenchModel("digits", build_digits_model(workdir), "x",
                   np.random.default_rng(1).random((1, 64), dtype=np.float32)),
        BenchModel("dense", build_dense_model(workdir), "x",
                   np.random.default_rng(2).random((1, 1024), dtype=np.float32)),
    ]
    config_path = os.path.join(workdir, "models.config")
    with open(config_path, "w") as handle:
        handle.write("model_config_list {\n" + "".join(
            f'  config {{ name: "{m.name}" base_path: "{m.base_path}" }}\n' for m in models) + "}\n")
    return models, config_path


def pin_client(wanted: bool) -> bool:
    """Move this process (and the threads it starts from now on) to CLIENT_CPU when the server can get its own."""
    pin = wanted and len(os.sched_getaffinity(0)) >= 2 and SERVER_CPU in os.sched_getaffinity(0)
    if pin:
        os.sched_setaffinity(0, {CLIENT_CPU})
    return pin


def placement(pin: bool) -> str:
    return (f"client on CPU {CLIENT_CPU}; server and in-process baseline each on CPU {SERVER_CPU} (taskset)"
            if pin else f"{os.cpu_count()} CPUs shared by client and server")


def main() -> None:
    if "--worker" in sys.argv:
        return worker_main()
    if "--floor-server" in sys.argv:
        at = sys.argv.index("--floor-server")
        return floor_server_main(int(sys.argv[at + 1]), sys.argv[at + 2])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each cell")
    parser.add_argument("--rounds", type=int, default=3, help="measurements of each cell (the median is shown)")
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="let client and server share all CPUs")
    parser.add_argument("--flags", action="append", default=None,
                        help="server flags of one run, repeatable (default: none, then --enable_batching)")
    args = parser.parse_args()
    pin = pin_client(args.pin)
    runs = [(f" {flags}" if flags else "", flags.split()) for flags in (args.flags or ["", "--enable_batching"])]

    models, config_path = bench_models(tempfile.mkdtemp(prefix="tfship-bench-server-"))

    worker = InProcessWorker(pin)
    rows: list[tuple[str, str, int, Cell, Cell]] = []
    try:
        for suffix, flags in runs:
            rows += bench_server(config_path, flags, suffix, models, args.seconds, args.rounds, pin, worker)
        floors = {front: bench_floor(config_path, models[0], args.seconds, pin, front)
                  for front in ("native", "grpcio")}
    finally:
        worker.close()

    rounds: dict[tuple[str, str, int], list[tuple[Cell, Cell]]] = {}
    for name, transport, concurrency, cell, baseline in rows:
        rounds.setdefault((name, transport, concurrency), []).append((cell, baseline))
    print(f"{'model':<14}{'path':<28}{'conc':>5}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}"
          f"{'in-proc':>9}{'vs in-proc':>11}{'range':>12}")
    results = []
    for (name, transport, concurrency), measured in rounds.items():
        ratios = sorted(cell.rps / baseline.rps for cell, baseline in measured)
        cell, baseline = sorted(measured, key=lambda pair: pair[0].rps / pair[1].rps)[len(measured) // 2]
        ratio = cell.rps / baseline.rps
        print(f"{name:<14}{transport:<28}{concurrency:>5}{cell.rps:>8.0f}{cell.percentile(0.5):>8.2f}"
              f"{cell.percentile(0.99):>8.2f}{baseline.rps:>9.0f}{ratio:>11.2f}"
              f"{f'{ratios[0]:.2f}-{ratios[-1]:.2f}':>12}")
        results.append({"model": name, "path": transport, "concurrency": concurrency, "rps": cell.rps,
                        "p50_ms": cell.percentile(0.5), "p99_ms": cell.percentile(0.99),
                        "in_process_rps": baseline.rps, "ratio": ratio, "ratios": ratios})
    top = max(CONCURRENCIES)
    bounds = {}
    for front, floor in floors.items():
        floor_cost = 1.0 / floor[top].rps  # the server core is saturated at this concurrency: seconds of it per call
        bounds[front] = {result["model"]: 1.0 / (1.0 + floor_cost * result["in_process_rps"])  # model/(model+floor)
                         for result in results if result["path"] == "gRPC" and result["concurrency"] == top}
        print(f"gRPC floor on the {front} front (no-op Predict, as tfship.server sets it up): {floor[1].rps:.0f} "
              f"req/s at concurrency 1, {floor[top].rps:.0f} at {top} ({floor_cost * 1e6:.0f} us of the server core "
              f"per call); without batching, gRPC c={top} vs in-proc is at best: "
              + ", ".join(f"{name} {bound:.2f}" for name, bound in bounds[front].items()))
    median_p50 = statistics.median(row[3].percentile(0.5) for row in rows)
    print(f"({placement(pin)}; {args.seconds:.0f} s per cell, {args.rounds} rounds; load average "
          f"{os.getloadavg()[0]:.1f}; median of per-cell p50 {median_p50:.2f} ms)")
    out = PROJECT / "build" / "bench" / "server.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"placement": placement(pin), "seconds_per_cell": args.seconds, "rounds": args.rounds,
                               "load_average": os.getloadavg()[0], "cells": results,
                               "grpc_floor_rps": {front: {str(c): cell.rps for c, cell in floor.items()}
                                                  for front, floor in floors.items()},
                               "grpc_ratio_bound": bounds}, indent=1) + "\n")
    print(f"saved {out.relative_to(PROJECT)}")


if __name__ == "__main__":
    main()
