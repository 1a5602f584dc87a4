"""Base images built locally from the Debian mirror, against the real Docker engine (LAB.md §2)."""

from __future__ import annotations

import pytest

from tfship import bases, docker_client, engine
from tfship.config import Config, cache_dir

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def debian_config() -> Config:
    engine.ensure_engine()
    config = Config()
    config.base.source = "debian"
    return config


@pytest.fixture(scope="module")
def python_base(debian_config: Config) -> bases.PythonBase:
    return bases.python_base(debian_config)  # builds it the first time, reuses it after


def run_in(image: str, *argv: str) -> str:
    client = docker_client.api()
    container = client.create_container(image, command=list(argv), user="10001")
    try:
        client.start(container["Id"])
        status = client.wait(container["Id"], timeout=120)
        output = client.logs(container["Id"]).decode()
        assert status["StatusCode"] == 0, output
        return output
    finally:
        client.remove_container(container["Id"], force=True)


def test_debian_python_base_has_python_3_11(python_base, debian_config):
    assert python_base.source == "debian"
    assert python_base.ref == bases.debian_python_ref(debian_config)
    assert run_in(python_base.ref, "python3", "-c", "import sys, venv; print(sys.version_info[:2])").strip() == "(3, 11)"


def test_debian_base_is_minbase_from_the_configured_suite(python_base, debian_config):
    release = run_in(bases.debian_base_ref(debian_config), "cat", "/etc/os-release")
    assert 'VERSION_CODENAME=bookworm' in release
    # the debootstrap tree is cached, so a removed base is re-imported without a download
    tarball = cache_dir() / "bases" / f"{bases.debian_base_ref(debian_config).replace(':', '-')}.tar"
    assert tarball.is_file() and tarball.stat().st_size > 50_000_000


def test_existing_bases_are_reused_without_work(python_base, debian_config, capsys):
    before = docker_client.image_id(python_base.ref)
    again = bases.python_base(debian_config)
    assert again == python_base
    assert docker_client.image_id(again.ref) == before
    assert "Building" not in capsys.readouterr().err


def test_auto_says_which_source_it_picked(python_base, debian_config, capsys, monkeypatch):
    monkeypatch.setattr(bases, "_said", set())  # said once per process: this test must see it said
    debian_config.base.source = "auto"
    try:
        picked = bases.pick_source(debian_config)
    finally:
        debian_config.base.source = "debian"
    said = capsys.readouterr().err
    if picked == "upstream":
        assert f"base.source auto: using upstream {debian_config.base.python_image}" in said
    else:
        assert picked == "debian" and "cannot be pulled here; using a Debian bookworm base" in said
