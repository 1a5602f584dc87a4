"""Host plumbing: the process runner's timeouts (streamed too), the process table's terminate, the apt helper."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tfship.errors import TfshipError
from tfship.host import apt, proc, processes


def pid_alive(pid: int) -> bool:
    return not processes.is_gone(pid)


def wait_gone(pid: int, seconds: float = 5.0) -> bool:
    for _ in range(int(seconds / 0.1)):
        if processes.is_gone(pid):
            return True
        time.sleep(0.1)
    return processes.is_gone(pid)


def test_a_streamed_command_is_timed_out_with_everything_it_started(tmp_path):
    pid_file = tmp_path / "sleep.pid"
    lines: list[str] = []
    with pytest.raises(TfshipError, match=r"did not finish within 1s") as raised:
        # A hung build: prints, then a child that never ends (a real sleep), with the output pipe still open.
        proc.run(["sh", "-c", f"echo started; sleep 20 & echo $! > {pid_file}; wait"], on_line=lines.append,
                 timeout=1, hint="see above")
    assert raised.value.hint == "see above"
    assert lines == ["started"]
    assert wait_gone(int(pid_file.read_text()))  # the grandchild went with its process group


def test_a_captured_command_is_timed_out_with_everything_it_started(tmp_path):
    pid_file = tmp_path / "sleep.pid"
    with pytest.raises(TfshipError, match=r"did not finish within 1s"):
        proc.run(["sh", "-c", f"sleep 20 & echo $! > {pid_file}; wait"], timeout=1)
    assert wait_gone(int(pid_file.read_text()))


def test_ctrl_c_while_a_command_runs_stops_it_with_everything_it_started(tmp_path):
    """A Ctrl-C (or SIGTERM, which tfship turns into one) during e.g. deploy's `kubectl get` leaves no kubectl: the
    command runs in a session of its own and would not get the terminal's signal."""
    pid_file = tmp_path / "sleep.pid"

    def interrupt(line: str) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        proc.run(["sh", "-c", f"sleep 20 & echo $! > {pid_file}; echo started; wait"], on_line=interrupt, timeout=30)
    assert wait_gone(int(pid_file.read_text()))


def test_streamed_lines_come_as_printed_and_the_result_keeps_the_output():
    lines: list[str] = []
    result = proc.run(["sh", "-c", "printf 'a\\nb\\r\\nprogress 1\\rprogress 2\\rc\\n'; echo err >&2; exit 3"],
                      on_line=lines.append, check=False, timeout=30)
    assert lines == ["a", "b", "progress 1", "progress 2", "c", "err"]
    assert result.returncode == 3 and result.stdout.startswith("a\nb\n")


def test_input_reaches_a_streamed_command():
    lines: list[str] = []
    proc.run(["cat"], input="one\ntwo\n", on_line=lines.append, timeout=30)
    assert lines == ["one", "two"]


def test_split_lines_holds_a_trailing_carriage_return():
    assert proc.split_lines("a\r", final=False) == ([], "a\r")
    assert proc.split_lines("a\r\nb", final=False) == (["a"], "b")
    assert proc.split_lines("b", final=True) == (["b"], "")


def test_a_failing_command_is_one_error_with_its_last_lines():
    with pytest.raises(TfshipError, match=r"failed with exit code 2: boom") as raised:
        proc.run(["sh", "-c", "echo boom >&2; exit 2"], hint="fix it")
    assert raised.value.hint == "fix it"
    with pytest.raises(TfshipError, match="command not found: no-such-command-here"):
        proc.run(["no-such-command-here"])


def test_terminate_stops_a_process_that_ignores_sigterm():
    stubborn = subprocess.Popen([sys.executable, "-c", "import signal, time\n"
                                 "signal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('ready', flush=True)\n"
                                 "time.sleep(30)"], stdout=subprocess.PIPE, text=True)
    polite = subprocess.Popen(["sleep", "30"])
    try:
        assert stubborn.stdout.readline().strip() == "ready"  # its SIGTERM handler is set
        assert processes.terminate([stubborn.pid, polite.pid], timeout=0.5) == []
        assert not pid_alive(stubborn.pid) and not pid_alive(polite.pid)
    finally:
        for child in (stubborn, polite):
            child.kill()
            child.wait()


def test_list_processes_and_flag_values():
    mine = [p for p in processes.list_processes() if p.pid == os.getpid()]
    assert len(mine) == 1 and mine[0].session == os.getsid(0)
    assert processes.flag_value(("etcd", "--data-dir", "/d"), "--data-dir") == "/d"
    assert processes.flag_value(("etcd", "--data-dir=/e"), "--data-dir") == "/e"
    assert processes.flag_value(("etcd",), "--data-dir") is None


def fake_apt(monkeypatch, *, missing: list[str], root: bool) -> list[list[str]]:
    """apt with `missing` packages, run as root or not; returns the commands it runs (recorded, not run)."""
    ran: list[list[str]] = []
    monkeypatch.setattr(apt, "missing", lambda packages: missing)
    monkeypatch.setattr(apt, "is_root", lambda: root)
    monkeypatch.setattr(apt.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(proc, "run", lambda argv, **kwargs: ran.append(list(argv)))
    return ran


def test_apt_never_runs_for_a_user_who_is_not_root(monkeypatch):
    ran = fake_apt(monkeypatch, missing=["etcd-server"], root=False)
    with pytest.raises(TfshipError) as raised:
        apt.ensure_packages(["etcd-server", "socat"], why="to run the local cluster")
    assert raised.value.message == "Debian packages etcd-server are missing (to run the local cluster)"
    assert raised.value.hint == "run: sudo apt-get install -y etcd-server"
    assert ran == []


def test_apt_installs_only_what_is_missing_as_root(monkeypatch):
    ran = fake_apt(monkeypatch, missing=["socat"], root=True)
    apt.ensure_packages(["etcd-server", "socat"])
    assert ran == [["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "socat"]]


def test_apt_sources_reads_deb822_and_one_line_files(tmp_path):
    (tmp_path / "debian.sources").write_text(
        "Types: deb deb-src\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main\n\nTypes: deb-src\nURIs: http://src.example/debian\nSuites: trixie\n")
    (tmp_path / "extra.list").write_text("# comment\ndeb [signed-by=/k.gpg] http://other.example/debian bookworm main\n"
                                         "deb-src http://x.example/debian bookworm main\n")
    assert apt.sources([tmp_path]) == [("http://mirror.example/debian", ["bookworm", "bookworm-updates"]),
                                       ("http://other.example/debian", ["bookworm"])]


def test_apt_missing_asks_dpkg():
    assert apt.missing(["dpkg", "no-such-package-tfship"]) == ["no-such-package-tfship"]


def test_a_detached_service_gets_no_secret_from_our_environment(tmp_path, monkeypatch):
    """/proc/PID/environ of a daemon stays readable as long as it lives: no password may be in it."""
    monkeypatch.setenv("TFSHIP_REGISTRY_PASSWORD", "hunter2-do-not-leak")
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_do_not_leak")
    log = tmp_path / "service.log"
    service = proc.start_detached(["sleep", "30"], log, env={"KEEP_ME": "yes"})
    try:
        environ: list[bytes] = []
        for _ in range(50):  # bounded: on a loaded machine the new process's environ may read empty for a moment
            environ = Path(f"/proc/{service.pid}/environ").read_bytes().split(b"\0")
            if b"KEEP_ME=yes" in environ:
                break
            time.sleep(0.1)
        assert b"KEEP_ME=yes" in environ
        assert not [entry for entry in environ if b"do_not_leak" in entry or b"do-not-leak" in entry]
        assert oct(log.stat().st_mode & 0o777) == "0o600"
    finally:
        service.kill()
        service.wait(timeout=10)
