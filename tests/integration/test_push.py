"""`push` for real: tiny images (docker import of a small tarball) pushed to real local registries on free ports."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import secrets
import shutil
import threading
import time
from pathlib import Path

import docker
import docker.errors
import pytest

from tfship import artifacts, engine, push, registry
from tfship.artifacts import Artifacts, ImageArtifact
from tfship.config import Config, RegistryConfig
from tfship.errors import RegistryError, TfshipError
from tfship.host import apt, proc

from registry_fixtures import docker_client, free_port, make_image  # noqa: F401,F811 (fixtures)

pytestmark = pytest.mark.integration

USERNAME = "pusher"
PASSWORD = "tfship-test-" + secrets.token_hex(12)
DOCKERD_LOG = engine.dockerd_log()  # before the tests point TFSHIP_STATE_DIR elsewhere


@pytest.fixture(scope="module")
def distribution_image(docker_client, tmp_path_factory):
    """A stand-in for the upstream registry:2 image, which this lab cannot pull: Debian's docker-registry and the
    libc it links, FROM scratch, with registry:2's command line (`serve CONFIG`)."""
    apt.ensure_packages(["docker-registry"])
    context = tmp_path_factory.mktemp("distribution")
    binary = Path(shutil.which("docker-registry"))
    libraries = re.findall(r"(/\S+\.so[.\d]*)", proc.run(["ldd", binary]).stdout)
    for source in [binary, *map(Path, libraries)]:
        target = context / source.relative_to("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source.resolve(), target)
    (context / "Dockerfile").write_text(
        f'FROM scratch\nCOPY . /\nENTRYPOINT ["{binary}", "serve"]\nCMD ["/etc/docker/registry/config.yml"]\n')
    tag = f"tfship-test-distribution:{secrets.token_hex(4)}"
    image, _ = docker_client.images.build(path=str(context), tag=tag, rm=True)
    yield tag
    docker_client.images.remove(image.id, force=True)


@pytest.fixture(scope="module", params=["process", "container"])
def registries(request, tmp_path_factory, docker_client):
    """An insecure and a TLS + htpasswd registry, run as a host process or as a container; the TLS one's
    credentials came from the environment at start, so none is stored and a push without them has none."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TFSHIP_STATE_DIR", str(tmp_path_factory.mktemp("state")))
        patch.setenv(registry.USERNAME_ENV, USERNAME)
        patch.setenv(registry.PASSWORD_ENV, PASSWORD)
        base = RegistryConfig(url=f"127.0.0.1:{free_port()}", auth_url=f"127.0.0.1:{free_port()}",
                              server=request.param)
        if request.param == "container":
            base.image = request.getfixturevalue("distribution_image")
        config = Config(root=tmp_path_factory.mktemp("project"), registry=base)
        try:
            for auth in (False, True):
                assert registry.up(config, auth=auth).server == request.param
            patch.delenv(registry.USERNAME_ENV)
            patch.delenv(registry.PASSWORD_ENV)
            yield base
        finally:
            registry.down(config, purge=True)


@pytest.fixture
def project(tmp_path, registries, monkeypatch):
    monkeypatch.delenv(registry.USERNAME_ENV, raising=False)
    monkeypatch.delenv(registry.PASSWORD_ENV, raising=False)
    return Config(root=tmp_path, registry=dataclasses.replace(registries))


def record(config: Config, *images: ImageArtifact) -> None:
    artifacts.save(config.artifacts_path, Artifacts(images={image.role: image for image in images}))


def api_for(config: Config, creds=None) -> registry.RegistryClient:
    return registry.RegistryClient(registry.resolve(config), creds)


def remove_everywhere(client, image_id: str) -> None:
    client.images.remove(image_id, force=True)
    with pytest.raises(docker.errors.ImageNotFound):
        client.images.get(image_id)


def test_insecure_push_records_digests_and_pulls_back_by_digest(project, make_image, docker_client):
    serving, devel = make_image("serving"), make_image("devel")
    record(project, serving, devel)
    report = push.push_images(project)

    assert [image.skipped for image in report.images] == [False, False]
    on_disk = artifacts.load(project.artifacts_path)
    assert on_disk.registry == project.registry.url and on_disk.registry_auth is False
    for role, built in (("serving", serving), ("devel", devel)):
        pushed = on_disk.image(role)
        assert pushed.repository == f"{project.registry.url}/tfship/{built.name}"
        assert pushed.digest.startswith("sha256:")
        assert api_for(project).manifest_digest(f"tfship/{built.name}", built.tag) == pushed.digest
    pinned = on_disk.image("serving").pinned_ref
    remove_everywhere(docker_client, serving.image_id)
    docker_client.api.pull(pinned.split("@")[0], tag=pinned.split("@")[1])
    assert docker_client.images.get(pinned).id == serving.image_id


def test_a_second_push_is_skipped_when_the_registry_has_the_digest(project, make_image):
    image = make_image()
    record(project, image)
    first = push.push_images(project).images[0]
    second = push.push_images(project).images[0]
    assert not first.skipped and first.stream.layers_pushed == 1
    assert second.skipped and second.digest == first.digest
    assert artifacts.load(project.artifacts_path).image("serving").digest == first.digest


def test_push_before_build_names_the_missing_image_and_pushes_nothing(project, make_image):
    built = make_image("devel")
    missing = ImageArtifact(role="serving", name="tfship-pushtest-never-built", tag="t1", image_id="sha256:00")
    record(project, built, missing)
    before = project.artifacts_path.read_bytes()
    with pytest.raises(TfshipError, match="tfship-pushtest-never-built:t1 is not in the Docker engine") as caught:
        push.push(project)
    assert "invoke build" in caught.value.hint
    assert project.artifacts_path.read_bytes() == before
    assert api_for(project).manifest_digest(f"tfship/{built.name}", built.tag) is None


def test_registry_restarted_between_pushes_keeps_its_data(project, make_image):
    first, second = make_image("serving"), make_image("devel")
    record(project, first)
    pushed = push.push(project).image("serving").digest
    registry.down(project, auth=False)
    with pytest.raises(RegistryError, match="unreachable"):
        push.push(project)
    registry.up(project, auth=False)
    assert api_for(project).manifest_digest(f"tfship/{first.name}", first.tag) == pushed
    record(project, first, second)
    report = push.push_images(project)
    assert {image.role: image.skipped for image in report.images} == {"devel": False, "serving": True}


def test_plain_http_to_a_non_loopback_registry_is_refused_before_any_traffic(tmp_path, make_image, registries):
    # 192.0.2.0/24 is TEST-NET-1: never routed, and the check must fire before anything is sent there.
    config = Config(root=tmp_path, registry=RegistryConfig(url="192.0.2.10:5000", local=False, insecure=True))
    record(config, make_image())
    with pytest.raises(RegistryError, match="does not allow plain HTTP to registry 192.0.2.10:5000") as caught:
        push.push(config)
    assert "insecure-registries" in caught.value.hint


def test_an_existing_tls_registry_needs_its_ca_file(project, make_image, monkeypatch):
    """The TLS registry used as someone else's (registry.local: false): untrusted until registry.ca_file names
    its CA. (The engine itself skips verification for 127.0.0.0/8, so this is tfship's own check.)"""
    site = registry.LocalSite(project.registry.auth_url, auth=True)
    external = Config(root=project.root, registry=RegistryConfig(url=project.registry.auth_url, local=False,
                                                                 insecure=False))
    monkeypatch.setenv(registry.USERNAME_ENV, USERNAME)
    monkeypatch.setenv(registry.PASSWORD_ENV, PASSWORD)
    record(external, make_image())
    with pytest.raises(RegistryError, match="TLS to registry .* is not trusted") as caught:
        push.push(external)
    assert "registry.ca_file" in caught.value.hint
    external.registry.ca_file = str(site.ca_cert)
    pushed = push.push(external)
    assert pushed.registry == project.registry.auth_url and pushed.registry_auth is True


class ArgvWatcher:
    """Scans every process's argv in the background for a secret, until stopped (at most `limit` seconds)."""

    def __init__(self, secret: str, limit: float = 300.0):
        self.secret = secret.encode()
        self.limit = limit
        self.hits: list[str] = []
        self.scans = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "ArgvWatcher":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        deadline = time.monotonic() + self.limit
        while not self._stop.is_set() and time.monotonic() < deadline:
            for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
                try:
                    argv = cmdline.read_bytes()
                except OSError:
                    continue
                if self.secret in argv:
                    self.hits.append(argv.replace(b"\0", b" ").decode(errors="replace"))
            self.scans += 1
            self._stop.wait(0.02)


def test_authenticated_push_needs_the_right_password_and_never_leaks_it(
    project, make_image, docker_client, monkeypatch, capfd
):
    project.registry.auth = True
    image = make_image()
    record(project, image)
    before = project.artifacts_path.read_bytes()
    docker_config = Path(os.environ.get("DOCKER_CONFIG", Path.home() / ".docker")) / "config.json"
    docker_config_before = docker_config.read_bytes() if docker_config.exists() else None

    with ArgvWatcher(PASSWORD) as watcher:
        with pytest.raises(RegistryError, match="401: no basic auth credentials"):
            push.push(project)
        assert project.artifacts_path.read_bytes() == before

        monkeypatch.setenv(registry.USERNAME_ENV, USERNAME)
        monkeypatch.setenv(registry.PASSWORD_ENV, PASSWORD + "-wrong")
        with pytest.raises(RegistryError, match=f"refused the password of user '{USERNAME}'"):
            push.push(project)
        info = registry.resolve(project)
        with pytest.raises(RegistryError, match="refused the password"):  # the engine's login, not only ours
            push._engine_login(docker_client, info, (USERNAME, PASSWORD + "-wrong"))
        assert project.artifacts_path.read_bytes() == before

        monkeypatch.setenv(registry.PASSWORD_ENV, PASSWORD)
        pushed = push.push(project)
        pinned = pushed.image("serving").pinned_ref
        assert pushed.registry == project.registry.auth_url and pushed.registry_auth is True
        remove_everywhere(docker_client, image.image_id)
        docker_client.api.pull(pinned.split("@")[0], tag=pinned.split("@")[1],
                               auth_config={"username": USERNAME, "password": PASSWORD})
        assert docker_client.images.get(pinned).id == image.image_id

    assert watcher.scans > 0 and watcher.hits == []
    output = capfd.readouterr()
    site = registry.LocalSite(project.registry.auth_url, auth=True)
    leaks = {"stdout/stderr": PASSWORD in output.out + output.err,
             "artifacts.json": PASSWORD.encode() in project.artifacts_path.read_bytes(),
             "registry log": PASSWORD in site.log_text(),
             "registry storage": any(PASSWORD.encode() in path.read_bytes()
                                     for path in site.data_dir.rglob("*") if path.is_file()),
             "image": PASSWORD.encode() in b"".join(docker_client.images.get(pinned).save())}
    if DOCKERD_LOG.exists():
        leaks["dockerd log"] = PASSWORD.encode() in DOCKERD_LOG.read_bytes()
    assert not any(leaks.values()), leaks
    after = docker_config.read_bytes() if docker_config.exists() else None
    assert after == docker_config_before, "push wrote credentials to the Docker config"
    assert json.loads(project.artifacts_path.read_text())["images"]["serving"]["digest"] == pinned.split("@")[1]
