"""Helpers to start the real `python -m tfship.server` on 127.0.0.1 with free ports, wait for it, stop it with SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tfship.host.net import free_port

TESTDATA = Path(__file__).resolve().parents[3] / "shared" / "testdata" / "tf_serving"  # ../shared beside the repository
HALF_PLUS_TWO = TESTDATA / "saved_model_half_plus_two_cpu"
HALF_PLUS_TWO_2_VERSIONS = TESTDATA / "saved_model_half_plus_two_2_versions"


def require_testdata() -> None:
    """A clear failure (not a skip) when TF Serving's test models are missing on this machine."""
    if not (HALF_PLUS_TWO / "00000123" / "saved_model.pb").is_file():
        raise AssertionError(f"TF Serving's half_plus_two test models are not in {TESTDATA}: copy them from "
                             "tensorflow_serving/servables/tensorflow/testdata")
STARTUP_TIMEOUT_S = 90.0  # TensorFlow's import alone takes seconds on a busy 2-core machine



class ServerProcess:
    """One model server subprocess; its stderr goes to a log file shown when something goes wrong."""

    def __init__(self, args: list[str], log_path: Path):
        if any(str(TESTDATA) in arg for arg in args):
            require_testdata()
        self.grpc_port = free_port()
        self.rest_port = free_port()
        self.log_path = log_path
        self.argv = [sys.executable, "-m", "tfship.server", f"--port={self.grpc_port}",
                     f"--rest_api_port={self.rest_port}", "--bind_address=127.0.0.1", *args]
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen(self.argv, stdout=self._log, stderr=subprocess.STDOUT)
        self.grpc_address = f"127.0.0.1:{self.grpc_port}"
        self.rest_url = f"http://127.0.0.1:{self.rest_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT_S) -> "ServerProcess":
        """Until grpc.health.v1 says SERVING (the ports open only once models are AVAILABLE)."""
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.grpc_address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise AssertionError(f"server exited with {self.process.returncode}:\n{self.log()}")
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return self
                except grpc.RpcError:
                    pass
                time.sleep(0.3)
        self.stop()
        raise AssertionError(f"server not SERVING within {timeout}s:\n{self.log()}")

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
            raise AssertionError(f"server still running after {timeout}s:\n{self.log()}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.wait_exit(30.0)
        finally:
            self._log.close()
