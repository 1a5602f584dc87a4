"""What every exporter shares: TF Serving method names on signatures, the smoke sample, deterministic seeding.

TF2's `tf.saved_model.save` marks every signature `tensorflow/serving/predict`. TF Serving's Classify and Regress
APIs refuse a signature unless its method_name is `tensorflow/serving/classify` or `/regress`, so exporters name
the method of each signature and `set_method_names` rewrites them in saved_model.pb after saving (and rewrites
fingerprint.pb, which holds a checksum of saved_model.pb).
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any, Mapping

PREDICT = "tensorflow/serving/predict"
CLASSIFY = "tensorflow/serving/classify"
REGRESS = "tensorflow/serving/regress"

# TF Serving's convention for extra files beside a version (its warmup requests live here too); TF Serving and
# tfship.server ignore other files in it, so the smoke sample travels with the model into the serving image.
EXTRA_DIR = "assets.extra"
SMOKE_SAMPLE_FILE = "smoke_sample.json"
# TF Serving replays this TFRecord file of PredictionLog at load (--enable_model_warmup, on by default), and so
# does tfship.server: the first real request then finds every signature traced and its kernels ready.
WARMUP_FILE = "tf_serving_warmup_requests"


def seed_everything(seed: int) -> None:
    """Same seed, same weights: seed Python, NumPy and TensorFlow and make TF's kernels deterministic."""
    import numpy as np
    import tensorflow as tf

    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed)
    tf.random.set_seed(seed)
    tf.config.experimental.enable_op_determinism()


def set_method_names(export_dir: Path, method_names: Mapping[str, str]) -> None:
    """Give each named signature its TF Serving method_name, in place."""
    from tensorflow.core.protobuf import saved_model_pb2

    pb_path = export_dir / "saved_model.pb"
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString(pb_path.read_bytes())
    for meta_graph in saved_model.meta_graphs:
        for name, method in method_names.items():
            if name not in meta_graph.signature_def:
                raise ValueError(f"signature {name!r} was not saved")
            meta_graph.signature_def[name].method_name = method
    pb_path.write_bytes(saved_model.SerializeToString(deterministic=True))
    _rewrite_fingerprint(export_dir)


def _rewrite_fingerprint(export_dir: Path) -> None:
    fingerprint = export_dir / "fingerprint.pb"
    try:
        from tensorflow.python.saved_model import fingerprinting_utils

        fingerprint.unlink(missing_ok=True)
        fingerprinting_utils.write_fingerprint(str(export_dir))
    except (ImportError, AttributeError, ValueError):
        # fingerprint.pb is optional metadata; a stale one would be worse than none.
        fingerprint.unlink(missing_ok=True)


def write_smoke_sample(export_dir: Path, sample: Mapping[str, Any]) -> Path:
    """Write the held-out sample later smoke tests send (see tfship.models.load_smoke_sample)."""
    path = export_dir / EXTRA_DIR / SMOKE_SAMPLE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(sample, indent=1, sort_keys=True) + "\n")
    return path


class Adam:
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


def glorot(tf, shape: list[int], seed: int, offset: int):
    """Glorot-uniform initial weights, the same for the same seed and offset."""
    limit = (6.0 / (shape[0] + shape[1])) ** 0.5
    return tf.random.stateless_uniform(shape, seed=[seed, offset], minval=-limit, maxval=limit)


def train_classifier(tf, logits, variables, features, labels, *, steps: int, learning_rate: float, log,
                     name: str) -> None:
    """Full-batch Adam on softmax cross-entropy of `logits(features)` against integer `labels`."""
    features, labels = tf.constant(features), tf.constant(labels)
    adam = Adam(tf, variables, learning_rate)

    @tf.function
    def train_step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits(features)))
        adam.apply(tape.gradient(loss, variables))
        return loss

    for step in range(1, steps + 1):
        loss = train_step()
        if step % 100 == 0:
            log(f"{name}: step {step}/{steps} loss {float(loss):.4f}")


def check_accuracy(name: str, accuracy: float, held_out: int, seed: int, minimum: float, log) -> None:
    log(f"{name}: held-out accuracy {accuracy:.4f} on {held_out} images (seed {seed})")
    if accuracy < minimum:
        raise RuntimeError(f"held-out accuracy {accuracy:.4f} is below {minimum}; try another seed")


def write_warmup_requests(export_dir: Path, predict: Mapping[str, Mapping[str, Any]],
                          classify: Mapping[str, list[Mapping[str, list[float]]]] = {},
                          regress: Mapping[str, list[Mapping[str, list[float]]]] = {}) -> Path:
    """TF Serving's warmup file: one predict request per signature in `predict` (alias -> float rows), one
    classify / regress request per signature from examples given as {feature: floats}."""
    import numpy as np
    import tensorflow as tf
    from tensorflow_serving.apis import classification_pb2, prediction_log_pb2, regression_pb2

    def examples(rows: list[Mapping[str, list[float]]]) -> list:
        return [tf.train.Example(features=tf.train.Features(feature={
            name: tf.train.Feature(float_list=tf.train.FloatList(value=values)) for name, values in row.items()}))
            for row in rows]

    logs = []
    for signature, inputs in predict.items():
        log = prediction_log_pb2.PredictionLog()
        log.predict_log.request.model_spec.signature_name = signature
        for alias, rows in inputs.items():
            log.predict_log.request.inputs[alias].CopyFrom(tf.make_tensor_proto(np.asarray(rows, np.float32)))
        logs.append(log)
    for signature, rows in classify.items():
        request = classification_pb2.ClassificationRequest()
        request.model_spec.signature_name = signature
        request.input.example_list.examples.extend(examples(rows))
        logs.append(prediction_log_pb2.PredictionLog(classify_log=prediction_log_pb2.ClassifyLog(request=request)))
    for signature, rows in regress.items():
        request = regression_pb2.RegressionRequest()
        request.model_spec.signature_name = signature
        request.input.example_list.examples.extend(examples(rows))
        logs.append(prediction_log_pb2.PredictionLog(regress_log=prediction_log_pb2.RegressLog(request=request)))
    path = export_dir / EXTRA_DIR / WARMUP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for log in logs:
            writer.write(log.SerializeToString(deterministic=True))
    return path
