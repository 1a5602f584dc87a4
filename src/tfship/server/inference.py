"""The serving operations, shared by gRPC and REST: predict, classify, regress, multi-inference, metadata."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from tfship.server.models import DEFAULT_SIGNATURE, ModelVersion
from tfship.server.status import invalid_argument
from tfship.server.rest_json import outputs_json, predictions_json
from tfship.server.tensors import json_to_ndarray

CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"


@dataclass(frozen=True)
class Classification:
    label: str
    score: float


def _single_input_alias(version: ModelVersion, signature_name: str, method: str, kind: str) -> str:
    signature = version.signature(signature_name)
    if signature.method_name != method:
        raise invalid_argument(
            f"Expected {kind} signature method_name to be {method}. Was: {signature.method_name}"
        )
    if len(signature.inputs) != 1:
        raise invalid_argument("Expected one input Tensor.")
    return next(iter(signature.inputs))


def classify(version: ModelVersion, signature_name: str, serialized: list[bytes]) -> list[list[Classification]]:
    alias = _single_input_alias(version, signature_name, CLASSIFY_METHOD, "classification")
    signature = version.signature(signature_name)
    wanted = [name for name in ("classes", "scores") if name in signature.definition.outputs]
    if not wanted:
        raise invalid_argument("Expected classification signature outputs to contain classes or scores.")
    outputs = signature.run({alias: np.array(serialized, dtype=object)}, wanted)
    batch = len(serialized)
    classes = _as_batch_matrix(outputs.get("classes"), batch, "classes")
    scores = _as_batch_matrix(outputs.get("scores"), batch, "scores")
    if classes is not None and scores is not None and classes.shape != scores.shape:
        raise invalid_argument(f"Tensors class and score should match in shape: {classes.shape} vs {scores.shape}")
    width = (classes if classes is not None else scores).shape[1]  # type: ignore[union-attr]
    results = []
    for row in range(batch):
        results.append([
            Classification(
                label=classes[row, column].decode("utf-8", errors="replace") if classes is not None else "",
                score=float(scores[row, column]) if scores is not None else 0.0,
            )
            for column in range(width)
        ])
    return results


def regress(version: ModelVersion, signature_name: str, serialized: list[bytes]) -> list[float]:
    alias = _single_input_alias(version, signature_name, REGRESS_METHOD, "regression")
    signature = version.signature(signature_name)
    if "outputs" not in signature.definition.outputs:
        raise invalid_argument("No output tensor named outputs found in signature.")
    values = signature.run({alias: np.array(serialized, dtype=object)}, ["outputs"])["outputs"]
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1 or values.shape[0] != len(serialized):
        raise invalid_argument(f"Expected output Tensor shape to be [batch_size] or [batch_size, 1] but got "
                               f"{list(values.shape)}")
    return [float(value) for value in values]


def _as_batch_matrix(array: np.ndarray | None, batch: int, alias: str) -> np.ndarray | None:
    if array is None:
        return None
    if array.ndim == 1:
        array = array.reshape(-1, 1)
    if array.ndim != 2 or array.shape[0] != batch:
        raise invalid_argument(f"Expected Tensor shape: [{batch} num_classes] but got {list(array.shape)} for "
                               f"{alias}")
    return array


# --- REST predict: row ("instances") and columnar ("inputs") formats --------------------------------------

def predict_json(version: ModelVersion, body: dict[str, Any]) -> bytes:
    """The response body of a REST predict: {"predictions": rows} or {"outputs": columns}."""
    signature_name = body.get("signature_name") or DEFAULT_SIGNATURE
    if not isinstance(signature_name, str):
        raise invalid_argument("'signature_name' must be a string")
    signature = version.signature(signature_name)
    has_rows, has_columns = "instances" in body, "inputs" in body
    if has_rows == has_columns:
        raise invalid_argument("Missing 'inputs' or 'instances' key" if not has_rows
                               else "Not formatted correctly: 'instances' and 'inputs' both present")
    aliases = sorted(signature.inputs)
    if has_rows:
        inputs = _row_inputs(body["instances"], signature.inputs, aliases)
    else:
        inputs = _columnar_inputs(body["inputs"], signature.inputs, aliases)
    outputs = signature.run(inputs)
    if has_columns:
        return outputs_json(outputs)
    batch_sizes = {array.shape[0] if array.ndim else None for array in outputs.values()}
    if len(batch_sizes) != 1 or None in batch_sizes:
        raise invalid_argument("Output tensors do not share a batch dimension: use the columnar 'inputs' format")
    return predictions_json(outputs)


def _row_inputs(instances: Any, specs: dict[str, Any], aliases: Sequence[str]) -> dict[str, np.ndarray]:
    if not isinstance(instances, list) or not instances:
        raise invalid_argument("'instances' must be a non-empty list")
    named = [isinstance(item, dict) and not (set(item) == {"b64"}) for item in instances]
    if all(named):
        columns: dict[str, list[Any]] = {alias: [] for alias in instances[0]}
        for item in instances:
            if set(item) != set(columns):
                raise invalid_argument("Expecting all instances to have the same named inputs "
                                       f"{sorted(columns)}, got {sorted(item)}")
            for alias, value in item.items():
                columns[alias].append(value)
        for alias in columns:
            if alias not in specs:
                raise invalid_argument(f"input tensor alias not found in signature: {alias}. "
                                       f"Inputs expected to be in the set {{{','.join(aliases)}}}.")
        return {alias: _stack(values, specs[alias].dtype, alias) for alias, values in columns.items()}
    if any(named):
        raise invalid_argument("Expecting all instances to be either objects (named inputs) or values")
    if len(aliases) != 1:
        raise invalid_argument(f"The signature has {len(aliases)} inputs {list(aliases)}: "
                               "instances must be objects naming each input")
    return {aliases[0]: _stack(instances, specs[aliases[0]].dtype, aliases[0])}


def _stack(values: list[Any], dtype: Any, alias: str) -> np.ndarray:
    array = json_to_ndarray(values, dtype, alias)
    if array.dtype == object and array.ndim == 0:
        raise invalid_argument(f"input {alias}: instances have different shapes")
    return array


def _columnar_inputs(columns: Any, specs: dict[str, Any], aliases: Sequence[str]) -> dict[str, np.ndarray]:
    if isinstance(columns, dict) and not set(columns) == {"b64"}:
        for alias in columns:
            if alias not in specs:
                raise invalid_argument(f"input tensor alias not found in signature: {alias}. "
                                       f"Inputs expected to be in the set {{{','.join(aliases)}}}.")
        return {alias: json_to_ndarray(value, specs[alias].dtype, alias) for alias, value in columns.items()}
    if len(aliases) != 1:
        raise invalid_argument(f"The signature has {len(aliases)} inputs {list(aliases)}: "
                               "'inputs' must be an object naming each input")
    return {aliases[0]: json_to_ndarray(columns, specs[aliases[0]].dtype, aliases[0])}
