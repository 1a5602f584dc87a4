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

from tfship.exporters.common import CLASSIFY, PREDICT, seed_everything, set_method_names, write_smoke_sample, \
    write_warmup_requests

FEATURE = "pixels"
LABELS = [str(digit) for digit in range(10)]
MIN_ACCURACY = 0.95
HIDDEN_UNITS = 32
TRAIN_STEPS = 300
LEARNING_RATE = 0.01
HELD_OUT_FRACTION = 0.2
SMOKE_SAMPLE_SIZE = 50
WARMUP_ROWS = 4  # held-out images replayed by the server at load (assets.extra/tf_serving_warmup_requests)


def export(export_dir: Path, *, seed: int = 0, log=print) -> dict[str, Any]:
    """Train, check the held-out accuracy, and write the SavedModel into export_dir (which must not exist yet)."""
    import numpy as np
    import tensorflow as tf
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    seed_everything(seed)
    data = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        data.data.astype(np.float32),
        data.target.astype(np.int64),
        test_size=HELD_OUT_FRACTION,
        stratify=data.target,
        random_state=seed,
    )
    module = _build_module(tf, seed)
    _train(tf, module, x_train, y_train, log)

    predicted = np.argmax(module.predict_probabilities(tf.constant(x_test))["probabilities"].numpy(), axis=1)
    accuracy = float(np.mean(predicted == y_test))
    log(f"digits: held-out accuracy {accuracy:.4f} on {len(y_test)} images (seed {seed})")
    if accuracy < MIN_ACCURACY:
        raise RuntimeError(f"held-out accuracy {accuracy:.4f} is below {MIN_ACCURACY}; try another seed")

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
    def glorot(shape, offset):
        limit = (6.0 / (shape[0] + shape[1])) ** 0.5
        return tf.random.stateless_uniform(shape, seed=[seed, offset], minval=-limit, maxval=limit)

    features = {FEATURE: tf.io.FixedLenFeature([64], dtype=tf.float32)}

    class Digits(tf.Module):
        def __init__(self):
            super().__init__(name="digits")
            self.w1 = tf.Variable(glorot([64, HIDDEN_UNITS], 1), name="w1")
            self.b1 = tf.Variable(tf.zeros([HIDDEN_UNITS]), name="b1")
            self.w2 = tf.Variable(glorot([HIDDEN_UNITS, 10], 2), name="w2")
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


def _train(tf, module, x_train, y_train, log) -> None:
    pixels = tf.constant(x_train)
    labels = tf.constant(y_train)
    variables = [module.w1, module.b1, module.w2, module.b2]
    adam = _Adam(tf, variables, LEARNING_RATE)

    @tf.function
    def train_step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=module.logits(pixels))
            )
        adam.apply(tape.gradient(loss, variables))
        return loss

    for step in range(1, TRAIN_STEPS + 1):
        loss = train_step()
        if step % 100 == 0:
            log(f"digits: step {step}/{TRAIN_STEPS} loss {float(loss):.4f}")


class _Adam:
    """Adam (Kingma & Ba) over a fixed list of variables; its slots are not part of the exported module."""

    def __init__(self, tf, variables, learning_rate: float, beta1: float = 0.9, beta2: float = 0.999):
        self.tf = tf
        self.variables = variables
        self.learning_rate, self.beta1, self.beta2, self.epsilon = learning_rate, beta1, beta2, 1e-7
        self.step = tf.Variable(0.0, trainable=False)
        self.first = [tf.Variable(tf.zeros_like(v), trainable=False) for v in variables]
        self.second = [tf.Variable(tf.zeros_like(v), trainable=False) for v in variables]

    def apply(self, gradients) -> None:
        tf = self.tf
        self.step.assign_add(1.0)
        correction = tf.sqrt(1.0 - self.beta2**self.step) / (1.0 - self.beta1**self.step)
        for variable, gradient, first, second in zip(self.variables, gradients, self.first, self.second):
            first.assign(self.beta1 * first + (1.0 - self.beta1) * gradient)
            second.assign(self.beta2 * second + (1.0 - self.beta2) * tf.square(gradient))
            variable.assign_sub(self.learning_rate * correction * first / (tf.sqrt(second) + self.epsilon))
