"""The serving operations, shared by gRPC and REST: predict, classify, regress, multi-inference, metadata."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf
from google.protobuf import text_format
from tensorflow.core.framework import types_pb2

from tfship.server.models import ModelVersion, Signature
from tfship.server.rest_json import outputs_json, predictions_json
from tfship.server.rest_request import PredictBody, tensors_from_inputs, tensors_from_instances
from tfship.server.status import ServingError, invalid_argument
from tfship.server.tensors import data_type_string

CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
# The aliases classify and regress signatures must use (signature_constants.h).
CLASSIFY_INPUTS = "inputs"
CLASSIFY_CLASSES = "classes"
CLASSIFY_SCORES = "scores"
REGRESS_INPUTS = "inputs"
REGRESS_OUTPUTS = "outputs"


_JSON_WRITABLE = {np.dtype(name) for name in ("float32", "float64", "int32", "int16", "int8", "uint8", "int64", "bool",
                                              "uint32", "uint64")}


@dataclass(frozen=True)
class Classification:
    label: str
    score: float


def _tensor_shape(array: np.ndarray) -> str:
    """TensorShape::DebugString."""
    return "[" + ",".join(str(size) for size in array.shape) + "]"


def _signature_text(signature: Signature) -> str:
    """SignatureDef::DebugString, which TF Serving's signature errors quote."""
    return text_format.MessageToString(signature.definition)


def _no_signature(name: str) -> ServingError:
    return invalid_argument(f"No signature was found with the name: {name}")


def classify(version: ModelVersion, signature_name: str, serialized: list[bytes]) -> list[list[Classification]]:
    """RunClassify (classifier.cc): the signature checks of PreProcessClassification (no method-name check, TF
    Serving's default), the run, and PostProcessClassificationResult's checks of classes and scores."""
    signature = version.signature(signature_name, _no_signature)
    if len(signature.inputs) != 1:
        raise invalid_argument("Expected one input Tensor.")
    outputs = signature.definition.outputs
    if len(outputs) not in (1, 2):
        raise invalid_argument(f"Expected one or two output Tensors, found {len(outputs)}")
    if CLASSIFY_INPUTS not in signature.inputs:
        raise invalid_argument(f"No classification inputs found in SignatureDef: {_signature_text(signature)}")
    wanted = [name for name in (CLASSIFY_CLASSES, CLASSIFY_SCORES) if name in outputs]
    if not wanted:
        raise invalid_argument('Expected classification signature outputs to contain at least one of "classes" or '
                               f'"scores". Signature was: {_signature_text(signature)}')
    _require_examples(serialized)
    results = signature.run({CLASSIFY_INPUTS: np.array(serialized, dtype=object)}, wanted)
    batch = len(serialized)
    classes, scores = results.get(CLASSIFY_CLASSES), results.get(CLASSIFY_SCORES)
    for alias, array, dtype in ((CLASSIFY_CLASSES, classes, "DT_STRING"), (CLASSIFY_SCORES, scores, "DT_FLOAT")):
        if array is None:
            continue
        if array.ndim != 2:
            raise invalid_argument(f"Expected Tensor shape: [batch_size num_classes] but got {_tensor_shape(array)}")
        got = "DT_STRING" if array.dtype.kind in "OSU" else _dtype_enum_name(array)
        if got != dtype:
            raise invalid_argument(f"Expected {alias} Tensor of {dtype}. Got: {got}")
        if array.shape[0] != batch:
            raise invalid_argument(f"Expected {alias} output batch size of {batch}. Got: {array.shape[0]}")
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise invalid_argument(f"Tensors class and score should match in dim_size(1). Got {classes.shape[1]} vs. "
                               f"{scores.shape[1]}")
    width = (classes if classes is not None else scores).shape[1]  # type: ignore[union-attr]
    return [
        [Classification(label=classes[row, column].decode("utf-8", errors="replace") if classes is not None else "",
                        score=float(scores[row, column]) if scores is not None else 0.0)
         for column in range(width)]
        for row in range(batch)
    ]


def regress(version: ModelVersion, signature_name: str, serialized: list[bytes]) -> list[float]:
    """RunRegress (regressor.cc): PreProcessRegression's signature checks, the run, PostProcessRegressionResult."""
    signature = version.signature(signature_name, _no_signature)
    if len(signature.inputs) != 1:
        raise invalid_argument("Expected one input Tensor.")
    if len(signature.definition.outputs) != 1:
        raise invalid_argument("Expected one output Tensor.")
    if REGRESS_INPUTS not in signature.inputs:
        raise invalid_argument(f"No regression inputs found in SignatureDef: {_signature_text(signature)}")
    if REGRESS_OUTPUTS not in signature.definition.outputs:
        raise invalid_argument(f"No regression outputs found in SignatureDef: {_signature_text(signature)}")
    _require_examples(serialized)
    values = signature.run({REGRESS_INPUTS: np.array(serialized, dtype=object)}, [REGRESS_OUTPUTS])[REGRESS_OUTPUTS]
    batch = len(serialized)
    if not (values.ndim == 1 or (values.ndim == 2 and values.shape[1] == 1)):
        raise invalid_argument("Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got "
                               f"{_tensor_shape(values)}")
    if values.shape[0] != batch:
        raise invalid_argument(f"Input batch size did not match output batch size: {batch} vs. {values.shape[0]}")
    if values.dtype != np.float32:
        raise invalid_argument(f"Expected output Tensor of DT_FLOAT.  Got: {_dtype_enum_name(values)}")
    return [float(value) for value in values.ravel()]


def _require_examples(serialized: list[bytes]) -> None:
    if not serialized:
        raise invalid_argument("Input is empty.")


def _dtype_enum_name(array: np.ndarray) -> str:
    return types_pb2.DataType.Name(tf.dtypes.as_dtype(array.dtype).as_datatype_enum)


# --- REST predict: row ("instances") and columnar ("inputs") formats --------------------------------------

def predict_json(version: ModelVersion, body: PredictBody, may_hold_booleans: bool = True) -> bytes:
    """The response body of a REST predict (FillPredictRequestFromJson, Predict, MakeJsonFromTensors)."""
    signature = version.signature(
        body.signature_name,
        lambda name: invalid_argument(f"Serving signature name: \"{name}\" not found in signature def"))
    dtypes = {alias: spec.dtype.as_datatype_enum for alias, spec in signature.inputs.items()}
    if not dtypes:
        raise invalid_argument(f"Failed to get input map for signature: {body.signature_name or 'DEFAULT'}")
    if body.row_format:
        inputs = tensors_from_instances(body.payload, dtypes, may_hold_booleans)
    else:
        inputs = tensors_from_inputs(body.payload, dtypes, may_hold_booleans)
    outputs = signature.run(inputs)
    if not outputs:
        raise invalid_argument("Cannot convert empty tensor map to JSON")
    for array in outputs.values():  # AddSingleValueAndAdvance writes these dtypes only
        if array.dtype.kind not in "OS" and array.dtype not in _JSON_WRITABLE:
            raise invalid_argument("Failed to write JSON value for tensor type: "
                                   f"{data_type_string(tf.dtypes.as_dtype(array.dtype).as_datatype_enum)}")
    if not body.row_format:
        return outputs_json(outputs)
    batch_size = None
    for alias, array in sorted(outputs.items()):  # MakeRowFormatJsonFromTensors
        if array.ndim == 0:
            raise invalid_argument(f"Tensor name: {alias} has no shape information ")
        if batch_size is not None and array.shape[0] != batch_size:
            raise invalid_argument(f"Tensor name: {alias} has inconsistent batch size: {array.shape[0]} "
                                   f"expecting: {batch_size}")
        batch_size = array.shape[0]
    return predictions_json(outputs)
