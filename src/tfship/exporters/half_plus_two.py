"""half_plus_two: y = 0.5·x + 2, with the signatures of TF Serving's own test model.

Mirrors tensorflow_serving/servables/tensorflow/testdata/saved_model_half_plus_two_cpu: variables a=0.5, b=2, c=3;
  serving_default   predict   x [-1, 1] float          -> y = a·x + b
  classify_x_to_y   classify  inputs: serialized Example -> scores = a·x + b
  regress_x_to_y    regress   inputs: serialized Example -> outputs = a·x + b
  regress_x_to_y2   regress   inputs: serialized Example -> outputs = a·x + c
  regress_x2_to_y3  regress   inputs x2 [-1, 1] float  -> outputs = a·x2 + c
Examples carry feature `x` (1 float, required) and `x2` (1 float, default 0), as in the original.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tfship.exporters.common import CLASSIFY, PREDICT, REGRESS, set_method_names, write_smoke_sample, \
    write_warmup_requests

METHOD_NAMES = {
    "serving_default": PREDICT,
    "classify_x_to_y": CLASSIFY,
    "regress_x_to_y": REGRESS,
    "regress_x_to_y2": REGRESS,
    "regress_x2_to_y3": REGRESS,
}
SAMPLE_INPUTS = [[-1.0], [0.0], [1.0], [2.0], [5.0]]


def export(export_dir: Path, *, seed: int = 0, log=print) -> dict[str, Any]:
    """Write the SavedModel into export_dir (which must not exist yet); return a summary. No randomness: the seed
    is accepted for a uniform exporter interface."""
    import tensorflow as tf

    module = _build_module(tf)
    signatures = {
        "serving_default": module.predict_y,
        "classify_x_to_y": module.classify_x_to_y,
        "regress_x_to_y": module.regress_x_to_y,
        "regress_x_to_y2": module.regress_x_to_y2,
        "regress_x2_to_y3": module.regress_x2_to_y3,
    }
    tf.saved_model.save(module, str(export_dir), signatures=signatures)
    set_method_names(export_dir, METHOD_NAMES)
    expected = [[0.5 * x + 2.0 for x in row] for row in SAMPLE_INPUTS]
    write_smoke_sample(
        export_dir,
        {
            "model": "half_plus_two",
            "signature": "serving_default",
            "input_key": "x",
            "output_key": "y",
            "example_feature": "x",
            "classify_signature": "classify_x_to_y",
            "regress_signature": "regress_x_to_y",
            "inputs": SAMPLE_INPUTS,
            "expected_outputs": expected,
        },
    )
    sample_examples = [{"x": row, "x2": row} for row in SAMPLE_INPUTS]
    write_warmup_requests(
        export_dir,
        predict={"serving_default": {"x": SAMPLE_INPUTS}, "regress_x2_to_y3": {"inputs": SAMPLE_INPUTS}},
        classify={"classify_x_to_y": sample_examples},
        regress={name: sample_examples for name in ("regress_x_to_y", "regress_x_to_y2")},
    )
    log(f"half_plus_two: y = 0.5*x + 2 with signatures {', '.join(sorted(signatures))}")
    return {"signatures": sorted(signatures)}


def _build_module(tf):
    features = {
        "x": tf.io.FixedLenFeature([1], dtype=tf.float32),
        "x2": tf.io.FixedLenFeature([1], dtype=tf.float32, default_value=[0.0]),
    }
    example_spec = tf.TensorSpec(shape=None, dtype=tf.string, name="inputs")  # unknown rank, like the original

    class HalfPlusTwo(tf.Module):
        def __init__(self):
            super().__init__(name="half_plus_two")
            self.a = tf.Variable(0.5, name="a")
            self.b = tf.Variable(2.0, name="b")
            self.c = tf.Variable(3.0, name="c")

        def _parse(self, serialized):
            return tf.io.parse_example(tf.reshape(serialized, [-1]), features)

        @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
        def predict_y(self, x):
            return {"y": self.a * x + self.b}

        @tf.function(input_signature=[example_spec])
        def classify_x_to_y(self, inputs):
            return {"scores": self.a * self._parse(inputs)["x"] + self.b}

        @tf.function(input_signature=[example_spec])
        def regress_x_to_y(self, inputs):
            return {"outputs": self.a * self._parse(inputs)["x"] + self.b}

        @tf.function(input_signature=[example_spec])
        def regress_x_to_y2(self, inputs):
            return {"outputs": self.a * self._parse(inputs)["x"] + self.c}

        @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="inputs")])
        def regress_x2_to_y3(self, inputs):
            return {"outputs": self.a * inputs + self.c}

    return HalfPlusTwo()
