"""Registry and push logic without Docker: addresses, credentials, config rendering, error catalog, stream reading."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import bcrypt
import pytest
import requests
import yaml

from tfship import push, registry
from tfship.registry import address, client, local
from tfship.artifacts import Artifacts, ImageArtifact, save
from tfship.config import Config, RegistryConfig
from tfship.errors import ConfigError, RegistryError, TfshipError

from registry_fixtures import credential_helper, write_docker_config

PASSWORD_ENV = registry.PASSWORD_ENV
USERNAME_ENV = registry.USERNAME_ENV


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("TFSHIP_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    monkeypatch.delenv(USERNAME_ENV, raising=False)
    monkeypatch.delenv(PASSWORD_ENV, raising=False)


def make_config(tmp_path: Path, **registry_fields) -> Config:
    return Config(root=tmp_path, registry=RegistryConfig(**registry_fields))


def info(address="127.0.0.1:5999", scheme="http", local=True, auth=False) -> registry.RegistryInfo:
    return registry.RegistryInfo(address, scheme, local=local, auth=auth)


# ---- addresses


def test_target_address_uses_auth_url_only_for_the_local_tls_registry(tmp_path):
    config = make_config(tmp_path, url="127.0.0.1:5001", auth_url="127.0.0.1:5444")
    assert registry.target_address(config) == "127.0.0.1:5001"
    assert registry.target_address(config, auth=True) == "127.0.0.1:5444"
    external = make_config(tmp_path, url="registry.example:443", local=False, auth=True)
    assert registry.target_address(external) == "registry.example:443"


def test_split_address_rejects_a_missing_port():
    assert registry.split_address("localhost:5000") == ("localhost", 5000)
    with pytest.raises(ConfigError, match="host:port"):
        registry.split_address("localhost")


def test_local_registry_must_be_on_this_machine(tmp_path):
    with pytest.raises(ConfigError, match="not on this machine"):
        registry.resolve(make_config(tmp_path, url="10.1.2.3:5000"))


def test_external_registry_scheme_follows_insecure_and_ca_file(tmp_path):
    plain = registry.resolve(make_config(tmp_path, url="10.1.2.3:5000", local=False, insecure=True))
    assert (plain.scheme, plain.local) == ("http", False)
    tls = registry.resolve(make_config(tmp_path, url="10.1.2.3:5000", local=False, insecure=False, ca_file="ca.pem"))
    assert (tls.scheme, tls.ca_file) == ("https", str(tmp_path / "ca.pem"))


@pytest.mark.parametrize(
    ("address", "registry_config", "allowed"),
    [
        ("127.0.0.1:5000", {}, True),
        ("localhost:5000", {}, True),
        ("10.1.2.3:5000", {"InsecureRegistryCIDRs": ["127.0.0.0/8"]}, False),
        ("10.1.2.3:5000", {"InsecureRegistryCIDRs": ["10.0.0.0/8"]}, True),
        ("10.1.2.3:5000", {"IndexConfigs": {"10.1.2.3:5000": {"Secure": False}}}, True),
        ("10.1.2.3:5000", {"IndexConfigs": {"10.1.2.3:5000": {"Secure": True}}}, False),
    ],
)
def test_engine_allows_http_only_to_loopback_or_insecure_registries(address, registry_config, allowed):
    assert registry.engine_allows_http(registry_config, address) is allowed


@pytest.mark.parametrize(
    ("setting", "running", "pullable", "expected"),
    [
        ("auto", None, True, "container"),
        ("auto", None, False, "process"),
        ("auto", "process", True, "process"),  # keeps what runs: no needless restart
        ("process", "container", True, "process"),
        ("container", "process", True, "container"),
    ],
)
def test_choose_server(tmp_path, monkeypatch, setting, running, pullable, expected):
    monkeypatch.setattr(local, "upstream_image_available", lambda config: pullable)
    assert local.choose_server(make_config(tmp_path, server=setting), running) == expected


def test_container_wanted_but_not_pullable_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setattr(local, "upstream_image_available", lambda config: False)
    with pytest.raises(RegistryError, match="neither has nor can pull registry:2") as caught:
        local.choose_server(make_config(tmp_path, server="container"), None)
    assert "registry.server: process" in caught.value.hint


# ---- credentials


def test_local_insecure_registry_has_no_credentials(tmp_path, monkeypatch):
    monkeypatch.setenv(USERNAME_ENV, "alice")
    monkeypatch.setenv(PASSWORD_ENV, "s3cret")
    assert registry.credentials(make_config(tmp_path)) is None


def test_environment_credentials_come_first(tmp_path, monkeypatch):
    config = make_config(tmp_path, auth=True)
    registry.LocalSite(config.registry.auth_url, auth=True).desired_credentials()  # generates and stores some
    monkeypatch.setenv(USERNAME_ENV, "alice")
    monkeypatch.setenv(PASSWORD_ENV, "s3cret")
    assert registry.credentials(config) == ("alice", "s3cret")


def test_environment_credentials_retire_stale_generated_ones(tmp_path, monkeypatch):
    site = registry.LocalSite("127.0.0.1:5444", auth=True)
    site.desired_credentials()
    monkeypatch.setenv(USERNAME_ENV, "alice")
    monkeypatch.setenv(PASSWORD_ENV, "s3cret")
    assert site.desired_credentials() == ("alice", "s3cret")
    assert site.stored_credentials() is None


def test_half_set_environment_credentials_are_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv(USERNAME_ENV, "alice")
    with pytest.raises(ConfigError, match=PASSWORD_ENV):
        registry.credentials(make_config(tmp_path, auth=True))


def test_generated_credentials_are_stored_mode_0600_and_reused(tmp_path):
    config = make_config(tmp_path, auth=True)
    site = registry.LocalSite(config.registry.auth_url, auth=True)
    generated = site.desired_credentials()
    assert stat.S_IMODE(site.credentials_file.stat().st_mode) == 0o600
    assert site.desired_credentials() == generated
    assert registry.credentials(config) == generated
    assert len(generated[1]) >= 24


def test_external_registry_credentials_come_from_the_docker_config(tmp_path, monkeypatch):
    docker_config = tmp_path / "docker-config"
    docker_config.mkdir()
    token = base64.b64encode(b"bob:hunter2").decode()
    (docker_config / "config.json").write_text(json.dumps({"auths": {"registry.example:443": {"auth": token}}}))
    config = make_config(tmp_path, url="registry.example:443", local=False, insecure=False)
    assert registry.credentials(config) == ("bob", "hunter2")
    assert registry.credentials(make_config(tmp_path, url="other.example:443", local=False)) is None


def test_htpasswd_is_bcrypt_0600_and_rewritten_only_when_credentials_change(tmp_path):
    site = registry.LocalSite("127.0.0.1:5444", auth=True)
    assert site.ensure_htpasswd(("alice", "s3cret")) is True
    user, hashed = site.htpasswd.read_text().strip().split(":", 1)
    assert user == "alice" and bcrypt.checkpw(b"s3cret", hashed.encode())
    assert "s3cret" not in site.htpasswd.read_text()
    assert stat.S_IMODE(site.htpasswd.stat().st_mode) == 0o600
    assert site.ensure_htpasswd(("alice", "s3cret")) is False
    assert site.ensure_htpasswd(("alice", "other")) is True


# ---- config rendering


def test_insecure_config_has_no_tls_and_no_auth(tmp_path):
    site = registry.LocalSite("127.0.0.1:5001", auth=False)
    rendered = yaml.safe_load(site.render_config(None))
    assert rendered["http"]["addr"] == "127.0.0.1:5001"
    assert rendered["storage"]["filesystem"]["rootdirectory"] == str(site.data_dir)
    assert "tls" not in rendered["http"] and "auth" not in rendered


def test_auth_config_for_the_container_uses_paths_inside_the_mount(tmp_path):
    site = registry.LocalSite("127.0.0.1:5444", auth=True)
    rendered = yaml.safe_load(site.render_config("/tfship"))
    assert rendered["http"]["addr"] == ":5000"
    assert rendered["http"]["tls"] == {"certificate": "/tfship/certs/server.crt", "key": "/tfship/certs/server.key"}
    assert rendered["auth"]["htpasswd"]["path"] == "/tfship/htpasswd"
    assert rendered["storage"]["filesystem"]["rootdirectory"] == "/tfship/data"
    assert rendered["http"]["headers"]  # the base template survives the merge


# ---- the error catalog


@pytest.mark.parametrize(
    ("message", "username", "expected", "transient"),
    [
        ("Get \"https://10.1.2.3:5000/v2/\": http: server gave HTTP response to HTTPS client", None,
         "does not allow plain HTTP", False),
        ("Get \"https://127.0.0.1:5444/v2/\": x509: certificate signed by unknown authority", None,
         "not trusted", False),
        ("no basic auth credentials", None, "401: no basic auth credentials", False),
        ("unauthorized: authentication required", "alice", "refused the password of user 'alice'", False),
        ("denied: requested access to the resource is denied", "alice", "denied the push", False),
        ("received unexpected HTTP status: 503 Service Unavailable", None, "failed transiently", True),
        ("Put \"http://127.0.0.1:5999/v2/x/blobs\": EOF", None, "failed transiently", True),
        ("dial tcp 127.0.0.1:5999: connect: connection refused", None, "unreachable", True),
        ("manifest invalid: manifest invalid", None, "failed", False),
    ],
)
def test_engine_errors_map_to_one_line_catalog_entries(message, username, expected, transient):
    error = registry.explain(message, info(), username)
    assert expected in error.message
    assert isinstance(error, registry.TransientRegistryError) is transient
    assert error.hint
    assert "\n" not in error.one_line()


def test_catalog_hints_say_what_to_run():
    assert "invoke registry.up --auth" in registry.unreachable(info(auth=True, scheme="https"), "refused").hint
    assert "insecure-registries" in registry.http_not_allowed(info("10.1.2.3:5000", local=False)).hint
    assert "registry.ca_file" in registry.untrusted_tls(info("r.example:443", "https", local=False), "x").hint
    assert PASSWORD_ENV in registry.missing_credentials(info()).hint


# ---- the push stream


def stream(*events):
    return iter(events)


def test_push_stream_gives_digest_layers_and_bytes():
    events = stream(
        {"status": "The push refers to repository [127.0.0.1:5999/tfship/x]"},
        {"status": "Preparing", "id": "aaa"},
        {"status": "Preparing", "id": "bbb"},
        {"status": "Layer already exists", "id": "bbb"},
        {"status": "Pushing", "id": "aaa", "progressDetail": {"current": 512, "total": 2048}},
        {"status": "Pushing", "id": "aaa", "progressDetail": {"current": 2048, "total": 2048}},
        {"status": "Pushed", "id": "aaa", "progressDetail": {}},
        {"status": "v1: digest: sha256:abc size: 528"},
        {"progressDetail": {}, "aux": {"Tag": "v1", "Digest": "sha256:abc", "Size": 528}},
    )
    result = push.read_push_stream(events, info(), None)
    assert (result.digest, result.layers_pushed, result.layers_existing) == ("sha256:abc", 1, 1)
    assert result.bytes_pushed == 2048


def test_push_stream_error_detail_raises_even_though_docker_py_does_not():
    events = stream(
        {"status": "Preparing", "id": "aaa"},
        {"errorDetail": {"message": "no basic auth credentials"}, "error": "no basic auth credentials"},
    )
    with pytest.raises(RegistryError, match="no basic auth credentials"):
        push.read_push_stream(events, info(), None)


def test_push_stream_without_digest_is_transient():
    with pytest.raises(registry.TransientRegistryError):
        push.read_push_stream(stream({"status": "Preparing", "id": "aaa"}), info(), None)


def test_transient_failures_are_retried_with_backoff(monkeypatch):
    sleeps = []
    monkeypatch.setattr(push.time, "sleep", sleeps.append)
    attempts = []

    def start():
        attempts.append(1)
        if len(attempts) < 3:
            return stream({"errorDetail": {"message": "received unexpected HTTP status: 502 Bad Gateway"}})
        return stream({"aux": {"Digest": "sha256:abc"}})

    result, used = push._push_with_retries(start, info(), None, retries=3, on_line=lambda line: None)
    assert (result.digest, used, sleeps) == ("sha256:abc", 3, [1.0, 2.0])


def test_retries_are_bounded(monkeypatch):
    monkeypatch.setattr(push.time, "sleep", lambda seconds: None)
    calls = []

    def start():
        calls.append(1)
        return stream({"errorDetail": {"message": "received unexpected HTTP status: 503 Service Unavailable"}})

    with pytest.raises(RegistryError, match="gave up after 3 attempts"):
        push._push_with_retries(start, info(), None, retries=2, on_line=lambda line: None)
    assert len(calls) == 3


def test_permanent_failures_are_not_retried(monkeypatch):
    monkeypatch.setattr(push.time, "sleep", lambda seconds: pytest.fail("slept before a permanent error"))
    calls = []

    def start():
        calls.append(1)
        return stream({"errorDetail": {"message": "unauthorized: authentication required"}})

    with pytest.raises(RegistryError, match="refused the password"):
        push._push_with_retries(start, info(), {"username": "alice", "password": "x"}, retries=3,
                                on_line=lambda line: None)
    assert len(calls) == 1


# ---- push before build


def test_push_before_build_says_run_build(tmp_path):
    with pytest.raises(TfshipError, match="records no built image") as caught:
        push.push(make_config(tmp_path))
    assert "invoke build" in caught.value.hint


def test_pinned_ref_needs_a_push(tmp_path):
    artifacts = Artifacts(images={"serving": ImageArtifact(role="serving", name="x", tag="t", image_id="sha256:1")})
    save(tmp_path / "build" / "artifacts.json", artifacts)
    with pytest.raises(TfshipError, match="has not been pushed"):
        artifacts.image("serving").pinned_ref


# ---- references as users write them


@pytest.mark.parametrize(
    ("url", "registry_name", "namespace", "api", "login_key"),
    [
        ("127.0.0.1:5000", "127.0.0.1:5000", "", "127.0.0.1:5000", "127.0.0.1:5000"),
        ("docker.io/alice", "docker.io", "alice", "registry-1.docker.io", "https://index.docker.io/v1/"),
        ("index.docker.io/alice", "docker.io", "alice", "registry-1.docker.io", "https://index.docker.io/v1/"),
        ("ghcr.io/org/team", "ghcr.io", "org/team", "ghcr.io", "ghcr.io"),
        ("registry.example:8443/ns/", "registry.example:8443", "ns", "registry.example:8443", "registry.example:8443"),
        ("localhost:5443", "localhost:5443", "", "localhost:5443", "localhost:5443"),
    ],
)
def test_registry_url_forms(url, registry_name, namespace, api, login_key):
    ref = address.parse_registry_url(url)
    assert (ref.registry, ref.namespace) == (registry_name, namespace)
    assert address.api_host(ref.registry) == api
    assert address.credentials_key(ref.registry) == login_key


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("alice/models", "does not name a registry host"),
        ("https://ghcr.io/org", "has a scheme"),
        ("ghcr.io/Org", "namespace part 'Org'"),
        ("ghcr.io//org", "namespace part ''"),
        ("ghcr.io:99999", "does not start with a registry host"),
    ],
)
def test_bad_registry_urls_are_one_line_config_errors(url, expected):
    with pytest.raises(ConfigError, match=expected) as caught:
        address.parse_registry_url(url)
    assert caught.value.hint and "\n" not in caught.value.one_line()


def test_external_registry_with_a_namespace_names_images_under_it(tmp_path):
    config = make_config(tmp_path, url="ghcr.io/org/team", local=False, insecure=False)
    info = registry.resolve(config)
    assert (info.address, info.namespace, info.base_url) == ("ghcr.io", "org/team", "https://ghcr.io")
    assert registry.image_repository(config, info, "tfship-serving") == "org/team/tfship/tfship-serving"


def test_docker_hub_images_are_user_slash_name(tmp_path):
    config = make_config(tmp_path, url="docker.io/alice", local=False, insecure=False)
    info = registry.resolve(config)
    assert info.base_url == "https://registry-1.docker.io"
    with pytest.raises(ConfigError, match="Docker Hub repositories are NAMESPACE/NAME") as caught:
        registry.image_repository(config, info, "tfship-serving")
    assert "registry.repository: ''" in caught.value.hint
    config.registry.repository = ""
    assert registry.image_repository(config, info, "tfship-serving") == "alice/tfship-serving"
    assert registry.familiar_name("docker.io/alice/tfship-serving") == "alice/tfship-serving"
    assert registry.familiar_name("docker.io/library/busybox") == "busybox"
    assert registry.familiar_name("ghcr.io/org/x") == "ghcr.io/org/x"


def test_docker_hub_credentials_are_looked_up_under_the_index_url(tmp_path, monkeypatch):
    """As the Docker CLI files them: a real credential helper is asked for https://index.docker.io/v1/."""
    log = credential_helper(tmp_path, monkeypatch, "https://index.docker.io/v1/", "alice", "hub-token-1")
    write_docker_config({"credsStore": "tfshiptest"})
    config = make_config(tmp_path, url="docker.io/alice", local=False, insecure=False)
    assert registry.credentials(config) == ("alice", "hub-token-1")
    assert log.read_text().split() == ["https://index.docker.io/v1/"]


def test_docker_hub_credentials_from_auths(tmp_path):
    token = base64.b64encode(b"alice:hub-token-2").decode()
    write_docker_config({"auths": {"https://index.docker.io/v1/": {"auth": token}}})
    assert registry.credentials(make_config(tmp_path, url="index.docker.io/alice", local=False)) == (
        "alice", "hub-token-2")


def test_cred_helpers_win_over_the_default_store_for_their_registry(tmp_path, monkeypatch):
    credential_helper(tmp_path, monkeypatch, "ghcr.io", "bot", "ghcr-token")
    write_docker_config({"credsStore": "not-installed", "credHelpers": {"ghcr.io": "tfshiptest"}})
    assert registry.credentials(make_config(tmp_path, url="ghcr.io/org", local=False)) == ("bot", "ghcr-token")


# ---- challenges and tokens


def response_with(header: str) -> requests.Response:
    response = requests.Response()
    response.status_code = 401
    response.headers["WWW-Authenticate"] = header
    return response


def test_bearer_challenges_are_parsed_with_quoted_commas():
    challenge = client.Challenge.of(response_with(
        'Bearer realm="https://auth.example/token",service="registry.example",'
        'scope="repository:org/x:pull,push",error="insufficient_scope"'))
    assert challenge.scheme == "bearer" and challenge.token_server == "auth.example"
    assert challenge.params == {"realm": "https://auth.example/token", "service": "registry.example",
                                "scope": "repository:org/x:pull,push", "error": "insufficient_scope"}
    assert client.Challenge.of(response_with('Basic realm="tfship-registry"')).scheme == "basic"


def test_tokens_are_kept_per_scope_until_their_lifetime_runs_out():
    now = [100.0]
    tokens = client.BearerTokens(info(), None, requests.Session(), 1.0, clock=lambda: now[0])
    tokens.tokens["repository:a:pull"] = ("t-a", 160.0)
    assert tokens.cached("repository:a:pull") == "t-a" and tokens.cached("repository:b:pull") is None
    now[0] = 160.0
    assert tokens.cached("repository:a:pull") is None


def test_a_password_is_never_sent_to_a_plain_http_realm_elsewhere():
    tokens = client.BearerTokens(info("registry.example:443", "https", local=False), ("alice", "pw"),
                                 requests.Session(), 1.0)
    challenge = client.Challenge("bearer", {"realm": "http://auth.example/token", "service": "s"})
    with pytest.raises(RegistryError, match="in clear"):
        tokens.fetch(challenge, "repository:x:pull,push")


def test_an_identity_token_from_docker_login_is_a_clear_error(tmp_path):
    write_docker_config({"auths": {"ghcr.io": {"identitytoken": "refresh-token-1"}}})
    with pytest.raises(RegistryError, match="identity token for ghcr.io") as caught:
        registry.credentials(make_config(tmp_path, url="ghcr.io/org", local=False))
    assert registry.USERNAME_ENV in caught.value.hint and "refresh-token-1" not in caught.value.one_line()


def test_credentials_never_go_over_plain_http_to_another_machine(tmp_path, monkeypatch):
    monkeypatch.setenv("TFSHIP_REGISTRY_USERNAME", "ml")
    monkeypatch.setenv("TFSHIP_REGISTRY_PASSWORD", "s3cret")
    remote = Config(root=tmp_path, registry=RegistryConfig(url="registry.example.internal:5000", local=False,
                                                           insecure=True))
    with pytest.raises(RegistryError, match="would travel over plain HTTP") as refused:
        registry.credentials(remote)
    assert "allow_plain_http_credentials" in refused.value.hint
    remote.registry.allow_plain_http_credentials = True
    assert registry.credentials(remote) == ("ml", "s3cret")
    loopback = Config(root=tmp_path, registry=RegistryConfig(url="127.0.0.1:5000", local=False, insecure=True))
    assert registry.credentials(loopback) == ("ml", "s3cret")
    tls = Config(root=tmp_path, registry=RegistryConfig(url="registry.example.internal:5000", local=False,
                                                        insecure=False))
    assert registry.credentials(tls) == ("ml", "s3cret")
