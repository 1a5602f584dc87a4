"""What model.add accepts and how it refuses the rest: one line naming the file and what to do."""

from __future__ import annotations

import pytest

from tfship import importers, models, smoke
from tfship.config import Config
from tfship.errors import ModelError


def test_kinds(tmp_path):
    (tmp_path / "sm").mkdir()
    (tmp_path / "sm" / "saved_model.pb").write_bytes(b"")
    (tmp_path / "m.keras").write_bytes(b"zip")
    (tmp_path / "m.H5").write_bytes(b"hdf")
    (tmp_path / "ck").mkdir()
    for name in ("model.ckpt-7.index", "model.ckpt-7.meta", "model.ckpt-7.data-00000-of-00001"):
        (tmp_path / "ck" / name).write_bytes(b"")
    assert importers.kind_of(tmp_path / "sm") == importers.SAVED_MODEL
    assert importers.kind_of(tmp_path / "m.keras") == importers.KERAS
    assert importers.kind_of(tmp_path / "m.H5") == importers.KERAS
    for path in ("ck", "ck/model.ckpt-7", "ck/model.ckpt-7.meta", "ck/model.ckpt-7.data-00000-of-00001"):
        assert importers.kind_of(tmp_path / path) == importers.CHECKPOINT, path
    assert importers.resolve_checkpoint(tmp_path / "ck") == (tmp_path / "ck" / "model.ckpt-7.meta",
                                                             tmp_path / "ck" / "model.ckpt-7")


def test_checkpoint_state_file_names_the_newest(tmp_path):
    for step in (1, 2):
        for suffix in (".index", ".meta"):
            (tmp_path / f"model.ckpt-{step}{suffix}").write_bytes(b"")
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "model.ckpt-1"\n')
    assert importers.resolve_checkpoint(tmp_path)[1] == tmp_path / "model.ckpt-1"


@pytest.mark.parametrize("make, message, hint", [
    (lambda p: p / "missing.keras", "does not exist", "Keras file"),
    (lambda p: p / "nowhere", "is not a folder or a model file", "SavedModel folder"),
    (lambda p: (p / "notes.txt").write_text("hi") and p / "notes.txt", "is not a model tfship can import", ".meta"),
    (lambda p: (p / "empty").mkdir() or p / "empty", "holds no saved_model.pb, Keras file or checkpoint", "Keras"),
])
def test_unsupported_inputs_are_one_line(tmp_path, make, message, hint):
    with pytest.raises(ModelError, match=message) as caught:
        importers.kind_of(make(tmp_path))
    assert hint in caught.value.hint
    assert "\n" not in caught.value.one_line()


def test_a_checkpoint_without_its_graph_is_refused_before_tensorflow_runs(tmp_path):
    (tmp_path / "ckpt.index").write_bytes(b"")
    (tmp_path / "ckpt.data-00000-of-00001").write_bytes(b"")
    config = Config(root=tmp_path / "project")
    with pytest.raises(ModelError, match=r"ckpt.index is a checkpoint without its graph \(ckpt.meta is missing\)") as caught:
        models.add(config, tmp_path / "ckpt.index", "mine")
    assert "tf.saved_model.save" in caught.value.hint
    assert not (config.models_path / "mine").exists()


def test_an_unloadable_keras_file_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TFSHIP_CACHE_DIR", str(tmp_path / "cache"))
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"not a zip archive")
    config = Config(root=tmp_path / "project")
    with pytest.raises(ModelError, match=r"broken.keras: does not load as a Keras model") as caught:
        models.add(config, broken, "mine")
    assert "model.export(DIR)" in caught.value.hint
    assert not (config.models_path / "mine").exists()


# Scoring of generated samples (tolerance) and named inputs


def generated_case() -> smoke.SmokeCase:
    case = smoke.SmokeCase(model="m", version=1, signatures=["serving_default"])
    smoke.apply_sample(case, {
        "signature": "serving_default", "input_key": "", "output_key": "y", "generated": True,
        "inputs": {"a": [[0.5], [0.25]], "b": [[1], [0]]}, "input_dtypes": {"a": "float32", "b": "int32"},
        "expected_outputs": [[[100.0, 2.0]], [[3.0, 4.0]]], "tolerance": {"atol": 1e-4, "rtol": 1e-3},
    }, "sample.json")
    return case


def test_generated_samples_are_scored_within_their_tolerance():
    case = generated_case()
    assert case.request_inputs() == {"a": ([[0.5], [0.25]], "float32"), "b": ([[1], [0]], "int32")}
    assert case.expected_outputs == [100.0, 2.0, 3.0, 4.0]
    ok, rate, detail = smoke.score(case, [[[100.05, 2.0]], [[3.0, 4.00005]]])  # rtol covers 0.05 of 100
    assert ok and rate == 0 and detail == "within atol 0.0001/rtol 0.001"
    ok, rate, detail = smoke.score(case, [[[100.0, 2.01]], [[3.0, 4.0]]])
    assert not ok and rate == 0.25 and detail.startswith("1 of 4 values differ")
    ok, _, detail = smoke.score(case, [[1.0, 2.0]])
    assert not ok and detail == "expected 4 values, got 2"
