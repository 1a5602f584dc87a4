"""The registry killed (SIGKILL) in the middle of a push and started again two seconds later: the push succeeds
through retries (the engine's and tfship's), the digest tfship records is the one the registry serves, the image
pulls back by that digest with the same id, and what the registry held before is still there. And the registry down
when a push starts: the engine fails at once, and tfship's own retries carry the push through."""

from __future__ import annotations

import os
import signal
import threading
import time

import docker.errors
import pytest

from tfship import artifacts, push, registry
from tfship.artifacts import Artifacts
from tfship.config import Config, RegistryConfig
from tfship.registry.local import LocalSite

from registry_fixtures import docker_client, free_port, make_image, make_tiny_image  # noqa: F401 (fixtures)

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


class Outage:
    """SIGKILLs the registry process when told, and starts it again RESTART_AFTER seconds later (in a thread)."""

    def __init__(self, project: Config, site: LocalSite):
        self.project, self.site = project, site
        self.killed: list[int] = []
        self.restarted = threading.Event()

    def begin(self) -> None:
        pid = self.site.process_pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        self.killed.append(pid)
        for _ in range(100):  # bounded: until the port refuses connections
            if self.site.process_pid() is None:
                break
            time.sleep(0.05)
        threading.Thread(target=self._restart_later, daemon=True).start()

    def push_through(self, push_images) -> tuple[push.PushReport | None, Exception | None, float]:
        """push_images(project) during the outage: (report, error, seconds), once the registry is back."""
        started = time.monotonic()
        report, error = None, None
        try:
            report = push_images(self.project)
        except Exception as exc:  # the fault table shows it; the test's asserts fail on it
            error = exc
        elapsed = time.monotonic() - started
        self.restarted.wait(30)
        return report, error, elapsed

    def _restart_later(self) -> None:
        time.sleep(RESTART_AFTER)
        registry.up(self.project, auth=False)
        self.restarted.set()


def test_registry_killed_mid_push_is_retried_and_the_digest_is_right(project, make_image, big_image, docker_client,
                                                                     monkeypatch, fault_row):
    site = LocalSite(project.registry.url, auth=False)
    api = registry.RegistryClient(registry.resolve(project), None)
    # Something the registry held before the fault: it must survive the kill.
    earlier = make_image("devel")
    artifacts.save(project.artifacts_path, Artifacts(images={"devel": earlier}))
    earlier_digest = push.push(project).image("devel").digest

    outage = Outage(project, site)
    engine_retries: list[str] = []
    real_read = push.read_push_stream

    def kill_on_upload(events, *args, **kwargs):
        def watched():
            for event in events:
                if "Retrying" in event.get("status", ""):
                    engine_retries.append(event["status"])
                if not outage.killed and event.get("status") == "Pushing":  # bytes of the layer are on their way
                    outage.begin()
                yield event
        return real_read(watched(), *args, **kwargs)

    monkeypatch.setattr(push, "read_push_stream", kill_on_upload)
    artifacts.save(project.artifacts_path, Artifacts(images={"devel": earlier, "serving": big_image}))
    report, error, elapsed = outage.push_through(push.push_images)
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
    assert outage.killed, "the push never reached a layer upload: the fault did not happen"
    assert error is None, error
    assert outage.restarted.is_set() and site.process_pid() not in (None, outage.killed[0])
    assert pushed.digest == served == recorded and served.startswith("sha256:")
    assert pulled_id == big_image.image_id
    assert earlier_still == earlier_digest


def test_registry_down_when_the_push_starts_tfship_retries(project, make_image, docker_client, monkeypatch,
                                                             fault_row):
    """The engine retries a layer upload on its own, but a registry that refuses connections when the push begins
    fails the engine's push at once: only tfship's retries (back-off 1 s, 2 s, 4 s) carry it through."""
    site = LocalSite(project.registry.url, auth=False)
    api = registry.RegistryClient(registry.resolve(project), None)
    image = make_image("devel")
    artifacts.save(project.artifacts_path, Artifacts(images={"devel": image}))
    outage = Outage(project, site)
    lines: list[str] = []
    real_retries = push._push_with_retries

    def registry_dies_first(start, info, auth_config, retries, on_line):
        def start_after_kill():
            if not outage.killed:  # before the first attempt only: the registry is gone when the engine connects
                outage.begin()
            return start()

        def remember(line: str) -> None:
            lines.append(line)
            on_line(line)

        return real_retries(start_after_kill, info, auth_config, retries, remember)

    monkeypatch.setattr(push, "_push_with_retries", registry_dies_first)
    report, error, elapsed = outage.push_through(push.push_images)
    pushed = report.images[0] if report else None
    served = api.manifest_digest(f"tfship/{image.name}", image.tag)
    recorded = artifacts.load(project.artifacts_path).image("devel").digest
    failed_attempts = [line for line in lines if line.startswith("attempt ")]
    fault_row("registry down when a push starts, back after 2 s", "tfship retries with back-off; digest right",
              f"{'error: ' + str(error) if error else 'pushed'} in {elapsed:.0f}s after "
              f"{pushed.attempts if pushed else '?'} tfship attempts ({'; '.join(failed_attempts)[:160]}), "
              f"digest served==recorded: {served == recorded}",
              "none" if served and served == recorded else "LOST")
    assert outage.killed, "the fault did not happen"
    assert error is None, error
    assert pushed.attempts >= 2 and failed_attempts, lines
    assert "connection refused" in failed_attempts[0].lower()
    assert pushed.digest == served == recorded and served.startswith("sha256:")
