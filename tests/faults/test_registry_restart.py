"""The registry killed (SIGKILL) in the middle of a push and started again two seconds later: the push succeeds
through retries (the engine's and tfship's), the digest tfship records is the one the registry serves, the image
pulls back by that digest with the same id, and what the registry held before is still there."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import docker.errors
import pytest

from tfship import artifacts, push, registry
from tfship.artifacts import Artifacts
from tfship.config import Config, RegistryConfig
from tfship.registry.local import LocalSite

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
from registry_fixtures import docker_client, free_port, make_image, make_tiny_image  # noqa: E402,F401 (fixtures)

RESTART_AFTER = 2.0  # seconds the registry stays dead
LAYER_BYTES = 48 << 20  # big enough that the kill lands while the layer is being uploaded


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.setenv("TFSHIP_STATE_DIR", str(tmp_path / "state"))
    config = Config(root=tmp_path / "project", registry=RegistryConfig(url=f"127.0.0.1:{free_port()}",
                                                                      server="process"))
    config.root.mkdir()
    registry.up(config, auth=False)
    yield config
    registry.down(config, purge=True)


@pytest.fixture
def big_image(docker_client):
    image = make_tiny_image(docker_client, "serving", size=LAYER_BYTES)
    yield image
    try:
        docker_client.images.remove(image.image_id, force=True)
    except docker.errors.NotFound:
        pass


def test_registry_killed_mid_push_is_retried_and_the_digest_is_right(project, make_image, big_image, docker_client,
                                                                     monkeypatch, fault_row):
    site = LocalSite(project.registry.url, auth=False)
    api = registry.RegistryClient(registry.resolve(project), None)
    # Something the registry held before the fault: it must survive the kill.
    earlier = make_image("devel")
    artifacts.save(project.artifacts_path, Artifacts(images={"devel": earlier}))
    earlier_digest = push.push(project).image("devel").digest

    killed: list[int] = []
    restarted = threading.Event()
    engine_retries: list[str] = []
    real_read = push.read_push_stream

    def restart_later() -> None:
        time.sleep(RESTART_AFTER)
        registry.up(project, auth=False)
        restarted.set()

    def kill_on_upload(events, *args, **kwargs):
        def watched():
            for event in events:
                if "Retrying" in event.get("status", ""):
                    engine_retries.append(event["status"])
                if not killed and event.get("status") == "Pushing":  # bytes of the layer are on their way
                    pid = site.process_pid()
                    assert pid is not None
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    threading.Thread(target=restart_later, daemon=True).start()
                yield event
        return real_read(watched(), *args, **kwargs)

    monkeypatch.setattr(push, "read_push_stream", kill_on_upload)
    artifacts.save(project.artifacts_path, Artifacts(images={"devel": earlier, "serving": big_image}))
    started = time.monotonic()
    error = None
    try:
        report = push.push_images(project)
    except Exception as exc:  # the table shows it; the asserts below fail on it
        error, report = exc, None
    elapsed = time.monotonic() - started
    restarted.wait(30)
    pushed = next((image for image in report.images if image.role == "serving"), None) if report else None
    served = api.manifest_digest(f"tfship/{big_image.name}", big_image.tag)
    recorded = artifacts.load(project.artifacts_path).image("serving").digest
    earlier_still = api.manifest_digest(f"tfship/{earlier.name}", earlier.tag)
    # The data: drop the local image and pull it back by the recorded digest.
    pulled_id = None
    if recorded:
        docker_client.images.remove(big_image.image_id, force=True)
        repository, digest = artifacts.load(project.artifacts_path).image("serving").pinned_ref.split("@")
        try:
            docker_client.api.pull(repository, tag=digest)
            pulled_id = docker_client.images.get(f"{repository}@{digest}").id
        except docker.errors.APIError as exc:  # shown in the table as lost data, and failed below
            pulled_id = f"pull failed: {exc}"
    fault_row("registry SIGKILLed mid-push, back after 2 s", "push retries; digest read back right",
              f"{'error: ' + str(error) if error else 'pushed'} in {elapsed:.0f}s, tfship attempts "
              f"{pushed.attempts if pushed else '?'}, engine retries {len(engine_retries)}, digest served==recorded: "
              f"{served == recorded}",
              "none" if pulled_id == big_image.image_id and earlier_still == earlier_digest else "LOST")
    assert killed, "the push never reached a layer upload: the fault did not happen"
    assert error is None, error
    assert restarted.is_set() and site.process_pid() not in (None, killed[0])
    assert pushed.digest == served == recorded and served.startswith("sha256:")
    assert pulled_id == big_image.image_id
    assert earlier_still == earlier_digest
