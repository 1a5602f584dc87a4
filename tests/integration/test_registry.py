"""The local registry for real: Debian's docker-registry (or registry:2 where pullable) on free ports, never 5000."""

from __future__ import annotations

import socket
import stat

import pytest

from tfship import engine, registry
from tfship.config import Config, RegistryConfig
from tfship.errors import RegistryError

from registry_fixtures import free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def config(tmp_path, monkeypatch):
    engine.ensure_engine()
    monkeypatch.setenv("TFSHIP_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv(registry.USERNAME_ENV, raising=False)
    monkeypatch.delenv(registry.PASSWORD_ENV, raising=False)
    # server: process, so no test asks the engine to pull registry:2 from the internet (test_push covers containers).
    cfg = Config(root=tmp_path, registry=RegistryConfig(url=f"127.0.0.1:{free_port()}",
                                                       auth_url=f"127.0.0.1:{free_port()}", server="process"))
    yield cfg
    registry.down(cfg, purge=True)


def test_insecure_registry_up_is_idempotent_and_down_stops_it(config):
    first = registry.up(config)
    assert first.running and first.scheme == "http" and first.address == config.registry.url
    pid = registry.LocalSite(first.address, auth=False).process_pid()
    second = registry.up(config)
    assert second.running and second.detail == first.detail
    assert registry.RegistryClient(second, None).check() is False  # answers, needs no credentials
    assert pid is None or registry.LocalSite(first.address, auth=False).process_pid() == pid
    insecure, secure = registry.status(config)
    assert insecure.running and not secure.running
    registry.down(config)
    assert not registry.status(config)[0].running
    with pytest.raises(RegistryError, match="unreachable") as caught:
        registry.RegistryClient(first, None, timeout=2).check()
    assert "invoke registry.up" in caught.value.hint


def test_auth_registry_wants_tls_and_the_right_password(config):
    config.registry.auth = True
    info = registry.up(config)
    assert info.scheme == "https" and info.address == config.registry.auth_url and info.running
    site = registry.LocalSite(info.address, auth=True)
    assert stat.S_IMODE(site.credentials_file.stat().st_mode) == 0o600
    for path in site.engine_ca_paths():
        assert path.read_bytes() == site.ca_cert.read_bytes()
    creds = registry.credentials(config)
    assert creds is not None and creds == site.stored_credentials()

    with pytest.raises(RegistryError, match="no basic auth credentials"):
        registry.RegistryClient(info, None).check()
    with pytest.raises(RegistryError, match="refused the password"):
        registry.RegistryClient(info, (creds[0], creds[1] + "x")).check()
    assert registry.RegistryClient(info, creds).check() is True

    untrusting = registry.RegistryInfo(info.address, "https", local=True, auth=True)  # system CAs only
    with pytest.raises(RegistryError, match="TLS to registry .* is not trusted"):
        registry.RegistryClient(untrusting, creds).check()


def test_credentials_from_the_environment_replace_the_htpasswd_user(config, monkeypatch):
    registry.up(config, auth=True)
    monkeypatch.setenv(registry.USERNAME_ENV, "ci-bot")
    monkeypatch.setenv(registry.PASSWORD_ENV, "a-password-from-the-env")
    info = registry.up(config, auth=True)  # changed credentials restart the registry
    assert registry.RegistryClient(info, ("ci-bot", "a-password-from-the-env")).check() is True
    assert "a-password-from-the-env" not in registry.LocalSite(info.address, auth=True).htpasswd.read_text()


def test_a_taken_port_is_a_clear_error_and_nothing_stays_running(config):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", registry.split_address(config.registry.url)[1]))
        squatter.listen()
        with pytest.raises(RegistryError, match="already taken") as caught:
            registry.up(config)
    assert "registry.url" in caught.value.hint
    assert not registry.status(config)[0].running


def test_purge_removes_the_engine_ca_and_the_state(config):
    info = registry.up(config, auth=True)
    site = registry.LocalSite(info.address, auth=True)
    registry.down(config, purge=True)
    assert not site.root.exists()
    assert not any(path.exists() for path in site.engine_ca_paths())


def test_the_wrong_scheme_is_named_both_ways(config):
    plain = registry.up(config)
    as_tls = registry.RegistryInfo(plain.address, "https", local=False, auth=False)
    with pytest.raises(RegistryError, match="does not speak TLS"):
        registry.RegistryClient(as_tls, None).check()
    secure = registry.up(config, auth=True)
    as_plain = registry.RegistryInfo(secure.address, "http", local=False, auth=False)
    with pytest.raises(RegistryError, match="speaks TLS, not plain HTTP"):
        registry.RegistryClient(as_plain, None).check()
