"""--enable_model_warmup: replay a version's recorded requests before it becomes AVAILABLE, as TF Serving does.

The requests live in `<version>/assets.extra/tf_serving_warmup_requests`: a TFRecord file of
tensorflow.serving.PredictionLog (predict, classify, regress or multi_inference logs), at most 1000 records, each
replayed once. A version without the file loads as usual; a record that fails fails the version's load. The first
real request then meets traced functions and allocated kernels instead of paying for them.
"""

from __future__ import annotations

import logging
import os
import time

import tensorflow as tf
from google.protobuf.message import DecodeError
from tensorflow_serving.apis import prediction_log_pb2

from tfship.server import inference
from tfship.server.models import DEFAULT_SIGNATURE, ModelVersion
from tfship.server.tensors import proto_to_ndarray, serialized_examples_from_input

log = logging.getLogger("tfship.server")

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_RECORDS = 1000  # TF Serving's WarmupConsts::kMaxNumRecords


def warm_up(version: ModelVersion) -> int:
    """Replay every record of the version's warmup file; the number replayed. RuntimeError when one fails."""
    path = os.path.join(version.path, WARMUP_FILE)
    if not os.path.isfile(path):
        log.info("No warmup data file found at %s", path)
        return 0
    log.info("Starting to read warmup data for model at %s", path)
    started = time.monotonic()
    count = 0
    try:
        for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
            try:
                entry = prediction_log_pb2.PredictionLog.FromString(record)
            except DecodeError:
                raise RuntimeError(f"Failed to parse warmup record {count + 1} from {path}")
            _replay(version, entry)
            count += 1
            if count > MAX_RECORDS:
                raise RuntimeError(f"Number of warmup records exceeds the maximum ({MAX_RECORDS}) at {path}")
    except tf.errors.DataLossError as error:
        raise RuntimeError(f"{path}: {error.message.splitlines()[0]}. Please verify your warmup data is in "
                           "TFRecord format.")
    log.info("Finished reading warmup data for model at %s. Number of warmup records read: %d. "
             "Elapsed time (microseconds): %d.", path, count, (time.monotonic() - started) * 1e6)
    return count


def _replay(version: ModelVersion, entry: prediction_log_pb2.PredictionLog) -> None:
    kind = entry.WhichOneof("log_type")
    if kind == "predict_log":
        request = entry.predict_log.request
        signature = version.signature(request.model_spec.signature_name)
        inputs = {alias: proto_to_ndarray(tensor, alias) for alias, tensor in request.inputs.items()}
        signature.run(inputs, list(request.output_filter))
    elif kind in ("classify_log", "regress_log"):
        request = getattr(entry, kind).request
        operation = inference.classify if kind == "classify_log" else inference.regress
        operation(version, request.model_spec.signature_name or DEFAULT_SIGNATURE,
                  serialized_examples_from_input(request.input))
    elif kind == "multi_inference_log":
        request = entry.multi_inference_log.request
        serialized = serialized_examples_from_input(request.input)
        for task in request.tasks:
            operation = inference.classify if task.method_name == inference.CLASSIFY_METHOD else inference.regress
            operation(version, task.model_spec.signature_name or DEFAULT_SIGNATURE, serialized)
    else:
        raise RuntimeError(f"Unsupported log_type for warmup: {kind}")
