"""Pure parts of the image stage: content tags, served versions, the model config, acceptance requests, apt sources."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tfship import acceptance, bases, contract, docker_client, images
from tfship.config import Config, ModelSpec
from tfship.errors import ConfigError, DockerError, ModelError

TESTDATA = Path(__file__).resolve().parents[3] / "shared" / "testdata" / "tf_serving"  # ../shared beside the repository


@pytest.fixture
def inputs(tmp_path: Path) -> dict:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM scratch\nCOPY src /src\n")
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    (src / "pkg" / "a.py").write_text("A = 1\n")
    (src / "b.txt").write_text("b\n")
    return {"dockerfile": dockerfile, "files": {"src": src}, "buildargs": {"X": "1"}, "parent_id": "sha256:abc"}


def tag(inputs: dict) -> str:
    return images.content_tag(inputs["dockerfile"], inputs["files"], inputs["buildargs"], inputs["parent_id"])


def test_tag_is_stable_for_unchanged_inputs(inputs):
    assert tag(inputs) == tag(inputs)
    assert len(tag(inputs)) == images.TAG_LENGTH


def test_tag_ignores_file_times_and_caches(inputs):
    before = tag(inputs)
    src = inputs["files"]["src"]
    os.utime(src / "b.txt", (1, 1))
    (src / "pkg" / "__pycache__").mkdir()
    (src / "pkg" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"cache")
    assert tag(inputs) == before


@pytest.mark.parametrize(
    "change",
    ["dockerfile", "file_content", "file_added", "file_renamed", "file_mode", "buildarg", "buildarg_added", "parent"],
)
def test_tag_changes_when_any_input_changes(inputs, change):
    before = tag(inputs)
    src = inputs["files"]["src"]
    if change == "dockerfile":
        inputs["dockerfile"].write_text("FROM scratch\nCOPY src /srv\n")
    elif change == "file_content":
        (src / "pkg" / "a.py").write_text("A = 2\n")
    elif change == "file_added":
        (src / "pkg" / "c.py").write_text("")
    elif change == "file_renamed":
        (src / "b.txt").rename(src / "c.txt")
    elif change == "file_mode":
        (src / "b.txt").chmod(0o755)
    elif change == "buildarg":
        inputs["buildargs"]["X"] = "2"
    elif change == "buildarg_added":
        inputs["buildargs"]["Y"] = ""
    elif change == "parent":
        inputs["parent_id"] = "sha256:abd"
    assert tag(inputs) != before


def test_tag_names_a_missing_input(inputs, tmp_path):
    inputs["files"]["gone"] = tmp_path / "nope"
    with pytest.raises(ConfigError, match="nope"):
        tag(inputs)


def test_private_inputs_change_the_tag_but_are_not_build_args(tmp_path):
    plan = images.ImagePlan(name="x", dockerfile=images.DOCKERFILES / "Dockerfile.tf", parent_id="sha256:1",
                            private_inputs={"pip_index_url": "https://user:token@pypi.example/simple"})
    other = images.ImagePlan(name="x", dockerfile=images.DOCKERFILES / "Dockerfile.tf", parent_id="sha256:1")
    assert plan.tag != other.tag
    assert "token" not in plan.ref and not plan.buildargs


# --------------------------------------------------------------------------------------------------------------
# Models


def make_model(root: Path, name: str, versions: list[str]) -> None:
    for version in versions:
        folder = root / "models" / name / version
        (folder / "variables").mkdir(parents=True)
        (folder / "saved_model.pb").write_bytes(b"pb" + version.encode())


def config_with(tmp_path: Path, *specs: ModelSpec) -> Config:
    config = Config(models=list(specs))
    config.root = tmp_path
    return config


def test_served_versions_follow_the_policy(tmp_path):
    make_model(tmp_path, "m", ["1", "2", "10"])
    latest = config_with(tmp_path, ModelSpec(name="m"))
    assert list(images.served_versions(latest, latest.models[0])) == [10]
    every = config_with(tmp_path, ModelSpec(name="m", version_policy="all"))
    assert list(images.served_versions(every, every.models[0])) == [1, 2, 10]
    specific = config_with(tmp_path, ModelSpec(name="m", version_policy="specific", versions=[2]))
    assert list(images.served_versions(specific, specific.models[0])) == [2]


def test_served_versions_refuse_a_non_integer_or_empty_version(tmp_path):
    make_model(tmp_path, "m", ["1"])
    config = config_with(tmp_path, ModelSpec(name="m"))
    (tmp_path / "models" / "m" / "2").mkdir()
    with pytest.raises(ModelError, match="has no saved_model.pb"):
        images.served_versions(config, config.models[0])
    (tmp_path / "models" / "m" / "2").rename(tmp_path / "models" / "m" / "notes")
    with pytest.raises(ModelError, match="notes is not an integer version folder"):
        images.served_versions(config, config.models[0])


def test_served_versions_errors_name_the_folder(tmp_path):
    missing = config_with(tmp_path, ModelSpec(name="absent"))
    with pytest.raises(ModelError, match="absent"):
        images.served_versions(missing, missing.models[0])
    make_model(tmp_path, "m", ["1"])
    specific = config_with(tmp_path, ModelSpec(name="m", version_policy="specific", versions=[3]))
    with pytest.raises(ModelError, match=r"\[3\]"):
        images.served_versions(specific, specific.models[0])


def test_one_latest_model_needs_no_config_file_and_two_do(tmp_path):
    config = config_with(tmp_path, ModelSpec(name="a"), ModelSpec(name="b", version_policy="all", labels={"stable": 1}))
    assert not contract.needs_model_config_file(images.served_models(config, {"a": [1]}))
    assert contract.needs_model_config_file(images.served_models(config, {"a": [1], "b": [1, 2]}))
    text = contract.model_config_text(images.served_models(config, {"a": [1], "b": [1, 2]}))
    assert 'name: "a"' in text and 'base_path: "/models/a"' in text and "latest { num_versions: 1 }" in text
    assert "all {}" in text and 'version_labels { key: "stable" value: 1 }' in text


def test_model_config_text_parses_as_tf_serving_config(tmp_path):
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = config_with(tmp_path, ModelSpec(name="a", version_policy="specific", versions=[1, 3]), ModelSpec(name="b"))
    parsed = text_format.Parse(contract.model_config_text(images.served_models(config, {"a": [1, 3], "b": [7]})),
                               model_server_config_pb2.ModelServerConfig())
    first, second = parsed.model_config_list.config
    assert list(first.model_version_policy.specific.versions) == [1, 3]
    assert second.name == "b" and second.model_version_policy.latest.num_versions == 1


def test_stage_models_links_only_the_served_versions(tmp_path):
    make_model(tmp_path, "a", ["1", "2"])
    make_model(tmp_path, "b", ["5"])
    config = config_with(tmp_path, ModelSpec(name="a"), ModelSpec(name="b"))
    served = images.stage_models(config, tmp_path / "context")
    assert served == {"a": [2], "b": [5]}
    assert sorted(p.name for p in (tmp_path / "context" / "a").iterdir()) == ["2"]
    assert (tmp_path / "context" / "a" / "2" / "saved_model.pb").read_bytes() == b"pb2"
    assert 'name: "b"' in (tmp_path / "context" / "models.config").read_text()
    assert images.models_label(served) == "a:2,b:5"


# --------------------------------------------------------------------------------------------------------------
# Acceptance requests and stream errors


def test_example_request_matches_half_plus_two_metadata():
    metadata = json.loads((TESTDATA / "half_plus_two_model_metadata.json").read_text())
    assert acceptance.example_request(metadata) == {"signature_name": "serving_default", "inputs": {"x": [[0.0]]}}


def test_example_request_shapes_a_batch_of_one():
    metadata = {"metadata": {"signature_def": {"signature_def": {"serving_default": {"inputs": {
        "pixels": {"dtype": "DT_FLOAT", "tensor_shape": {"dim": [{"size": "-1"}, {"size": "64"}]}},
        "key": {"dtype": "DT_STRING", "tensor_shape": {"dim": [{"size": "-1"}]}},
    }}}}}}
    request = acceptance.example_request(metadata)["inputs"]
    assert len(request["pixels"]) == 1 and request["pixels"][0] == [0.0] * 64
    assert request["key"] == [""]
    with pytest.raises(DockerError, match="serving_default"):
        acceptance.example_request({"metadata": {}})


def test_follow_stream_raises_on_error_detail():
    seen: list[str] = []
    stream = [{"stream": "Step 1/2 : FROM x\n"}, {"errorDetail": {"message": "boom happened"}, "error": "boom"}]
    with pytest.raises(DockerError, match="boom happened"):
        docker_client.follow_stream(iter(stream), "building x", seen.append)
    assert seen == ["Step 1/2 : FROM x"]


# --------------------------------------------------------------------------------------------------------------
# Bases


def test_mirror_comes_from_deb822_and_list_sources(tmp_path, monkeypatch):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\n# comment\nURIs: http://mirror.example/debian/\nSuites: bookworm bookworm-updates\n"
        "Components: main\n\nTypes: deb\nURIs: http://security.example/debian-security\nSuites: bookworm-security\n"
    )
    (tmp_path / "sources.list").write_text("deb [signed-by=/x.gpg] http://other.example/debian trixie main\n")
    monkeypatch.setattr(bases, "APT_SOURCES", (tmp_path / "sources.list.d", tmp_path / "sources.list"))
    config = Config()
    assert bases.debian_mirror(config) == "http://mirror.example/debian"
    config.base.debian_suite = "trixie"
    assert bases.debian_mirror(config) == "http://other.example/debian"
    config.base.debian_suite = "sid"
    with pytest.raises(ConfigError, match="sid"):
        bases.debian_mirror(config)
    config.base.debian_mirror = "http://given.example/debian/"
    assert bases.debian_mirror(config) == "http://given.example/debian"


def test_base_names_change_with_their_inputs():
    config = Config()
    config.base.debian_mirror = "http://a.example/debian"
    first = (bases.debian_base_ref(config), bases.debian_python_ref(config))
    config.base.debian_mirror = "http://b.example/debian"
    second = (bases.debian_base_ref(config), bases.debian_python_ref(config))
    assert first[0] != second[0] and first[1] != second[1]
    assert first[0].startswith("tfship-base-debian:bookworm-")


def test_explicit_source_and_runtime_need_no_engine():
    config = Config()
    config.base.source = "debian"
    assert bases.pick_source(config) == "debian"
    assert images.pick_runtime(config, "python") == "python"
    assert images.pick_runtime(config, "auto") == "python"  # debian bases: never wait for a pull
    config.serving.gpu = True
    assert images.tfserving_image(config).endswith("-gpu")
    with pytest.raises(ConfigError, match="gpu"):
        images.pick_runtime(config, "python")
    with pytest.raises(ConfigError, match="runtime"):
        images.pick_runtime(config, "java")


def test_recording_keeps_push_results_only_for_the_same_image(tmp_path):
    from tfship import artifacts
    from tfship.artifacts import ImageArtifact

    config = config_with(tmp_path)
    pushed = ImageArtifact(role="serving", name="s", tag="t1", image_id="sha256:1", repository="r/s", digest="sha256:d")
    artifacts.save(config.artifacts_path, artifacts.Artifacts(images={"serving": pushed}))
    images.record(config, ImageArtifact(role="serving", name="s", tag="t1", image_id="sha256:1"), models={"m": [3]})
    same = artifacts.load(config.artifacts_path)
    assert same.image("serving").digest == "sha256:d" and same.models == {"m": [3]}
    images.record(config, ImageArtifact(role="serving", name="s", tag="t2", image_id="sha256:2"))
    assert artifacts.load(config.artifacts_path).image("serving").digest == ""


def test_build_fails_on_a_missing_model_before_building_anything(tmp_path, monkeypatch):
    def no_engine(*args, **kwargs):
        raise AssertionError("the engine was asked before the models were checked")

    monkeypatch.setattr(images, "ensure_devel_image", no_engine)
    monkeypatch.setattr(images.docker_client, "api", no_engine)
    config = config_with(tmp_path, ModelSpec(name="missing"))
    with pytest.raises(ModelError, match="no exported version of model 'missing'") as failure:
        images.build(config)
    assert failure.value.hint.startswith("run: invoke export --model missing")
    with pytest.raises(ConfigError, match="unknown image"):
        images.build(config, images=("prod",))


def test_the_serving_record_is_what_the_image_is_built_with(tmp_path):
    from tfship import artifacts
    from tfship.artifacts import ImageArtifact

    make_model(tmp_path, "a", ["1", "2"])
    make_model(tmp_path, "b", ["5"])
    config = config_with(tmp_path, ModelSpec(name="a", version_policy="all", signatures=["serving_default", "x"]),
                         ModelSpec(name="b", smoke="status-only"))
    config.serving.grpc_port = 9000
    served = images.stage_models(config, tmp_path / "context")
    record = images.serving_record(config, served)
    assert record.model_config == (tmp_path / "context" / "models.config").read_text()
    assert (record.model_name, record.grpc_port, record.rest_port, record.gpu) == ("a", 9000, 8501, False)
    assert record.smoke["a"].signatures == ["serving_default", "x"] and record.smoke["a"].sample == ""  # no sample
    assert record.smoke["b"].status_only
    plan = images.serving_plan(config, "runtime:1", "sha256:1", tmp_path,
                               images.served_models(config, served))
    assert plan.buildargs["MODEL_CONFIG_FILE"] == images.contract.MODEL_CONFIG_PATH
    images.record(config, ImageArtifact(role="serving", name="s", tag="t1", image_id="sha256:1"), models=served,
                   serving=record)
    assert artifacts.load(config.artifacts_path).serving == record


def test_acceptance_avoids_a_classify_serving_default():
    """TF Serving's MNIST model: serving_default parses tf.Examples (zeros are none), predict_images takes floats."""
    def signature(method: str) -> dict:
        return {"method_name": method, "inputs": {}}

    mnist_like = {"metadata": {"signature_def": {"signature_def": {
        "serving_default": signature("tensorflow/serving/classify"),
        "predict_images": signature("tensorflow/serving/predict")}}}}
    assert acceptance.predict_signature(mnist_like) == "predict_images"
    half = json.loads((TESTDATA / "half_plus_two_model_metadata.json").read_text())
    assert acceptance.predict_signature(half) == "serving_default"
    assert acceptance.predict_signature({"metadata": {}}) == "serving_default"
