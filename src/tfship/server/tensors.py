"""Tensors in and out of the wire formats: TensorProto (gRPC), TF Serving's JSON (REST), tf.Example inputs."""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf
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


def data_type_string(dtype_enum: int) -> str:
    """tensorflow::DataTypeString, as TF Serving's messages name dtypes: "float", "double", "half", "string"."""
    name = tf.dtypes.as_dtype(dtype_enum).name
    return {"float32": "float", "float64": "double", "float16": "half"}.get(name, name)


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
        if values.size == math.prod(shape):  # math.prod: numpy's costs more than the copy for small tensors
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


# --- tf.Example inputs of classify / regress (gRPC) ---------------------------------------------------------

def serialized_examples_from_input(request_input: input_pb2.Input) -> list[bytes]:
    kind = request_input.WhichOneof("kind")
    if kind == "example_list":
        serialized = [example.SerializeToString() for example in request_input.example_list.examples]
    elif kind == "example_list_with_context":
        with_context = request_input.example_list_with_context
        prefix = with_context.context.SerializeToString()
        serialized = [prefix + example.SerializeToString() for example in with_context.examples]
    else:
        serialized = []  # classify/regress answer "Input is empty." once the signature checks pass
    return serialized
