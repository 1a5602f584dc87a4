"""model.add of a Keras file and a TF1 checkpoint, end to end against the real tfship.server on 127.0.0.1.

Each import is converted, validated and given generated smoke checks; the smoke test's own clients (gRPC and REST)
then check a healthy server, and a deliberately wrong model served under the same name must fail those checks.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tfship import images, models, smoke
from tfship.artifacts import Artifacts
from tfship.config import Config, ModelSpec


class OpenForward:
    def __init__(self, pod: str, grpc_port: int, rest_port: int):
        self.pod, self.ports, self.restarts = pod, {8500: grpc_port, 8501: rest_port}, 0

    def alive(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TFSHIP_CACHE_DIR", str(tmp_path / "cache"))


def keras_model_file(path, seed: int) -> str:
    """Two inputs (float features, int32 flags) and two outputs: named inputs and dtypes go through the checks."""
    import keras

    keras.utils.set_random_seed(seed)
    features = keras.Input((4,), name="features")
    flags = keras.Input((2,), name="flags", dtype="int32")
    joined = keras.layers.Concatenate()([features, keras.ops.cast(flags, "float32")])
    probabilities = keras.layers.Dense(3, activation="softmax", name="probabilities")(joined)
    value = keras.layers.Dense(1, name="value")(joined)
    keras.Model([features, flags], [probabilities, value]).save(path)
    return str(path)


def check(config: Config, server) -> smoke.ReplicaResult:
    cases = smoke.load_cases(config, Artifacts(models={"mine": [1]}, serving=images.serving_record(config, {"mine": [1]})))
    return smoke.check_replica(OpenForward("local", server.grpc_port, server.rest_port), cases, 8500, 8501,
                               timeout=10, retries=1)


def test_keras_import_passes_its_generated_checks_and_a_wrong_model_fails_them(tmp_path, start_server):
    config = Config(root=tmp_path / "project", models=[ModelSpec(name="mine")])
    version = models.add(config, keras_model_file(tmp_path / "mine.keras", seed=1), "mine")

    sample = json.loads((version / models.SMOKE_SAMPLE).read_text())
    assert sample["generated"] is True and sample["signature"] == "serving_default"
    assert sample["input_dtypes"] == {"features": "float32", "flags": "int32"}
    assert sorted(sample["inputs"]) == ["features", "flags"] and sample["output_key"] == "probabilities"
    assert np.asarray(sample["expected_outputs"]).shape == (3, 3)
    assert models.read_signatures(version) == {"serving_default": "tensorflow/serving/predict"}

    healthy = start_server("--model_name=mine", f"--model_base_path={version.parent}")
    result = check(config, healthy)
    assert result.ok, smoke.format_table([result])
    assert [c.name for c in result.checks] == ["mine status", "mine metadata", "mine predict grpc", "mine predict rest"]
    healthy.stop()

    # Same architecture, other weights, served under the same name: the recorded answers no longer hold.
    other = Config(root=tmp_path / "other")
    wrong = models.add(other, keras_model_file(tmp_path / "wrong.keras", seed=2), "mine")
    impostor = start_server("--model_name=mine", f"--model_base_path={wrong.parent}")
    result = check(config, impostor)
    failed = {c.name: c.detail for c in result.checks if not c.ok}
    assert set(failed) == {"mine predict grpc", "mine predict rest"}, smoke.format_table([result])
    assert "values differ (within atol" in failed["mine predict grpc"]


def tf1_checkpoint(folder) -> str:
    """y = x·[1, 2, 3] + 0.5 as a TF1 graph + Saver checkpoint, serving tensors named in collections."""
    import tensorflow as tf

    v1 = tf.compat.v1
    with tf.Graph().as_default(), v1.Session() as session:
        x = v1.placeholder(tf.float32, [None, 3], name="x")
        weights = tf.Variable([[1.0], [2.0], [3.0]], name="w")
        y = tf.identity(tf.matmul(x, weights) + 0.5, name="y")
        v1.add_to_collection("inputs", x)
        v1.add_to_collection("outputs", y)
        session.run(v1.global_variables_initializer())
        return v1.train.Saver().save(session, str(folder / "model.ckpt"))


def test_checkpoint_import_serves_the_graph_with_its_weights(tmp_path, start_server):
    import requests

    prefix = tf1_checkpoint(tmp_path)
    config = Config(root=tmp_path / "project", models=[ModelSpec(name="mine")])
    version = models.add(config, prefix + ".meta", "mine")
    sample = json.loads((version / models.SMOKE_SAMPLE).read_text())
    assert (sample["input_key"], sample["output_key"]) == ("x", "y")

    server = start_server("--model_name=mine", f"--model_base_path={version.parent}")
    answer = requests.post(f"{server.rest_url}/v1/models/mine:predict",
                           json={"instances": [[1.0, 1.0, 1.0], [0.0, 0.0, 2.0]]}, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"] == [[6.5], [6.5]]
    assert check(config, server).ok
