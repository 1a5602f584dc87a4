"""`./run test` without test paths: the whole suite in two lanes side by side, then the test that must run alone.

    python tests/lanes.py [PYTEST ARGS]     (every pytest of the run gets the same ARGS: -v, -x, -m, -k ...)

The cluster lane (tests/e2e, tests/faults) mostly waits on Kubernetes, the host lane (unit, server, integration, web)
mostly computes: side by side the suite takes about as long as the longer lane instead of both. They can share the
machine because every module already keeps to its own image names, registry ports, namespaces and temp folders;
restarting the Docker engine would pull it from under the host lane, so that one test runs alone afterwards.
Each output line is prefixed with its lane; the exit code is the first failure's (pytest's own codes).
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ALONE = ["tests/faults/test_dockerd_restart.py"]  # stops the Docker engine under whatever else is running
LANES = {
    "cluster": ["tests/e2e", "tests/faults", *(f"--ignore={path}" for path in ALONE)],
    "host": ["tests/unit", "tests/server", "tests/integration", "tests/web"],
}
NO_TESTS = 5  # pytest's code when a lane's -m / -k left nothing to run there: not a failure of the run
INTERRUPTED = 2
SUMMARY = re.compile(r"\b(passed|failed|errors?|deselected|no tests ran)\b.* in [\d.]+s")  # pytest's last line
TERMINATE_GRACE_SECONDS = 120  # a lane's teardown: deleting namespaces, stopping registries


class Lane:
    def __init__(self, name: str, paths: list[str], args: list[str]):
        basetemp = Path(tempfile.gettempdir()) / "tfship-tests" / name  # one each: pytest prunes its numbered ones
        basetemp.parent.mkdir(exist_ok=True)
        self.name = name
        self.started = time.monotonic()
        self.summary = ""
        self.seconds = 0.0
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pytest", *paths, f"--basetemp={basetemp}", *args], cwd=REPO,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        self.relay = threading.Thread(target=self._relay, daemon=True)
        self.relay.start()

    def _relay(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if SUMMARY.search(line):
                self.summary = line.strip("= \n")
            sys.stdout.write(f"[{self.name}] {line}")
            sys.stdout.flush()
        self.seconds = time.monotonic() - self.started  # its own end, however long the other lane runs on

    def wait(self) -> int:
        code = self.process.wait()
        self.relay.join(timeout=10)
        return code

    def stop(self, forward: bool) -> None:
        """Lets pytest run its teardowns (namespaces, registries, containers), bounded; then kills it."""
        if self.process.poll() is None and forward:
            self.process.send_signal(signal.SIGINT)  # once: a second Ctrl-C would cut pytest's teardown short
        try:
            self.process.wait(timeout=TERMINATE_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.relay.join(timeout=10)


def unplaced(tests: Path = REPO / "tests") -> list[str]:
    """Test folders no lane runs (a new layer must be given one, or it would silently never run)."""
    placed = {path for paths in LANES.values() for path in paths if not path.startswith("-")}
    return sorted(f"tests/{folder.name}" for folder in tests.iterdir()
                  if folder.is_dir() and any(folder.glob("test_*.py")) and f"tests/{folder.name}" not in placed)


def overall(codes: list[int]) -> int:
    failures = [code for code in codes if code not in (0, NO_TESTS)]
    if failures:
        return failures[0]
    return 0 if 0 in codes else NO_TESTS


def main(args: list[str]) -> int:
    missing = unplaced()
    if missing:
        print(f"Error: {', '.join(missing)} is in no lane of tests/lanes.py (hint: add it to LANES there)",
              file=sys.stderr)
        return 1
    started = time.monotonic()
    running: list[Lane] = []
    finished: list[tuple[Lane, int]] = []
    terminated: list[int] = []

    def on_sigterm(signum, frame):  # CI's timeout or a kill: unlike a terminal's Ctrl-C, the lanes did not get it
        terminated.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        running = [Lane(name, paths, args) for name, paths in LANES.items()]
        finished = [(lane, lane.wait()) for lane in running]
        alone = Lane("alone", ALONE, args)
        running.append(alone)
        finished.append((alone, alone.wait()))
    except KeyboardInterrupt:
        for signum in (signal.SIGINT, signal.SIGTERM):  # the lanes' teardowns now: nothing more cuts them short
            signal.signal(signum, signal.SIG_IGN)
        for lane in running:
            lane.stop(forward=bool(terminated))
        print("Error: the test run was interrupted; each lane ran its teardown", file=sys.stderr)
        return INTERRUPTED
    code = overall([code for _, code in finished])
    for lane, lane_code in finished:
        print(f"lane {lane.name}: exit {lane_code} in {lane.seconds:.0f} s: {lane.summary or 'no summary'}")
    print(f"the whole suite: exit {code} in {time.monotonic() - started:.0f} s")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
