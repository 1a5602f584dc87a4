"""One run at a time per project, SIGTERM unwinding like Ctrl-C, and a hand-off file that is never half-written.

Real processes: a second interpreter holds the lock or receives the signal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tfship import artifacts, runs
from tfship.artifacts import Artifacts, ImageArtifact
from tfship.config import Config
from tfship.errors import TfshipError

READY_TIMEOUT = 60


def start_python(code: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **env})


def wait_for_line(process: subprocess.Popen, expected: str) -> None:
    line = process.stdout.readline()  # the child prints one line when ready; bounded by the test's timeout below
    assert line.strip() == expected, (line, process.stderr.read() if process.poll() is not None else "")


@pytest.fixture
def env(tmp_path):
    return {"TFSHIP_STATE_DIR": str(tmp_path / "state")}


def test_a_second_run_of_the_same_project_is_refused_naming_the_holder(tmp_path, env, monkeypatch):
    monkeypatch.setenv("TFSHIP_STATE_DIR", env["TFSHIP_STATE_DIR"])
    project = tmp_path / "project"
    project.mkdir()
    holder = start_python(f"""
        import time
        from pathlib import Path
        from tfship import runs
        from tfship.config import Config
        with runs.exclusive(Config(root=Path({str(project)!r})), "build"):
            print("holding", flush=True)
            time.sleep({READY_TIMEOUT})
    """, env)
    try:
        wait_for_line(holder, "holding")
        with pytest.raises(runs.AnotherRunError, match=rf"another tfship run \(build, pid {holder.pid}, started at "):
            with runs.exclusive(Config(root=project), "push"):
                pass
        # Another project is not held up.
        other = tmp_path / "other"
        other.mkdir()
        with runs.exclusive(Config(root=other), "push"):
            pass
    finally:
        holder.kill()
        holder.wait(timeout=30)
    # The kernel released the dead holder's lock: no stale lock to clean up by hand.
    with runs.exclusive(Config(root=project), "push"):
        assert oct(runs.lock_path(Config(root=project)).stat().st_mode & 0o777) == "0o600"
    assert oct(Path(env["TFSHIP_STATE_DIR"]).stat().st_mode & 0o777) == "0o700"


def test_sigterm_runs_every_finally_and_exits_143_with_one_line(tmp_path, env):
    marker = tmp_path / "cleaned-up"
    task = start_python(f"""
        import time
        from pathlib import Path
        from invoke import Exit
        from tfship.tasks._common import handles_errors

        @handles_errors
        def body():
            try:
                print("running", flush=True)
                time.sleep({READY_TIMEOUT})
            finally:
                Path({str(marker)!r}).write_text("port-forward stopped")

        try:
            body()
        except Exit as exit:
            print(exit.message, flush=True)
            raise SystemExit(exit.code)
    """, env)
    wait_for_line(task, "running")
    task.send_signal(signal.SIGTERM)
    out, err = task.communicate(timeout=30)
    assert task.returncode == 143, err
    assert out.strip().splitlines() == [
        "Error: terminated (SIGTERM); what was under way was undone or left as the line above says"]
    assert marker.read_text() == "port-forward stopped"


def test_artifacts_are_replaced_whole_and_leave_no_temp_file(tmp_path):
    path = tmp_path / "build" / "artifacts.json"
    first = Artifacts(images={"devel": ImageArtifact(role="devel", name="d", tag="1", image_id="sha256:1")})
    artifacts.save(path, first)
    second = Artifacts(images={"devel": ImageArtifact(role="devel", name="d", tag="2", image_id="sha256:2")})
    artifacts.save(path, second)
    assert artifacts.load(path).image("devel").tag == "2"
    assert sorted(p.name for p in path.parent.iterdir()) == ["artifacts.json"]


def test_a_full_disk_is_one_line_and_keeps_the_old_record(tmp_path, monkeypatch):
    path = tmp_path / "artifacts.json"
    artifacts.save(path, Artifacts(registry="kept"))

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(TfshipError, match="cannot write .*artifacts.json: No space left on device"):
        artifacts.save(path, Artifacts(registry="new"))
    assert artifacts.load(path).registry == "kept"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifacts.json"]
