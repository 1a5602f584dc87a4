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
