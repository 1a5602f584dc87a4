"""As an ordinary user, what needs root says so in one line before anything runs: nothing asks for a password,
nothing is installed with apt."""

from __future__ import annotations

import pytest

from tfship import bases, engine
from tfship.errors import DockerError
from tfship.host import apt, proc


@pytest.fixture
def ordinary_user(monkeypatch):
    """Not root; every command and every apt install is recorded instead of run."""
    ran: list[list[str]] = []
    monkeypatch.setattr(apt, "is_root", lambda: False)
    monkeypatch.setattr(proc, "run", lambda argv, **kwargs: ran.append([str(a) for a in argv]))
    monkeypatch.setattr(apt, "missing", lambda packages: list(packages))
    return ran


class NoProgress:
    def update(self, line: str) -> None:
        pass


def test_a_debian_base_says_it_needs_root_before_installing_debootstrap(tmp_path, monkeypatch, ordinary_user):
    monkeypatch.setattr(bases.shutil, "which", lambda name: None)  # debootstrap is not installed either
    with pytest.raises(DockerError, match="debootstrap needs root") as raised:
        bases._debootstrap_tarball("bookworm", "http://mirror.example/debian", tmp_path / "base.tar", NoProgress())
    assert "base.source: upstream" in raised.value.hint
    assert ordinary_user == []


def test_no_engine_as_an_ordinary_user_is_one_line_and_starts_nothing(tmp_path, monkeypatch, ordinary_user):
    import docker

    monkeypatch.delenv("DOCKER_HOST", raising=False)
    missing = f"unix://{tmp_path / 'docker.sock'}"
    monkeypatch.setattr(docker, "from_env", lambda **kw: docker.DockerClient(base_url=missing, version="auto"))
    monkeypatch.setattr(engine, "start_dockerd", lambda: pytest.fail("must not start dockerd"))
    with pytest.raises(DockerError, match="no Docker engine answers") as raised:
        engine.ensure_engine()
    assert "sudo systemctl start docker" in raised.value.hint
    assert ordinary_user == []
