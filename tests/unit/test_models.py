"""Model export, layout, validation and import, on real TensorFlow models (no Docker: exporters run on the host).

The exports here use `tfship.export.export(..., in_devel=False)`: the same `python -m tfship.exporters` the devel
image runs (tests/integration/test_export.py runs it there).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tfship import config as tfconfig
from tfship import export, models
from tfship.errors import ConfigError, ModelError

import model_fixtures

HALF_PLUS_TWO_SIGNATURES = ["serving_default", "classify_x_to_y", "regress_x_to_y", "regress_x_to_y2", "regress_x2_to_y3"]


def project_config(root: Path) -> tfconfig.Config:
    """The repository's tfship.yaml (its model specs), with models/ under `root`."""
    config = tfconfig.load(model_fixtures.REPO / "tfship.yaml", environ={})
    config.root = root
    return config


@pytest.fixture(scope="module")  # not session: the variable would outlive this module (the cluster's cache)
def isolated_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TFSHIP_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def exported(tmp_path_factory, isolated_cache) -> tfconfig.Config:
    """Both configured models exported once on the host, as version 1."""
    config = project_config(tmp_path_factory.mktemp("project"))
    results = export.export(config, in_devel=False)
    assert [(r.model, r.version) for r in results] == [("half_plus_two", 1), ("digits", 1)]
    return config


@pytest.fixture
def good_version(exported) -> Path:
    return models.version_path(exported, "half_plus_two", 1)


@pytest.fixture
def scratch(tmp_path, isolated_cache) -> tfconfig.Config:
    return project_config(tmp_path)


# ---------------------------------------------------------------------------------------------------------------
# Export


def test_export_writes_validated_versions_with_smoke_samples(exported):
    assert models.versions(exported, "half_plus_two") == [1]
    assert models.versions(exported, "digits") == [1]
    lines = models.validate_all(exported)
    assert lines == [
        "half_plus_two/1: ok, loads, signatures serving_default, classify_x_to_y, regress_x_to_y",
        "digits/1: ok, loads, signatures serving_default, classify",
    ]
    sample = models.load_smoke_sample(models.version_path(exported, "digits", 1))
    assert sample["held_out_accuracy"] >= 0.95
    assert len(sample["inputs"]) == len(sample["expected_labels"]) == 50
    assert all(len(row) == 64 for row in sample["inputs"])
    assert not (exported.models_path / models.STAGING_DIR).exists()


def test_export_method_names_are_tf_serving_ones(exported):
    signatures = models.read_signatures(models.version_path(exported, "half_plus_two", 1))
    assert signatures == {
        "serving_default": "tensorflow/serving/predict",
        "classify_x_to_y": "tensorflow/serving/classify",
        "regress_x_to_y": "tensorflow/serving/regress",
        "regress_x_to_y2": "tensorflow/serving/regress",
        "regress_x2_to_y3": "tensorflow/serving/regress",
    }
    digits = models.read_signatures(models.version_path(exported, "digits", 1))
    assert digits == {"serving_default": "tensorflow/serving/predict", "classify": "tensorflow/serving/classify"}


def test_half_plus_two_matches_tf_servings_own_model_on_every_signature(exported):
    import tensorflow as tf

    reference_dir = model_fixtures.REFERENCE_HALF_PLUS_TWO
    assert (reference_dir / "saved_model.pb").is_file(), f"TF Serving's test model is missing at {reference_dir}"
    ours = tf.saved_model.load(str(models.version_path(exported, "half_plus_two", 1))).signatures
    reference = tf.saved_model.load(str(reference_dir)).signatures
    assert set(ours) == set(reference) == set(HALF_PLUS_TWO_SIGNATURES)

    values = [-3.5, 0.0, 1.0, 2.0, 10.25]
    examples = tf.constant([_example({"x": [v], "x2": [v * 2]}) for v in values])
    column = tf.constant([[v] for v in values])
    calls = {
        "serving_default": {"x": column},
        "classify_x_to_y": {"inputs": examples},
        "regress_x_to_y": {"inputs": examples},
        "regress_x_to_y2": {"inputs": examples},
        "regress_x2_to_y3": {"inputs": column},
    }
    for name, inputs in calls.items():
        mine, theirs = ours[name](**inputs), reference[name](**inputs)
        assert set(mine) == set(theirs), name
        for key in theirs:
            assert mine[key].dtype == theirs[key].dtype, (name, key)
            assert mine[key].numpy().tolist() == theirs[key].numpy().tolist(), (name, key)
    assert ours["serving_default"](x=column)["y"].numpy().ravel().tolist() == [0.5 * v + 2 for v in values]


def test_digits_classify_returns_labels_and_scores_matching_predict(exported):
    import numpy as np
    import tensorflow as tf

    version = models.version_path(exported, "digits", 1)
    sample = models.load_smoke_sample(version)
    loaded = tf.saved_model.load(str(version)).signatures
    pixels = tf.constant(sample["inputs"], dtype=tf.float32)
    probabilities = loaded["serving_default"](pixels=pixels)["probabilities"].numpy()
    examples = tf.constant([_example({sample["example_feature"]: row}) for row in sample["inputs"]])
    classified = loaded["classify"](inputs=examples)
    classes = classified["classes"].numpy().astype(str)
    assert classes.shape == (50, 10) and all(list(row) == [str(d) for d in range(10)] for row in classes)
    np.testing.assert_allclose(classified["scores"].numpy(), probabilities, rtol=1e-5)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    predicted = [str(i) for i in probabilities.argmax(axis=1)]
    correct = sum(p == e for p, e in zip(predicted, sample["expected_labels"]))
    assert correct >= 45  # the sample is held out; the model scores >= 0.95 on the whole held-out set


def test_export_takes_the_next_version_and_is_deterministic_for_a_seed(exported):
    [second] = export.export(exported, model="digits", in_devel=False)
    assert (second.version, second.path.name) == (2, "2")
    assert second.summary["accuracy"] >= 0.95
    first = models.version_path(exported, "digits", 1)
    for relative in ("variables/variables.data-00000-of-00001", "assets.extra/smoke_sample.json"):
        assert (first / relative).read_bytes() == (second.path / relative).read_bytes(), relative


def test_another_seed_gives_other_weights(exported, tmp_path):
    from tfship.exporters import digits

    summary = digits.export(tmp_path / "1", seed=1, log=lambda line: None)
    assert summary["accuracy"] >= 0.95
    weights = "variables/variables.data-00000-of-00001"
    assert (tmp_path / "1" / weights).read_bytes() != (models.version_path(exported, "digits", 1) / weights).read_bytes()


def test_export_refuses_an_existing_version_before_doing_anything(exported):
    with pytest.raises(ModelError, match=r"half_plus_two/1 already exists") as caught:
        export.export(exported, model="half_plus_two", version="1", in_devel=False)
    assert "--version" in caught.value.hint


def test_export_rejects_a_bad_version_flag_and_unknown_exporter(scratch):
    with pytest.raises(ModelError, match="not a whole number"):
        export.export(scratch, model="digits", version="two", in_devel=False)
    scratch.models.append(tfconfig.ModelSpec(name="mine", exporter="resnet"))
    with pytest.raises(ConfigError, match=r"models.mine.exporter is 'resnet'"):
        export.export(scratch, model="mine", in_devel=False)
    with pytest.raises(ConfigError, match="unknown model 'nope'"):
        export.export(scratch, model="nope", in_devel=False)


def test_failed_export_leaves_nothing_behind(scratch):
    # The exporter succeeds but the result lacks a signature the config demands: nothing may be published.
    scratch.model("half_plus_two").signatures.append("predict_images")
    with pytest.raises(ModelError, match="has no signature predict_images"):
        export.export(scratch, model="half_plus_two", in_devel=False)
    assert models.versions(scratch, "half_plus_two") == []
    assert not (scratch.models_path / models.STAGING_DIR).exists()


# ---------------------------------------------------------------------------------------------------------------
# Validation of broken models


@pytest.mark.parametrize(
    "kind, message",
    [
        ("non_integer_folder", "is not an integer version folder"),
        ("missing_saved_model_pb", "saved_model.pb is missing"),
        ("truncated_saved_model_pb", "is not a SavedModel protobuf"),
        ("garbage_saved_model_pb", "is not a SavedModel protobuf"),
        ("empty_model_dir", "holds no version folders"),
        ("missing_variables", "does not load"),
    ],
)
def test_broken_model_is_a_model_error_naming_the_path_and_fix(kind, message, good_version, scratch):
    scratch.models = [scratch.model("half_plus_two")]
    named = model_fixtures.BROKEN[kind](good_version, scratch.models_path, "half_plus_two")
    with pytest.raises(ModelError) as caught:
        models.validate_all(scratch)
    assert message in caught.value.message
    assert str(named) in caught.value.message
    assert caught.value.hint
    assert caught.value.one_line().startswith("Error: ") and "\n" not in caught.value.one_line()


def test_missing_model_folder_hints_at_export(scratch):
    with pytest.raises(ModelError, match="half_plus_two does not exist") as caught:
        models.validate_all(scratch)
    assert caught.value.hint == "run: invoke export --model half_plus_two"


def test_missing_signature_names_what_the_model_has(good_version, tmp_path):
    with pytest.raises(ModelError) as caught:
        models.validate_model(good_version, ["serving_default", "predict_images"])
    assert f"{good_version} has no signature predict_images" in caught.value.message
    assert "classify_x_to_y" in caught.value.message  # what it has instead


def test_two_folders_for_one_version_are_an_error(good_version, scratch):
    model_fixtures.copy_version(good_version, scratch.models_path, "half_plus_two", "1")
    model_fixtures.copy_version(good_version, scratch.models_path, "half_plus_two", "001")
    with pytest.raises(ModelError, match="are both version 1"):
        models.validate_all(scratch)


def test_versions_named_by_config_must_exist(good_version, scratch):
    model_fixtures.copy_version(good_version, scratch.models_path, "half_plus_two", "00000007")
    model_fixtures.copy_version(good_version, scratch.models_path, "digits", "1")
    scratch.model("digits").signatures = ["serving_default"]  # a half_plus_two stands in: only layout matters here
    assert models.versions(scratch, "half_plus_two") == [7]
    assert models.next_version(scratch, "half_plus_two") == 8
    scratch.model("half_plus_two").labels = {"stable": 7, "canary": 8}
    with pytest.raises(ModelError, match="names version 8"):
        models.validate_all(scratch)


def test_reads_signatures_of_tf_servings_tf1_model():
    signatures = models.read_signatures(model_fixtures.REFERENCE_HALF_PLUS_TWO)
    assert signatures["classify_x_to_y"] == "tensorflow/serving/classify"
    assert set(signatures) == set(HALF_PLUS_TWO_SIGNATURES)


# ---------------------------------------------------------------------------------------------------------------
# model.add


def test_add_validates_and_copies_to_the_next_version(good_version, scratch):
    first = models.add(scratch, good_version, "half_plus_two")
    second = models.add(scratch, str(good_version), "half_plus_two")
    assert (first, second) == (scratch.models_path / "half_plus_two" / "1", scratch.models_path / "half_plus_two" / "2")
    assert (second / "saved_model.pb").read_bytes() == (good_version / "saved_model.pb").read_bytes()
    assert models.add(scratch, good_version, "half_plus_two", version="10").name == "10"
    assert models.versions(scratch, "half_plus_two") == [1, 2, 10]


def test_add_refuses_invalid_sources_and_leaves_nothing(good_version, scratch, tmp_path):
    with pytest.raises(ModelError, match="is not a folder"):
        models.add(scratch, tmp_path / "nowhere", "half_plus_two")
    with pytest.raises(ModelError, match=r"holds versions \(1\)") as caught:
        models.add(scratch, good_version.parent, "half_plus_two")
    assert str(good_version) in caught.value.hint
    # digits demands a `classify` signature half_plus_two lacks
    with pytest.raises(ModelError, match="has no signature classify"):
        models.add(scratch, good_version, "digits")
    with pytest.raises(ModelError, match="is not valid"):
        models.add(scratch, good_version, "../escape")
    broken = model_fixtures.garbage_saved_model_pb(good_version, tmp_path / "elsewhere", "m")
    with pytest.raises(ModelError, match="is not a SavedModel protobuf"):
        models.add(scratch, broken.parent, "half_plus_two")
    assert not scratch.models_path.exists() or sorted(p.name for p in scratch.models_path.iterdir()) == []


def test_add_refuses_an_existing_version(good_version, scratch):
    models.add(scratch, good_version, "half_plus_two", version=3)
    with pytest.raises(ModelError, match="already exists"):
        models.add(scratch, good_version, "half_plus_two", version=3)


def test_add_accepts_a_model_not_in_the_config(good_version, scratch):
    target = models.add(scratch, good_version, "imported")
    assert target == scratch.models_path / "imported" / "1"
    scratch.models = []
    assert models.validate_all(scratch) == [
        "imported: not in tfship.yaml, not served (add it under models: to serve it)"
    ]


def _example(features: dict[str, list[float]]) -> bytes:
    import tensorflow as tf

    return tf.train.Example(
        features=tf.train.Features(
            feature={k: tf.train.Feature(float_list=tf.train.FloatList(value=v)) for k, v in features.items()}
        )
    ).SerializeToString()


# ---------------------------------------------------------------------------------------------------------------
# Bounded model folders (no TensorFlow needed: check_files looks at files only)


@pytest.fixture
def reference_copy(tmp_path) -> Path:
    copy = tmp_path / "half_plus_two" / "1"
    shutil.copytree(model_fixtures.REFERENCE_HALF_PLUS_TWO, copy)
    return copy


def test_a_symlink_out_of_the_model_folder_is_refused_naming_both_ends(reference_copy):
    (reference_copy / "assets" / "escape").symlink_to("/")
    with pytest.raises(ModelError, match=r"assets/escape is a symlink to /, outside the model folder") as caught:
        models.check_files(reference_copy, 4096)
    assert "copy what it points to" in caught.value.hint


def test_a_symlink_loop_and_a_dangling_link_end_quickly_with_one_line(reference_copy):
    (reference_copy / "assets" / "a").symlink_to(reference_copy / "assets" / "b")
    (reference_copy / "assets" / "b").symlink_to(reference_copy / "assets" / "a")
    with pytest.raises(ModelError, match="dangling symlink"):
        models.check_files(reference_copy, 4096)


def test_a_symlink_inside_the_model_folder_is_fine(reference_copy):
    (reference_copy / "assets" / "again.txt").symlink_to(reference_copy / "assets" / "foo.txt")
    size = models.check_files(reference_copy, 4096)
    assert size == sum(p.stat().st_size for p in reference_copy.rglob("*") if p.is_file())


def test_a_model_over_the_size_limit_is_refused_before_it_is_hashed_or_copied(reference_copy):
    with open(reference_copy / "variables" / "padding.bin", "wb") as big:
        big.truncate(2 * 1024 * 1024)  # sparse: 2 MB of size, no disk
    with pytest.raises(ModelError, match=r"larger than the 1 MB limit \(model_size_limit_mb\)"):
        models.check_files(reference_copy, 1)
    assert models.check_files(reference_copy, 3) > 2 * 1024 * 1024
