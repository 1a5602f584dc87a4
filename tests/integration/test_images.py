"""The devel and serving images against the real engine: content tags, no CA left behind, model-only rebuilds,
live acceptance. Bases come from the Debian mirror (base.source: debian), so this runs without Docker Hub."""

from __future__ import annotations

import hashlib
import re
import shutil
import tarfile
import time
from pathlib import Path
from typing import Iterator

import certifi
import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from tfship import acceptance, artifacts, config as tfconfig, docker_client, engine, images
from tfship.errors import DockerError

pytestmark = pytest.mark.integration

TESTDATA = Path(__file__).resolve().parents[3] / "shared" / "testdata" / "tf_serving"  # ../shared beside the repository
# What builder stages get and the final images must not keep.
BUILD_ONLY_MARKERS = ("tfship-build", "build-only", "pip.conf", "PIP_CONFIG_FILE", "ca.pem")


def write_project(root: Path, models: str) -> tfconfig.Config:
    root.mkdir(parents=True, exist_ok=True)
    (root / "tfship.yaml").write_text(
        "base:\n  source: debian\nserving:\n  runtime: python\nbuild_dir: build\nmodels_dir: models\n"
        # names of their own, so other work on this engine never sees or removes these tags
        "images:\n  devel: tfship-itest-devel\n  serving: tfship-itest-serving\n" + models
    )
    return tfconfig.load(root / "tfship.yaml", environ={})


TWO_MODELS = """models:
  - name: half_plus_two
    version_policy: all
  - name: hp2cpu
"""


def serving_tags(config: tfconfig.Config) -> set[str]:
    return {ref for image in docker_client.api().images(name=config.images.serving) for ref in image["RepoTags"] or []}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Iterator[tfconfig.Config]:
    engine.ensure_engine()
    root = tmp_path_factory.mktemp("project")
    shutil.copytree(TESTDATA / "saved_model_half_plus_two_2_versions", root / "models" / "half_plus_two")
    shutil.copytree(TESTDATA / "saved_model_half_plus_two_cpu", root / "models" / "hp2cpu")
    config = write_project(root, TWO_MODELS)
    yield config
    # The test images go; the shared TensorFlow and runtime images stay as the engine's cache for the next run.
    for ref in serving_tags(config) | {ref for image in docker_client.api().images(name=config.images.devel)
                                       for ref in image["RepoTags"] or []}:
        docker_client.remove_image(ref)


@pytest.fixture(scope="module")
def devel(project) -> artifacts.ImageArtifact:
    return images.ensure_devel_image(project)


@pytest.fixture(scope="module")
def serving(project) -> artifacts.ImageArtifact:
    return images.ensure_serving_image(project)


def run_in(ref: str, *argv: str) -> str:
    client = docker_client.api()
    container = client.create_container(ref, command=list(argv))
    try:
        client.start(container["Id"])
        status = client.wait(container["Id"], timeout=300)
        output = client.logs(container["Id"]).decode()
        assert status["StatusCode"] == 0, output
        return output
    finally:
        client.remove_container(container["Id"], force=True)


# --------------------------------------------------------------------------------------------------------------
# Devel image


def test_devel_image_runs_the_exporters_stack_as_a_numeric_user(devel, project):
    assert devel.role == "devel" and devel.user == 10001
    assert docker_client.inspect_image(devel.local_ref)["Config"]["User"] == "10001"
    output = run_in(devel.local_ref, "python", "-c",
                    "import os, tensorflow, sklearn, tensorflow_serving, tfship.exporters;"
                    "print(os.getuid(), tensorflow.__version__)")
    assert output.split()[-2:] == ["10001", project.images.tensorflow_version]


def test_devel_is_recorded_and_a_second_build_is_up_to_date(devel, project, capsys):
    capsys.readouterr()
    again = images.ensure_devel_image(project)
    assert (again.tag, again.image_id) == (devel.tag, devel.image_id)
    said = capsys.readouterr().err
    assert f"devel image {devel.local_ref}: up to date" in said and "Building" not in said
    recorded = artifacts.load(project.artifacts_path).image("devel")
    assert recorded.local_ref == devel.local_ref and recorded.image_id == devel.image_id


# --------------------------------------------------------------------------------------------------------------
# Nothing build-only stays behind


PEM = re.compile(r"-----BEGIN CERTIFICATE-----\n(.*?)-----END CERTIFICATE-----", re.S)
# Where Debian keeps its public CA store: allowed to hold public CAs, never a private one.
SYSTEM_STORE = ("etc/ssl/certs/", "usr/share/ca-certificates/")


def private_certificates(bundle: Path) -> list[str]:
    """One base64 line of each certificate in the CA bundle that is not a public one (neither certifi's nor in
    the host's Debian store): e.g. this lab's TLS-intercepting proxy CA, added under /usr/local/share."""
    public = set(PEM.findall(Path(certifi.where()).read_text()))
    for crt in Path("/usr/share/ca-certificates").rglob("*.crt"):
        public.update(PEM.findall(crt.read_text(errors="replace")))
    return [body.splitlines()[1] for body in PEM.findall(bundle.read_text()) if body not in public]


class _StreamReader:
    """A file object over docker-py's chunked export stream, for tarfile's streaming mode."""

    def __init__(self, chunks: Iterator[bytes]):
        self.chunks, self.buffer = chunks, b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self.buffer) < size:
            try:
                self.buffer += next(self.chunks)
            except StopIteration:
                break
        data, self.buffer = (self.buffer, b"") if size < 0 else (self.buffer[:size], self.buffer[size:])
        return data


def scan_filesystem(ref: str, needles: list[bytes], bundle_sha256: str) -> tuple[list[str], list[str]]:
    """(files holding a needle or a byte-for-byte copy of the bundle, pip config files) in `ref`'s filesystem."""
    client = docker_client.api()
    container = client.create_container(ref, command=["true"])
    found, pip_configs = [], []
    try:
        tar = tarfile.open(fileobj=_StreamReader(iter(client.export(container["Id"]))), mode="r|")
        for member in tar:
            name = member.name
            if name.endswith(("pip.conf", "pip.ini")) or "tfship-build" in name:
                pip_configs.append(name)
            if not member.isfile():
                continue
            data = tar.extractfile(member).read()
            copy_of_bundle = hashlib.sha256(data).hexdigest() == bundle_sha256 and not name.startswith(SYSTEM_STORE)
            if copy_of_bundle or any(needle in data for needle in needles):
                found.append(name)
    finally:
        client.remove_container(container["Id"], force=True)
    return found, pip_configs


def test_the_scanner_finds_a_planted_certificate(project, tmp_path):
    # Positive control for the test below: the same scan on an image that does hold the bundle.
    bundle = Path(project.base.ca_bundle)
    (tmp_path / "Dockerfile").write_text("ARG BASE\nFROM ${BASE}\nCOPY bundle.pem /etc/leaked.pem\n")
    ref = "tfship-itest-leak:probe"
    base = {"BASE": images.bases.debian_base_ref(project)}
    docker_client.build_image(ref, tmp_path / "Dockerfile", {"bundle.pem": bundle}, base, lambda line: None)
    try:
        needles = [line.encode() for line in private_certificates(bundle)]
        found, _ = scan_filesystem(ref, needles, hashlib.sha256(bundle.read_bytes()).hexdigest())
        assert "etc/leaked.pem" in found
    finally:
        docker_client.remove_image(ref)


@pytest.mark.parametrize("role", ["devel", "serving"])
def test_no_ca_bundle_pip_config_or_build_settings_remain(role, devel, serving, project):
    ref = (devel if role == "devel" else serving).local_ref
    history = docker_client.api().history(ref)
    for entry in history:
        for marker in BUILD_ONLY_MARKERS:
            assert marker not in entry.get("CreatedBy", ""), (marker, entry["CreatedBy"])
    env = docker_client.inspect_image(ref)["Config"]["Env"] or []
    assert not [v for v in env if v.startswith(("PIP_", "REQUESTS_CA_BUNDLE", "SSL_CERT"))]
    bundle = Path(project.base.ca_bundle)
    # Debian's python3 pulls in ca-certificates (public CAs); no private CA and no copy of the bundle may be there.
    needles = [line.encode() for line in private_certificates(bundle)]
    found, pip_configs = scan_filesystem(ref, needles, hashlib.sha256(bundle.read_bytes()).hexdigest())
    assert found == [] and pip_configs == []


# --------------------------------------------------------------------------------------------------------------
# Serving image


def test_serving_image_serves_every_model_as_a_numeric_user_with_labels(serving, project):
    assert serving.runtime == "python" and serving.user == 10001
    info = docker_client.inspect_image(serving.local_ref)
    assert info["Config"]["User"] == "10001"
    labels = info["Config"]["Labels"]
    assert labels[images.MODELS_LABEL] == "half_plus_two:123+124,hp2cpu:123"
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", labels[images.REVISION_LABEL])
    assert "MODEL_CONFIG_FILE=/models/models.config" in info["Config"]["Env"]
    recorded = artifacts.load(project.artifacts_path)
    assert recorded.image("serving").image_id == serving.image_id
    assert recorded.models == {"half_plus_two": [123, 124], "hp2cpu": [123]}


def test_serving_answers_half_plus_two_like_tf_serving(serving):
    container = acceptance.start_container(serving.local_ref)
    try:
        session = requests.Session()
        session.trust_env = False
        rest = f"http://127.0.0.1:{container.rest_port}"
        acceptance.wait_available(session, rest, "half_plus_two", [123, 124], container, deadline=time.monotonic() + 240)
        answer = session.post(f"{rest}/v1/models/half_plus_two/versions/124:predict",
                              json={"instances": [[1.0], [4.0]]}, timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json()["predictions"] == [[2.5], [4.0]]
        # gRPC, taken by the C++ front the image builds for itself (its shared libraries installed beside it)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "half_plus_two"
        request.model_spec.version.value = 124
        request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[1.0], [4.0]], np.float32)))
        with grpc.insecure_channel(f"127.0.0.1:{container.grpc_port}") as channel:
            reply = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
        assert tf.make_ndarray(reply.outputs["y"]).tolist() == [[2.5], [4.0]]
        assert re.search(r"Running gRPC ModelServer at \S+ \(native\)", container.logs_tail(200))
    finally:
        container.remove()


def test_devel_builds_on_the_tensorflow_layer_and_python_serving_is_slimmer(devel, serving, project):
    """devel reuses the TensorFlow venv layer as it is; the python runtime is its slim copy (FROM scratch, without
    what serving never imports), so every node pulls less than the TensorFlow image itself."""
    devel_layers = docker_client.inspect_image(devel.local_ref)["RootFS"]["Layers"]
    serving_image = docker_client.inspect_image(serving.local_ref)
    tf_ref, _ = images.ensure_tf_image(project)
    tf_image = docker_client.inspect_image(tf_ref)
    tf_layers = tf_image["RootFS"]["Layers"]
    assert devel_layers[: len(tf_layers)] == tf_layers
    assert tf_layers[-1] not in serving_image["RootFS"]["Layers"], "the full TensorFlow venv layer is not shipped"
    assert serving_image["Size"] < tf_image["Size"]


def test_unchanged_serving_inputs_mean_no_build(serving, project, capsys):
    capsys.readouterr()
    again = images.ensure_serving_image(project)
    assert again.image_id == serving.image_id
    said = capsys.readouterr().err
    assert f"serving image {serving.local_ref}: up to date" in said and "Accepting" not in said


def test_a_model_only_change_rebuilds_only_the_last_layer(serving, project):
    asset = project.models_path / "hp2cpu" / "00000123" / "assets" / "foo.txt"
    original = asset.read_text()
    asset.write_text(original + "changed by test_images\n")
    changed = None
    try:
        changed = images.ensure_serving_image(project)
        assert changed.tag != serving.tag
        before = docker_client.inspect_image(serving.local_ref)["RootFS"]["Layers"]
        after = docker_client.inspect_image(changed.local_ref)["RootFS"]["Layers"]
        assert len(after) == len(before)
        assert after[:-1] == before[:-1] and after[-1] != before[-1]
    finally:
        asset.write_text(original)
        if changed is not None and changed.local_ref != serving.local_ref:
            docker_client.remove_image(changed.local_ref)


def test_a_serving_image_that_fails_acceptance_is_removed(serving, project, monkeypatch):
    # Fault injection, not a mock: the real image and server run; the acceptance asks a model that is not there.
    real_predict = acceptance.predict_once
    monkeypatch.setattr(acceptance, "predict_once", lambda session, rest, name: real_predict(session, rest, "absent"))
    (project.models_path / "hp2cpu" / "00000123" / "assets" / "extra.txt").write_text("forces a new tag\n")
    before = serving_tags(project)
    try:
        with pytest.raises(DockerError, match="absent"):
            images.ensure_serving_image(project)
        assert serving_tags(project) == before, "a serving image survived a failed acceptance"
    finally:
        (project.models_path / "hp2cpu" / "00000123" / "assets" / "extra.txt").unlink()


def test_tfserving_runtime_path_with_a_local_stand_in_for_the_official_image(project, serving, tmp_path):
    # tensorflow/serving cannot be pulled here. A stand-in with the official image's layout (a
    # tensorflow_model_server on PATH taking its flags) exercises the tfserving path: FROM the upstream image,
    # our entrypoint calling tensorflow_model_server, acceptance. Its version tag is one no real image has.
    project.serving.tfserving_version = "0.0.0-tfship-itest"
    stand_in = images.tfserving_image(project)
    tf_ref, tf_id = images.ensure_tf_image(project)
    python_runtime, _, _ = images.ensure(images.python_runtime_plan(project, tf_ref, tf_id), project, "runtime")
    (tmp_path / "Dockerfile").write_text(
        "ARG BASE\nFROM ${BASE}\nENV TFSHIP_SERVER=\"\"\n"
        "RUN printf '#!/bin/sh\\nexec python -m tfship.server \"$@\"\\n' > /usr/bin/tensorflow_model_server"
        " && chmod 755 /usr/bin/tensorflow_model_server\n"
    )
    docker_client.build_image(stand_in, tmp_path / "Dockerfile", {}, {"BASE": python_runtime}, lambda line: None)
    built = None
    try:
        built = images.ensure_serving_image(project, runtime="tfserving")
        assert built.runtime == "tfserving" and built.tag != serving.tag
        parent_layers = docker_client.inspect_image(stand_in)["RootFS"]["Layers"]
        layers = docker_client.inspect_image(built.local_ref)["RootFS"]["Layers"]
        assert layers[: len(parent_layers)] == parent_layers and len(layers) == len(parent_layers) + 2
        labels = docker_client.inspect_image(built.local_ref)["Config"]["Labels"]
        assert labels[images.MODELS_LABEL] == "half_plus_two:123+124,hp2cpu:123"
    finally:
        project.serving.tfserving_version = tfconfig.ServingConfig().tfserving_version
        if built is not None:
            docker_client.remove_image(built.local_ref)
        docker_client.remove_image(stand_in)


def test_configured_ports_are_where_the_server_listens(serving, project):
    """serving.grpc_port / serving.rest_port end to end in the image: exposed, recorded, and the server listens
    there (acceptance predicts over REST on the new port; gRPC answers model status on the other)."""
    from tfship.smoke import GrpcClient

    project.serving.grpc_port, project.serving.rest_port = 9500, 9501
    moved = None
    try:
        moved = images.ensure_serving_image(project)
        assert moved.tag != serving.tag
        assert set(docker_client.inspect_image(moved.local_ref)["Config"]["ExposedPorts"]) == {"9500/tcp", "9501/tcp"}
        recorded = artifacts.load(project.artifacts_path).serving
        assert (recorded.grpc_port, recorded.rest_port) == (9500, 9501)
        container = acceptance.start_container(moved.local_ref, 9500, 9501)
        try:
            session = requests.Session()
            session.trust_env = False
            acceptance.wait_available(session, f"http://127.0.0.1:{container.rest_port}", "hp2cpu", [123], container,
                                  deadline=time.monotonic() + 240)
            grpc_client = GrpcClient(container.grpc_port, timeout=30)
            try:
                assert grpc_client.version_state("hp2cpu", 123) == "AVAILABLE"
            finally:
                grpc_client.close()
        finally:
            container.remove()
    finally:
        project.serving.grpc_port, project.serving.rest_port = 8500, 8501
        if moved is not None and moved.local_ref != serving.local_ref:
            docker_client.remove_image(moved.local_ref)
