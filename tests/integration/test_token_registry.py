"""`push` and the registry client against a real token-auth registry: Distribution with `auth: token`, a token
server written for the test (RS256 JWTs with x5c), TLS with a generated CA, all on free ports of 127.0.0.1."""

from __future__ import annotations

import secrets

import pytest

from tfship import artifacts, push, registry
from tfship.artifacts import Artifacts, ImageArtifact
from tfship.config import Config, RegistryConfig
from tfship.errors import RegistryError

from registry_fixtures import (  # noqa: F401,F811 (fixtures)
    SERVICE, Policy, TokenRegistry, credential_helper, docker_client, make_image, write_docker_config)

pytestmark = pytest.mark.integration

USERNAME = "token-pusher"
PASSWORD = "tfship-token-" + secrets.token_hex(12)


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory, docker_client):
    with TokenRegistry(tmp_path_factory.mktemp("token-registry"), Policy(users={USERNAME: PASSWORD})) as started:
        yield started


@pytest.fixture
def policy(token_registry):
    """The token server's policy, reset to well-behaved for each test."""
    policy = token_registry.policy
    policy.always_expired, policy.expired_next, policy.lifetime = False, 0, 300
    policy.requests.clear()
    return policy


@pytest.fixture
def project(tmp_path, token_registry, policy, monkeypatch):
    monkeypatch.setenv("TFSHIP_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))  # no stored logins unless a test writes some
    monkeypatch.setenv(registry.USERNAME_ENV, USERNAME)
    monkeypatch.setenv(registry.PASSWORD_ENV, PASSWORD)
    return Config(root=tmp_path, registry=RegistryConfig(url=token_registry.address, local=False, insecure=False,
                                                         ca_file=str(token_registry.ca_cert)))


def record(config: Config, *images: ImageArtifact) -> None:
    artifacts.save(config.artifacts_path, Artifacts(images={image.role: image for image in images}))


def test_push_both_images_reads_digests_back_and_skips_what_is_there(project, make_image, docker_client, policy,
                                                                    token_registry, capfd):
    serving, devel = make_image("serving"), make_image("devel")
    record(project, serving, devel)
    report = push.push_images(project)

    assert [image.skipped for image in report.images] == [False, False]
    on_disk = artifacts.load(project.artifacts_path)
    assert on_disk.registry == token_registry.address and on_disk.registry_auth is True
    reader = registry.RegistryClient(token_registry.info(), (USERNAME, PASSWORD))
    for built in (serving, devel):
        pushed = on_disk.image(built.role)
        assert pushed.repository == f"{token_registry.address}/tfship/{built.name}"
        assert reader.manifest_digest(f"tfship/{built.name}", built.tag) == pushed.digest
    asked = {scope for request in policy.requests for scope in request["scopes"]}
    assert f"repository:tfship/{serving.name}:pull,push" in asked
    assert {request["service"] for request in policy.requests} == {SERVICE}

    again = push.push_images(project)
    assert [image.skipped for image in again.images] == [True, True]

    pinned = on_disk.image("serving").pinned_ref
    docker_client.images.remove(serving.image_id, force=True)
    docker_client.api.pull(pinned.split("@")[0], tag=pinned.split("@")[1],
                           auth_config={"username": USERNAME, "password": PASSWORD})
    assert docker_client.images.get(pinned).id == serving.image_id
    output = capfd.readouterr()
    assert PASSWORD not in output.out + output.err
    assert PASSWORD not in token_registry.log_file.read_text()


def test_a_namespace_in_registry_url_and_anonymous_pull_tokens(project, make_image, token_registry):
    project.registry.url = f"{token_registry.address}/public"
    project.registry.repository = ""
    image = make_image()
    record(project, image)
    pushed = push.push(project).image("serving")
    assert pushed.repository == f"{token_registry.address}/public/{image.name}"

    anonymous = registry.RegistryClient(token_registry.info(), None)
    assert anonymous.manifest_digest(f"public/{image.name}", image.tag) == pushed.digest
    with pytest.raises(RegistryError, match=r"refused anonymous access the scope repository:tfship/x:pull"):
        anonymous.manifest_digest("tfship/x", "t1")


def test_tokens_are_reused_until_they_expire_and_renewed_on_401(token_registry, policy):
    client = registry.RegistryClient(token_registry.info(), (USERNAME, PASSWORD))
    scope = "repository:tfship/renewal:pull,push"
    assert client.manifest_digest("tfship/renewal", "t1") is None
    first = policy.issued
    assert client.manifest_digest("tfship/renewal", "t1") is None
    assert policy.issued == first  # cached

    # A token the registry no longer takes (expired on its clock before ours): one 401, a new token, success.
    stale = token_registry.tokens.mint(USERNAME, [{"type": "repository", "name": "tfship/renewal",
                                                   "actions": ["pull", "push"]}], expired=True)
    client.bearer.tokens[scope] = (stale, client.bearer.clock() + 300)
    assert client.manifest_digest("tfship/renewal", "t1") is None
    assert policy.issued == first + 1
    assert client.bearer.cached(scope) not in (None, stale)

    # A token whose lifetime runs out on our clock is renewed before use.
    client.bearer.tokens[scope] = (client.bearer.tokens[scope][0], client.bearer.clock() - 1)
    assert client.manifest_digest("tfship/renewal", "t1") is None
    assert policy.issued == first + 2


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("wrong password", f"its token server 127.0.0.1:\\d+ refused the password of user '{USERNAME}'"),
        ("expired token", r"rejected the token from 127.0.0.1:\d+ \(invalid_token: expired"),
        ("refused scope", f"refused user '{USERNAME}' the scope repository:private/"),
        ("untrusted certificate", r"TLS to registry 127.0.0.1:\d+ is not trusted \(certificate verify failed\)"),
    ],
)
def test_failures_are_one_line_and_record_nothing(project, make_image, policy, monkeypatch, case, expected):
    image = make_image()
    record(project, image)
    before = project.artifacts_path.read_bytes()
    if case == "wrong password":
        monkeypatch.setenv(registry.PASSWORD_ENV, PASSWORD + "-wrong")
    elif case == "expired token":
        policy.always_expired = True
    elif case == "refused scope":
        project.registry.repository = "private"
    else:
        project.registry.ca_file = ""
    with pytest.raises(RegistryError, match=expected) as caught:
        push.push(project)
    line = caught.value.one_line()
    assert "\n" not in line and caught.value.hint and PASSWORD not in line
    assert project.artifacts_path.read_bytes() == before


@pytest.mark.parametrize("store", ["credHelpers", "credsStore"])
def test_credentials_from_a_credential_helper(project, make_image, token_registry, monkeypatch, tmp_path, store):
    """The user's `docker login` went to a credential helper: tfship asks the same helper (stdin, never argv)."""
    log = credential_helper(tmp_path, monkeypatch, token_registry.address, USERNAME, PASSWORD)
    monkeypatch.delenv(registry.USERNAME_ENV)
    monkeypatch.delenv(registry.PASSWORD_ENV)
    entry = {token_registry.address: "tfshiptest"} if store == "credHelpers" else "tfshiptest"
    write_docker_config({store: entry})

    assert registry.credentials(project) == (USERNAME, PASSWORD)
    record(project, make_image())
    assert push.push(project).registry_auth is True
    assert token_registry.address in log.read_text().split()
