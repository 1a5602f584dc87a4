"""digits: a small classifier of scikit-learn's bundled 8×8 handwritten digits (1797 images, no download).

A 64-32-10 multilayer perceptron trained full-batch with Adam on 80 % of the data (stratified split by seed);
the held-out 20 % gives the accuracy printed at export, and part of it becomes the smoke sample. Same seed, same
split, same weights (op determinism on).

Inputs are raw pixel intensities 0..16 as scikit-learn gives them (the model scales them itself).
  serving_default  predict   pixels [-1, 64] float        -> probabilities [-1, 10]
  classify         classify  inputs: serialized Example   -> classes [-1, 10] string "0".."9", scores [-1, 10]
Examples carry feature `pixels`: 64 floats.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tfship.exporters.common import (CLASSIFY, PREDICT, check_accuracy, glorot, seed_everything, set_method_names,
                                     train_classifier, write_smoke_sample, write_warmup_requests)

FEATURE = "pixels"
LABELS = [str(digit) for digit in range(10)]
MIN_ACCURACY = 0.95
HIDDEN_UNITS = 32
TRAIN_STEPS = 300
LEARNING_RATE = 0.01
HELD_OUT_FRACTION = 0.2
SMOKE_SAMPLE_SIZE = 50
WARMUP_ROWS = 4  # held-out images replayed by the server at load (assets.extra/tf_serving_warmup_requests)


def data(seed: int):
    """(x_train, x_test, y_train, y_test): the 8×8 digits as 64 raw intensities per row, split by seed."""
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    return train_test_split(digits.data.astype(np.float32), digits.target.astype(np.int64),
                            test_size=HELD_OUT_FRACTION, stratify=digits.target, random_state=seed)


def held_out(seed: int = 0):
    """The images and labels the exported model never saw (what `invoke evaluate` sends)."""
    _, x_test, _, y_test = data(seed)
    return x_test, y_test


def export(export_dir: Path, *, seed: int = 0, log=print) -> dict[str, Any]:
    """Train, check the held-out accuracy, and write the SavedModel into export_dir (which must not exist yet)."""
    import numpy as np
    import tensorflow as tf

    seed_everything(seed)
    x_train, x_test, y_train, y_test = data(seed)
    module = _build_module(tf, seed)
    train_classifier(tf, module.logits, [module.w1, module.b1, module.w2, module.b2], x_train, y_train,
                     steps=TRAIN_STEPS, learning_rate=LEARNING_RATE, log=log, name="digits")

    predicted = np.argmax(module.predict_probabilities(tf.constant(x_test))["probabilities"].numpy(), axis=1)
    accuracy = float(np.mean(predicted == y_test))
    check_accuracy("digits", accuracy, len(y_test), seed, MIN_ACCURACY, log)

    signatures = {"serving_default": module.predict_probabilities, "classify": module.classify}
    tf.saved_model.save(module, str(export_dir), signatures=signatures)
    set_method_names(export_dir, {"serving_default": PREDICT, "classify": CLASSIFY})
    write_smoke_sample(
        export_dir,
        {
            "model": "digits",
            "seed": seed,
            "held_out_accuracy": accuracy,
            "signature": "serving_default",
            "input_key": FEATURE,
            "output_key": "probabilities",
            "example_feature": FEATURE,
            "classify_signature": "classify",
            "inputs": x_test[:SMOKE_SAMPLE_SIZE].tolist(),
            "expected_labels": [LABELS[label] for label in y_test[:SMOKE_SAMPLE_SIZE]],
        },
    )
    warmup_rows = x_test[:WARMUP_ROWS].tolist()
    write_warmup_requests(export_dir, predict={"serving_default": {FEATURE: warmup_rows}},
                          classify={"classify": [{FEATURE: row} for row in warmup_rows]})
    return {"accuracy": accuracy, "held_out": int(len(y_test)), "signatures": sorted(signatures)}


def _build_module(tf, seed: int):
    # Plain variables and a hand-written Adam: no Keras, so the export stays small, fast and easy to reproduce.
    features = {FEATURE: tf.io.FixedLenFeature([64], dtype=tf.float32)}

    class Digits(tf.Module):
        def __init__(self):
            super().__init__(name="digits")
            self.w1 = tf.Variable(glorot(tf, [64, HIDDEN_UNITS], seed, 1), name="w1")
            self.b1 = tf.Variable(tf.zeros([HIDDEN_UNITS]), name="b1")
            self.w2 = tf.Variable(glorot(tf, [HIDDEN_UNITS, 10], seed, 2), name="w2")
            self.b2 = tf.Variable(tf.zeros([10]), name="b2")
            self.labels = tf.constant(LABELS)

        def logits(self, pixels):
            hidden = tf.nn.relu(tf.matmul(pixels / 16.0, self.w1) + self.b1)
            return tf.matmul(hidden, self.w2) + self.b2

        @tf.function(input_signature=[tf.TensorSpec([None, 64], tf.float32, name=FEATURE)])
        def predict_probabilities(self, pixels):
            return {"probabilities": tf.nn.softmax(self.logits(pixels))}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def classify(self, inputs):
            pixels = tf.io.parse_example(inputs, features)[FEATURE]
            scores = tf.nn.softmax(self.logits(pixels))
            classes = tf.tile(tf.expand_dims(self.labels, 0), [tf.shape(scores)[0], 1])
            return {"classes": classes, "scores": scores}

    return Digits()
