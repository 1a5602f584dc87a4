"""`kubectl port-forward` on 127.0.0.1 to a pod or a Service, with the local ports read from kubectl's own output:
how the smoke test, releases, clients and the web page reach what runs in the cluster from this machine."""

from __future__ import annotations

import queue
import re
import subprocess
import threading
import time
from typing import Sequence

from tfship.errors import SmokeTestError

FORWARD_LINE = re.compile(r"Forwarding from 127\.0\.0\.1:(\d+) -> (\d+)")
FORWARD_START_TIMEOUT = 15.0


class PortForward:
    """`kubectl port-forward pod/NAME :8500 :8501` on 127.0.0.1, ports read from kubectl's own output.
    kind="svc" forwards to a Service instead (kubectl then picks one of its pods)."""

    def __init__(self, argv: list[str], namespace: str, pod: str, container_ports: Sequence[int], kind: str = "pod"):
        self.command = [*argv, "port-forward", "-n", namespace, f"{kind}/{pod}", "--address", "127.0.0.1",
                        *(f":{p}" for p in container_ports)]
        self.pod = pod
        self.container_ports = list(container_ports)
        self.ports: dict[int, int] = {}
        self.process: subprocess.Popen | None = None
        self.restarts = 0

    def start(self) -> "PortForward":
        self.process = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, text=True)
        lines: queue.Queue[str | None] = queue.Queue()

        def pump() -> None:  # keeps draining so kubectl never blocks on a full pipe
            for line in self.process.stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        self.ports = {}
        seen: list[str] = []
        deadline = time.monotonic() + FORWARD_START_TIMEOUT
        while len(self.ports) < len(self.container_ports):
            try:
                line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                line = None
            if line is None:
                self.stop()
                raise SmokeTestError(f"port-forward to pod {self.pod} did not start: {' | '.join(seen[-3:])}",
                                     "check the pod with: invoke status")
            seen.append(line.strip())
            match = FORWARD_LINE.search(line)
            if match:
                self.ports[int(match.group(2))] = int(match.group(1))
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def restart(self) -> None:
        self.stop()
        self.restarts += 1
        self.start()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
