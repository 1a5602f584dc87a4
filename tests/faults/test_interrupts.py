"""Interrupts at the worst moment, through the real `invoke`: SIGTERM and Ctrl-C (SIGINT) while a new serving image
is being accepted. Nothing unaccepted may be left under the real tag, no acceptance container may keep running,
artifacts.json must not record the image, and the next build must build (not say "up to date")."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from invoke_runs import run_until

from tfship import config as tfconfig
from tfship import docker_client, engine, images

REPO = Path(__file__).resolve().parents[2]
INVOKE = Path(sys.executable).parent / "invoke"
TESTDATA = REPO.parent / "shared" / "testdata" / "tf_serving"
STAGE_TIMEOUT = 900  # a cold runtime image build on a busy 2-core machine

CONFIG = """\
base:
  source: debian
serving:
  runtime: python
images:
  devel: tfship-faults-devel
  serving: tfship-faults-serving
models:
  - name: half_plus_two
"""


def acceptance_containers() -> list[str]:
    return [c["Id"] for c in docker_client.api().containers(all=True, filters={"label": "io.tfship.role=acceptance"})]


def serving_refs(config: tfconfig.Config) -> set[str]:
    return {ref for image in docker_client.api().images(name=config.images.serving) for ref in image["RepoTags"] or []}


@pytest.fixture
def project(tmp_path):
    engine.ensure_engine()
    (tmp_path / "tfship.yaml").write_text(CONFIG)
    shutil.copytree(TESTDATA / "saved_model_half_plus_two_cpu", tmp_path / "models" / "half_plus_two")
    config = tfconfig.load(tmp_path / "tfship.yaml", environ={})
    yield config
    for ref in serving_refs(config):
        docker_client.remove_image(ref)


def run_build_until(project: tfconfig.Config, marker: str) -> tuple[subprocess.Popen, list[str]]:
    """Start `invoke build --image serving` and return once it printed `marker` (bounded by STAGE_TIMEOUT)."""
    return run_until(["build", "--image", "serving"], project.root, marker, STAGE_TIMEOUT)


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_an_interrupt_during_acceptance_leaves_no_unaccepted_image(project, sig, code, fault_row):
    before = set(acceptance_containers())  # another run's (or a crashed engine's) leftovers are not this test's
    build, seen = run_build_until(project, "Accepting")
    time.sleep(1.0)  # the acceptance container is starting or running now
    build.send_signal(sig)
    rest, _ = build.communicate(timeout=120)
    output = "\n".join(seen) + "\n" + rest
    plan_ref = next(line.split()[4] for line in seen if "Building serving image" in line)
    left_tagged = plan_ref in serving_refs(project)
    artifacts = project.artifacts_path
    recorded = artifacts.exists() and "serving" in artifacts.read_text()
    fault_row(f"{sig.name} during serving-image acceptance", f"exit {code}, one Error line, nothing unaccepted kept",
              f"exit {build.returncode}, real tag left: {left_tagged}, acceptance containers: "
              f"{len(acceptance_containers())}, recorded: {recorded}",
              "none (nothing was accepted yet)" if not (left_tagged or recorded) else "UNACCEPTED IMAGE KEPT")
    assert build.returncode == code, output
    assert output.strip().splitlines()[-1].startswith("Error: ")
    assert plan_ref not in serving_refs(project), "an unaccepted image kept the real tag"
    assert not [ref for ref in serving_refs(project) if ref.endswith(images.CANDIDATE_SUFFIX)]
    assert set(acceptance_containers()) - before == set(), "the acceptance container was left running"
    assert not artifacts.exists() or "serving" not in artifacts.read_text()
    # The next build builds and accepts again instead of trusting what it finds.
    again = subprocess.run([str(INVOKE), "-r", str(REPO), "build", "--image", "serving"], cwd=project.root,
                           capture_output=True, text=True, timeout=STAGE_TIMEOUT)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Accepting" in again.stderr and "up to date" not in again.stderr.split("Building serving image")[-1]
    assert plan_ref in serving_refs(project)
