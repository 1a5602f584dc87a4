"""The web image on the real Docker engine: built by tfship.web.stages (the CA stays in the builder stage), it runs
as the numeric non-root user with a read-only root filesystem and no capabilities, and classifies a known digit
against the real model server on 127.0.0.1 (the container shares the host's network, so nothing leaves loopback)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tfship import config as tfconfig
from tfship import docker_client, engine
from tfship.web import stages

pytestmark = pytest.mark.integration

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS / "server"))
sys.path.insert(0, str(TESTS / "web"))
from server_harness import ServerProcess, free_port  # noqa: E402
from web_harness import KNOWN_DIGITS, digit_image, encode, smoke_sample  # noqa: E402

BUILD_ONLY_MARKERS = ("tfship-build", "build-only", "pip.conf", "PIP_CONFIG_FILE", "ca.pem")


@pytest.fixture(scope="module")
def web_image(tmp_path_factory) -> tuple[tfconfig.Config, str]:
    engine.ensure_engine()
    root = tmp_path_factory.mktemp("project")
    (root / "tfship.yaml").write_text("base:\n  source: debian\nbuild_dir: build\nmodels_dir: models\n")
    config = tfconfig.load(root / "tfship.yaml", environ={})
    artifact = stages.ensure_web_image(config)
    # The image stays as the engine's cache (its content tag may be the pipeline's own web image).
    return config, artifact.local_ref


@pytest.fixture(scope="module")
def digits_server(tmp_path_factory):
    from tfship.exporters import digits

    version = tmp_path_factory.mktemp("models") / "digits" / "1"
    version.parent.mkdir(parents=True)
    digits.export(version, log=lambda line: None)
    server = ServerProcess(["--model_name=digits", f"--model_base_path={version.parent}"],
                           tmp_path_factory.mktemp("server") / "server.log")
    try:
        yield server.wait_ready(), version
    finally:
        server.stop()


def test_the_web_image_is_restricted_and_keeps_no_build_only_files(web_image):
    _, ref = web_image
    inspected = docker_client.api().inspect_image(ref)
    assert inspected["Config"]["User"] == "10001"
    assert inspected["Config"]["Entrypoint"][:3] == ["python", "-m", "tfship.web"]
    # Only builder stages saw the CA and pip.conf: no step of the final image mentions them.
    history = " ".join(step.get("CreatedBy", "") for step in docker_client.api().history(ref))
    assert not any(marker in history for marker in BUILD_ONLY_MARKERS), history


def test_the_web_image_carries_the_stubs_but_not_tensorflow(web_image):
    _, ref = web_image
    probe = ("import importlib.util as u; import tensorflow_serving.apis.prediction_service_pb2_grpc; "
             "print(u.find_spec('tensorflow.python.pywrap_tensorflow'), u.find_spec('numpy'))")
    found = subprocess.run(["docker", "run", "--rm", "--entrypoint", "python", ref, "-c", probe],
                           capture_output=True, text=True, timeout=120)
    assert found.returncode == 0, found.stderr
    assert found.stdout.split() == ["None", "None"], "the page image should not carry TensorFlow or numpy"


def test_the_web_container_classifies_a_known_digit_read_only_and_unprivileged(web_image, digits_server):
    _, ref = web_image
    server, version = digits_server
    if shutil.which("docker") is None:
        pytest.fail("the docker CLI is missing")
    port = free_port()
    name = f"tfship-itest-web-{port}"
    subprocess.run(["docker", "run", "-d", "--rm", "--name", name, "--network", "host", "--read-only",
                    "--tmpfs", "/tmp", "--cap-drop", "ALL", "--security-opt", "no-new-privileges", ref,
                    "--host=127.0.0.1", f"--port={port}", f"--model-server={server.grpc_address}", "--models=digits"],
                   check=True, capture_output=True, timeout=120)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if requests.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.5)
        else:
            logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True, timeout=30)
            pytest.fail(f"the web container was not ready within 120 s:\n{logs.stdout}{logs.stderr}")
        pixels, labels = smoke_sample(version)
        index = KNOWN_DIGITS["5"]
        answer = requests.post(url + "/api/classify", data={"model": "digits"},
                               files={"image": ("five.png", encode(digit_image(pixels[index])))}, timeout=30).json()
        assert answer["classes"][0]["label"] == labels[index] == "5"
        assert answer["replica_source"] == "model server"
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60)
