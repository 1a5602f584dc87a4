"""Tensors in and out of the wire formats: TensorProto (gRPC), TF Serving's JSON (REST), tf.Example inputs."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import input_pb2

from tfship.server.status import invalid_argument

# Typed TensorProto fields, as TF Serving fills them (Tensor::AsProtoField): clients read float_val etc.
_VALUE_FIELD = {
    types_pb2.DT_FLOAT: "float_val",
    types_pb2.DT_DOUBLE: "double_val",
    types_pb2.DT_INT32: "int_val",
    types_pb2.DT_INT16: "int_val",
    types_pb2.DT_INT8: "int_val",
    types_pb2.DT_UINT8: "int_val",
    types_pb2.DT_UINT16: "int_val",
    types_pb2.DT_INT64: "int64_val",
    types_pb2.DT_UINT32: "uint32_val",
    types_pb2.DT_UINT64: "uint64_val",
    types_pb2.DT_BOOL: "bool_val",
    types_pb2.DT_STRING: "string_val",
}


def dtype_name(dtype_enum: int) -> str:
    return tf.dtypes.as_dtype(dtype_enum).name


_FAST_NUMPY_DTYPE = {
    types_pb2.DT_FLOAT: np.float32,
    types_pb2.DT_DOUBLE: np.float64,
    types_pb2.DT_INT32: np.int32,
    types_pb2.DT_INT64: np.int64,
}


def proto_to_ndarray(proto: tensor_pb2.TensorProto, alias: str) -> np.ndarray:
    numpy_dtype = _FAST_NUMPY_DTYPE.get(proto.dtype)
    shape = [dim.size for dim in proto.tensor_shape.dim]
    if numpy_dtype is not None and not proto.tensor_content:
        # The common case (typed values, e.g. float_val): a direct copy, a few times cheaper than make_ndarray.
        values = np.array(getattr(proto, _VALUE_FIELD[proto.dtype]), dtype=numpy_dtype)
        if values.size == int(np.prod(shape)):
            return values.reshape(shape)
    try:
        return tf.make_ndarray(proto)
    except Exception as error:  # noqa: BLE001 - any decoding failure is the client's malformed tensor
        raise invalid_argument(f"input tensor alias {alias}: cannot decode TensorProto: {error}")


def ndarray_to_proto(array: np.ndarray) -> tensor_pb2.TensorProto:
    dtype = tf.dtypes.as_dtype(array.dtype if array.dtype != object else tf.string)
    proto = tensor_pb2.TensorProto(dtype=dtype.as_datatype_enum)
    proto.tensor_shape.CopyFrom(
        tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=s) for s in array.shape])
    )
    field = _VALUE_FIELD.get(dtype.as_datatype_enum)
    if field is None:  # half, bfloat16, complex...: tensor_content is exact and clients decode it with make_ndarray
        return tf.make_tensor_proto(array)
    flat = array.ravel()
    if field == "string_val":
        getattr(proto, field).extend(v if isinstance(v, bytes) else str(v).encode() for v in flat)
    else:
        getattr(proto, field).extend(flat.tolist())
    return proto


# --- JSON (REST) -------------------------------------------------------------------------------------------

def _decode_b64(value: Any) -> Any:
    """Replace {"b64": "..."} objects by bytes, recursively."""
    if isinstance(value, dict):
        if set(value) == {"b64"} and isinstance(value["b64"], str):
            try:
                return base64.b64decode(value["b64"], validate=True)
            except ValueError:
                raise invalid_argument("Unable to base64 decode")
        raise invalid_argument("JSON Value is an object but not {\"b64\": ...}")
    if isinstance(value, list):
        return [_decode_b64(item) for item in value]
    return value


def json_to_ndarray(value: Any, dtype: tf.DType, alias: str) -> np.ndarray:
    """A JSON value as a tensor of the signature's dtype; like TF Serving, no lossy conversions."""
    value = _decode_b64(value)
    try:
        if dtype == tf.string:
            array = np.array(value, dtype=object)
            flat = array.ravel()
            for index, item in enumerate(flat):
                if isinstance(item, str):
                    flat[index] = item.encode()
                elif not isinstance(item, bytes):
                    raise ValueError(f"{item!r} is not a string")
            return array
        leaf_types = _leaf_types(value)
        if dtype == tf.bool:
            allowed: tuple[type, ...] = (bool,)
        elif dtype.is_integer:
            allowed = (int,)
        else:
            allowed = (int, float)
        wrong = leaf_types - set(allowed)
        if wrong:
            raise ValueError(f"{sorted(t.__name__ for t in wrong)[0]} values where {dtype.name} is expected")
        return np.array(value, dtype=dtype.as_numpy_dtype)
    except (ValueError, TypeError, OverflowError) as error:
        raise invalid_argument(f"input {alias}: cannot be read as {dtype.name} tensor: {error}")


def _leaf_types(value: Any) -> set[type]:
    if isinstance(value, list):
        found: set[type] = set()
        for item in value:
            found |= _leaf_types(item)
        return found
    return {type(value)}


# --- tf.Example inputs of classify / regress -------------------------------------------------------------

def _feature_from_json(name: str, value: Any) -> feature_pb2.Feature:
    values = value if isinstance(value, list) else [value]
    values = [_decode_b64(item) for item in values]
    feature = feature_pb2.Feature()
    if all(isinstance(item, (bytes, str)) for item in values):
        feature.bytes_list.value.extend(item if isinstance(item, bytes) else item.encode() for item in values)
    elif all(isinstance(item, int) and not isinstance(item, bool) for item in values):
        feature.int64_list.value.extend(values)
    elif all(isinstance(item, (int, float)) and not isinstance(item, bool) for item in values):
        feature.float_list.value.extend(float(item) for item in values)
    else:
        raise invalid_argument(f"feature {name}: values must be all numbers or all strings, got {value!r}")
    return feature


def example_from_json(features: Any) -> example_pb2.Example:
    if not isinstance(features, dict):
        raise invalid_argument("Example must be a JSON object of feature name to value(s)")
    example = example_pb2.Example()
    for name, value in features.items():
        example.features.feature[name].CopyFrom(_feature_from_json(name, value))
    return example


def serialized_examples_from_json(body: dict[str, Any]) -> list[bytes]:
    examples = body.get("examples")
    if not isinstance(examples, list) or not examples:
        raise invalid_argument("'examples' must be a non-empty list of objects")
    context = body.get("context")
    prefix = example_from_json(context).SerializeToString() if context is not None else b""
    # Concatenated serializations merge as protos do: the example's features win over the context's.
    return [prefix + example_from_json(item).SerializeToString() for item in examples]


def serialized_examples_from_input(request_input: input_pb2.Input) -> list[bytes]:
    kind = request_input.WhichOneof("kind")
    if kind == "example_list":
        serialized = [example.SerializeToString() for example in request_input.example_list.examples]
    elif kind == "example_list_with_context":
        with_context = request_input.example_list_with_context
        prefix = with_context.context.SerializeToString()
        serialized = [prefix + example.SerializeToString() for example in with_context.examples]
    else:
        raise invalid_argument("Input is empty")
    if not serialized:
        raise invalid_argument("Input is empty")
    return serialized
