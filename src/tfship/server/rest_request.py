"""REST request bodies read as TF Serving reads them (tensorflow_serving/util/json_tensor.cc), same error texts.

Bodies are parsed with the stdlib json module (rapidjson in TF Serving): a failure is reported with rapidjson's
wording ("JSON Parse error: Invalid value. at offset: 0"), bytes after the document are ignored
(kParseStopWhenDoneFlag), and documents nested deeper than Python's recursion limit are parsed iteratively.
Tensors are built with FillTensorProto's rules: the shape comes from the first element at each level, every
other element must agree, and a JSON value is accepted only where its type fits the dtype without a lossy cast.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Mapping

import numpy as np
from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow.core.framework import types_pb2

from tfship.server.rest_json import PrettyWriter, _string_token
from tfship.server.status import ServingError, invalid_argument, unimplemented
from tfship.server.tensors import data_type_string

# --- parsing ----------------------------------------------------------------------------------------------

_WHITESPACE = " \t\n\r"
_MAX_DEBUG_BYTES = 256  # kMaxJsonDebugStringBytes

# rapidjson's GetParseError_En for the failures Python's json module reports.
_PARSE_ERRORS = {
    "Expecting value": "Invalid value.",
    "Expecting property name enclosed in double quotes": "Missing a name for object member.",
    "Expecting ':' delimiter": "Missing a colon after a name of object member.",
    "Unterminated string starting at": "Missing a closing quotation mark in string.",
    "Invalid control character at": "Invalid encoding in string.",
    "Invalid \\escape": "Invalid escape character in string.",
    "Invalid \\uXXXX escape": "Incorrect hex digit after \\u escape in string.",
}
_DECODER = json.JSONDecoder()
_NUMBER_TOO_BIG = "JSON Parse error: Number too big to be stored in double."
_HUGE_INTEGER = re.compile(r"\d{4300}")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")  # only then can a parsed string hold a lone surrogate
_SURROGATE = re.compile("[\ud800-\udfff]")


def parse_json_object(body: bytes) -> dict[str, Any]:
    """The request document (ParseJson): an object, else INVALID_ARGUMENT with rapidjson's message."""
    if not body:
        raise invalid_argument("JSON Parse error: The document is empty")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise invalid_argument(f"JSON Parse error: Invalid encoding in string. at offset: {error.start}")
    start = len(text) - len(text.lstrip(_WHITESPACE))
    if start == len(text):
        raise invalid_argument(f"JSON Parse error: The document is empty. at offset: {start}")
    try:
        document, _ = _DECODER.raw_decode(text, start)
    except json.JSONDecodeError as error:
        raise invalid_argument(f"JSON Parse error: {_rapidjson_message(error)} at offset: {error.pos}")
    except ValueError:  # an integer past Python's int-string limit (4300 digits): far beyond a double
        raise invalid_argument(_NUMBER_TOO_BIG)
    except RecursionError:  # rapidjson parses iteratively: deep nesting is legal JSON
        try:
            document = _parse_iteratively(text, start)
        except ValueError:  # json.loads of one token: a bad escape in a string, or a number as above
            raise invalid_argument(_NUMBER_TOO_BIG if _HUGE_INTEGER.search(text) else
                                   "JSON Parse error: Invalid escape character in string.")
    if _SURROGATE_ESCAPE.search(text) and _holds_lone_surrogate(document):
        raise invalid_argument("JSON Parse error: The surrogate pair in string is invalid.")
    if not isinstance(document, dict):
        raise format_error(document, "Is not object")
    return document


def _holds_lone_surrogate(document: Any) -> bool:
    """A string or name with half a surrogate pair (json reads "\\ud800" alone; rapidjson refuses it, and it
    cannot become UTF-8 later). Walked without recursion: documents may be deep."""
    pending = [document]
    while pending:
        value = pending.pop()
        if isinstance(value, str):
            if _SURROGATE.search(value):
                return True
        elif isinstance(value, dict):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    return False


def _rapidjson_message(error: json.JSONDecodeError) -> str:
    for python_text, rapidjson_text in _PARSE_ERRORS.items():
        if error.msg.startswith(python_text):
            return rapidjson_text
    if error.msg.startswith("Expecting ',' delimiter"):
        return ("Missing a comma or ']' after an array element." if _open_container(error.doc, error.pos) == "["
                else "Missing a comma or '}' after an object member.")
    return "Unspecific syntax error."


def _open_container(text: str, end: int) -> str:
    """The innermost bracket still open at `end` (strings skipped)."""
    stack: list[str] = []
    for match in re.finditer(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', text[:end]):
        token = match.group()
        if token in "[{":
            stack.append(token)
        elif token in "]}" and stack:
            stack.pop()
    return stack[-1] if stack else ""


_TOKEN = re.compile(r'[ \t\n\r]*(?:(\[+|\{)|(\]+|\})|(,)|(:)|("(?:[^"\\\x00-\x1f]|\\.)*")|'
                    r'(-?Infinity|NaN|true|false|null|-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?))')
_CONSTANTS = {"true": True, "false": False, "null": None}


class _ObjectFrame(list):
    """[dict, pending key]: an object being parsed (its own type, so a parsed [{}, None] list is not one)."""


def _parse_iteratively(text: str, pos: int) -> Any:
    """A JSON value without recursion, for documents too deep for the json module (never on the fast path;
    the separators are not checked again). Runs of brackets are taken at once: deep documents are mostly that."""
    stack: list[Any] = []  # open lists and _ObjectFrames
    while True:
        match = _TOKEN.match(text, pos)
        if match is None:
            raise invalid_argument(f"JSON Parse error: Invalid value. at offset: {pos}")
        pos = match.end()
        opener, closer, comma, colon, string, literal = match.groups()
        if comma or colon:
            continue
        if opener:
            if opener == "{":
                stack.append(_ObjectFrame([{}, None]))
            else:
                stack.extend([] for _ in opener)
            continue
        if closer:
            if len(stack) < len(closer):
                raise invalid_argument(f"JSON Parse error: Invalid value. at offset: {pos - 1}")
            for _ in range(len(closer) - 1):  # a run of ']': each list is the only item of the one before
                inner = stack.pop()
                stack[-1].append(inner)
            top = stack.pop()
            value = top[0] if isinstance(top, _ObjectFrame) else top
        elif string:
            value = json.loads(string)
            if stack and isinstance(stack[-1], _ObjectFrame) and stack[-1][1] is None:
                stack[-1][1] = value  # a member name
                continue
        elif literal in _CONSTANTS:
            value = _CONSTANTS[literal]
        else:
            value = json.loads(literal)
        if not stack:
            return value
        top = stack[-1]
        if isinstance(top, _ObjectFrame):
            top[0][top[1]] = value
            top[1] = None
        else:
            top.append(value)


# --- rapidjson's debug rendering of a value, for error messages ---------------------------------------------

def json_type_name(value: Any) -> str:
    """JsonTypeString."""
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


def rapidjson_double(value: float) -> str | None:
    """rapidjson Writer::Double (Grisu's shortest digits, laid out by Prettify); None for NaN/Inf, which it
    refuses to write."""
    if math.isnan(value) or math.isinf(value):
        return None
    if value == 0:
        return "-0.0" if math.copysign(1.0, value) < 0 else "0.0"
    sign = "-" if value < 0 else ""
    _, digit_tuple, exponent = Decimal(repr(abs(value))).as_tuple()  # repr: the shortest round-trip digits
    digits = "".join(map(str, digit_tuple)).lstrip("0")
    stripped = digits.rstrip("0")
    exponent = int(exponent) + len(digits) - len(stripped)
    digits = stripped
    length = len(digits)
    kk = length + exponent  # where the decimal point goes
    if exponent >= 0 and kk <= 21:
        return f"{sign}{digits}{'0' * exponent}.0"
    if 0 < kk <= 21:
        return f"{sign}{digits[:kk]}.{digits[kk:]}"
    if -6 < kk <= 0:
        return f"{sign}0.{'0' * -kk}{digits}"
    if length == 1:
        return f"{sign}{digits}e{kk - 1}"
    return f"{sign}{digits[0]}.{digits[1:]}e{kk - 1}"


def debug_string(value: Any) -> str:
    """JsonValueToDebugString: PrettyWriter with single-line arrays, cut once 256 bytes are written."""
    writer = PrettyWriter()
    writer.single_line_arrays = True
    stack: list[Any] = [iter([value])]
    closers: list[Any] = [None]

    def size() -> int:
        return sum(len(part.encode()) for part in writer.parts)

    while stack:
        try:
            item = next(stack[-1])
        except StopIteration:
            stack.pop()
            closer = closers.pop()
            if closer is not None:
                if size() >= _MAX_DEBUG_BYTES:
                    break
                closer()
            continue
        if size() >= _MAX_DEBUG_BYTES:
            break
        if isinstance(item, tuple):  # an object member: key, then value
            writer.key(item[0])
            item = item[1]
            if size() >= _MAX_DEBUG_BYTES:
                break
        if isinstance(item, dict):
            writer.start_object()
            stack.append(iter(list(item.items())))
            closers.append(writer.end_object)
        elif isinstance(item, list):
            writer.start_array()
            stack.append(iter(item))
            closers.append(writer.end_array)
        elif item is None:
            writer.raw("null")
        elif isinstance(item, bool):
            writer.raw("true" if item else "false")
        elif isinstance(item, int):
            writer.raw(str(item) if -2**63 <= item < 2**64 else rapidjson_double(float(item)) or "")
        elif isinstance(item, float):
            token = rapidjson_double(item)
            if token is None:  # Writer::Double fails on NaN/Inf: rapidjson stops writing there
                break
            writer.raw(token)
        else:
            writer.raw(_string_token(item))
    return "".join(writer.parts)


def format_error(value: Any, *message: object) -> ServingError:
    """FormatError: "JSON Value: <debug string> <message>"."""
    return invalid_argument(f"JSON Value: {debug_string(value)} " + "".join(str(part) for part in message))


# --- tensors -----------------------------------------------------------------------------------------------

_INT_RANGES = {
    types_pb2.DT_INT32: (-2**31, 2**31 - 1), types_pb2.DT_INT16: (-2**31, 2**31 - 1),
    types_pb2.DT_INT8: (-2**31, 2**31 - 1), types_pb2.DT_UINT8: (-2**31, 2**31 - 1),
    types_pb2.DT_INT64: (-2**63, 2**63 - 1), types_pb2.DT_UINT32: (0, 2**32 - 1),
    types_pb2.DT_UINT64: (0, 2**64 - 1),
}
_NUMPY = {
    types_pb2.DT_FLOAT: np.float32, types_pb2.DT_DOUBLE: np.float64, types_pb2.DT_INT32: np.int32,
    types_pb2.DT_INT16: np.int16, types_pb2.DT_INT8: np.int8, types_pb2.DT_UINT8: np.uint8,
    types_pb2.DT_INT64: np.int64, types_pb2.DT_UINT32: np.uint32, types_pb2.DT_UINT64: np.uint64,
    types_pb2.DT_BOOL: np.bool_, types_pb2.DT_STRING: object,
}


def _type_error(value: Any, dtype: int) -> ServingError:
    return invalid_argument(f"JSON Value: {debug_string(value)} Type: {json_type_name(value)} "
                            f"is not of expected type: {data_type_string(dtype)}")


def _is_base64_object(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _decode_base64_object(value: Any) -> bytes:
    if not _is_base64_object(value):
        raise invalid_argument(f"JSON Value: {debug_string(value)} not formatted correctly for base64 data")
    text = value["b64"]
    try:  # absl::Base64Unescape: standard or web-safe alphabet, padding optional
        return base64.b64decode(text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise invalid_argument("Unable to base64 decode")


def _scalar(value: Any, dtype: int) -> Any:
    """AddValueToTensor: the value if its JSON type fits dtype, else the TypeError of TF Serving."""
    if dtype in (types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
    elif dtype in _INT_RANGES:
        low, high = _INT_RANGES[dtype]
        if isinstance(value, int) and not isinstance(value, bool) and low <= value <= high:
            return value
    elif dtype == types_pb2.DT_STRING:
        if isinstance(value, str):
            return value.encode("utf-8")
    elif dtype == types_pb2.DT_BOOL:
        if isinstance(value, bool):
            return value
    else:
        raise unimplemented(f"Conversion of JSON Value: {debug_string(value)} to type: {data_type_string(dtype)}")
    raise _type_error(value, dtype)


def dense_shape(value: Any) -> list[int]:
    """GetDenseTensorShape: the length of the first element at each level."""
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _fill(value: Any, level: int, dtype: int, shape: list[int], out: list[Any]) -> None:
    """FillTensorProto."""
    rank = len(shape)
    if not isinstance(value, list):
        if level != rank:
            raise invalid_argument(f"JSON Value: {debug_string(value)} found at incorrect level: {level + 1} "
                                   f"in the JSON DOM. Expected at level: {rank}")
        if isinstance(value, dict):
            if dtype != types_pb2.DT_STRING:
                raise _type_error(value, dtype)
            out.append(_decode_base64_object(value))
        else:
            out.append(_scalar(value, dtype))
        return
    if level >= rank:
        raise invalid_argument(f"Encountered list at unexpected level: {level} expected < {rank}")
    if len(value) != shape[level]:
        raise invalid_argument(f"Encountered list at unexpected size: {len(value)} at level: {level} "
                               f"expected size: {shape[level]}")
    for item in value:
        _fill(item, level + 1, dtype, shape, out)


@dataclass
class JsonTensor:
    shape: list[int]
    values: list[Any] | np.ndarray  # flat, in row-major order

    def as_array(self, dtype: int) -> np.ndarray:
        numpy_dtype = _NUMPY[dtype]
        if isinstance(self.values, np.ndarray):
            return self.values.astype(numpy_dtype, copy=False).reshape(self.shape)
        array = np.empty(len(self.values), dtype=object) if numpy_dtype is object else None
        if array is not None:
            array[:] = self.values
        else:
            with np.errstate(over="ignore"):  # a double beyond float's range becomes inf, as static_cast does
                array = np.array(self.values, dtype=np.float64 if numpy_dtype == np.float32 else numpy_dtype)
                if numpy_dtype == np.float32:
                    array = array.astype(np.float32)
        return array.reshape(self.shape)


_FAST_KINDS = {types_pb2.DT_FLOAT: "iuf", types_pb2.DT_DOUBLE: "iuf", types_pb2.DT_INT32: "iu",
               types_pb2.DT_INT64: "iu"}


def json_tensor(value: Any, dtype: int, may_hold_booleans: bool = True, slow_path: bool = True) -> Any:
    """A JSON value as a tensor of dtype (GetDenseTensorShape + FillTensorProto). Numbers take a numpy fast path
    when the body has no true/false (numpy would read booleans as numbers) and the array is rectangular; without
    slow_path, None when that fast path does not apply."""
    shape = dense_shape(value)
    if dtype in _FAST_KINDS and not may_hold_booleans and shape and shape[-1]:
        try:
            array = np.array(value)
        except (ValueError, OverflowError):
            array = None
        if array is not None and array.dtype.kind in _FAST_KINDS[dtype] and list(array.shape) == shape:
            low, high = _INT_RANGES.get(dtype, (None, None))
            if low is None or (array.min() >= low and array.max() <= high):
                return JsonTensor(shape, array.ravel())
    if not slow_path:
        return None
    values: list[Any] = []
    try:
        _fill(value, 0, dtype, shape, values)
    except RecursionError:
        raise invalid_argument("JSON value nested too deeply")
    return JsonTensor(shape, values)


def _shape_text(shape: list[int]) -> str:
    return "[" + ",".join(str(size) for size in shape) + "]"


def _status_text(error: ServingError) -> str:
    """absl::Status::ToString of a nested error."""
    return f"{error.code.name}: {error.message}"


def tensors_from_instances(instances: list[Any], dtypes: Mapping[str, int],
                           may_hold_booleans: bool = True) -> dict[str, np.ndarray]:
    """FillTensorMapFromInstancesList (row format): one tensor per input, batched over the instances."""
    first = instances[0]
    if not isinstance(first, dict) and len(dtypes) > 1:
        raise invalid_argument("instances is a plain list, but expecting list of objects as multiple input tensors "
                               "required as per tensorinfo_map")

    def is_element_object(item: Any) -> bool:
        return isinstance(item, dict) and not _is_base64_object(item)

    elements_are_objects = is_element_object(first)
    input_names = sorted(dtypes)
    if not elements_are_objects and not may_hold_booleans:
        # A rectangular list of numbers passes every per-instance check: take it whole (the common case).
        whole = json_tensor(instances, dtypes[input_names[0]], may_hold_booleans=False, slow_path=False)
        if whole is not None:
            return {input_names[0]: whole.as_array(dtypes[input_names[0]])}
    sizes: dict[str, int] = {}
    shapes: dict[str, list[int]] = {}
    parts: dict[str, list[JsonTensor]] = {}

    def add_item(item: Any, name: str) -> None:  # AddInstanceItem
        if name not in dtypes:
            raise invalid_argument(f"JSON object: does not have named input: {name}")
        tensor = json_tensor(item, dtypes[name], may_hold_booleans)
        size = len(tensor.values)
        if name not in sizes:
            sizes[name] = size
            shapes[name] = tensor.shape
        elif sizes[name] != size:
            raise invalid_argument(f"Expecting tensor size: {sizes[name]} but got: {size}")
        elif shapes[name] != tensor.shape:
            raise invalid_argument(f"Expecting shape {_shape_text(shapes[name])} but got: {_shape_text(tensor.shape)}")
        parts.setdefault(name, []).append(tensor)

    for count, element in enumerate(instances):
        if elements_are_objects:
            if not is_element_object(element):
                raise invalid_argument(f"Expecting object but got list at item {count} of input list")
            for name, item in element.items():
                try:
                    add_item(item, name)
                except ServingError as error:
                    raise invalid_argument(f"Failed to process element: {count} key: {name} of 'instances' list. "
                                           f"Error: {_status_text(error)}")
            if sorted(element) != input_names:
                raise invalid_argument(f"Failed to process element: {count} of 'instances' list. JSON object: "
                                       f"{debug_string(element)} keys must be equal to: {','.join(input_names)}")
        else:
            if is_element_object(element):
                raise invalid_argument(f"Expecting value/list but got object at item {count} of input list")
            name = input_names[0]
            try:
                add_item(element, name)
            except ServingError as error:
                raise invalid_argument(f"Failed to process element: {count} of 'instances' list. "
                                       f"Error: {_status_text(error)}")
    tensors = {}
    for name, pieces in parts.items():
        arrays = [piece.as_array(dtypes[name]) for piece in pieces]
        tensors[name] = np.stack(arrays) if arrays else np.empty([0], dtype=_NUMPY[dtypes[name]])
    return tensors


def tensors_from_inputs(inputs: Any, dtypes: Mapping[str, int],
                        may_hold_booleans: bool = True) -> dict[str, np.ndarray]:
    """FillTensorMapFromInputsMap (columnar format): each input given whole; keys beyond the signature's are
    ignored, as TF Serving ignores them."""
    if not isinstance(inputs, dict) or _is_base64_object(inputs):
        if len(dtypes) > 1:
            raise invalid_argument("inputs is a plain value/list, but expecting an object as multiple input tensors "
                                   "required as per tensorinfo_map")
        name = next(iter(sorted(dtypes)))
        return {name: json_tensor(inputs, dtypes[name], may_hold_booleans).as_array(dtypes[name])}
    tensors = {}
    for name in sorted(dtypes):
        if name not in inputs:
            raise invalid_argument(f"Missing named input: {name} in 'inputs' object.")
        tensors[name] = json_tensor(inputs[name], dtypes[name], may_hold_booleans).as_array(dtypes[name])
    return tensors


def signature_name_of(document: dict[str, Any]) -> str:
    """FillSignature: the optional "signature_name", which must be a string."""
    if "signature_name" not in document:
        return ""
    name = document["signature_name"]
    if not isinstance(name, str):
        raise format_error(document, "not formatted correctly. 'signature_name' key must be a string value.")
    return name


@dataclass
class PredictBody:
    signature_name: str
    row_format: bool  # "instances" (answered with "predictions") or "inputs" (answered with "outputs")
    payload: Any


def predict_body(document: dict[str, Any]) -> PredictBody:
    """The format checks of FillPredictRequestFromJson that need no signature."""
    signature_name = signature_name_of(document)
    if "instances" in document:
        if "inputs" in document:
            raise format_error(document, "Not formatted correctly expecting only one of 'inputs' or 'instances' "
                                         "keys to exist ")
        instances = document["instances"]
        if not isinstance(instances, list):
            raise format_error(document, "Expecting 'instances' to be an list/array")
        if not instances:
            raise format_error(document, "No values in 'instances' array")
        return PredictBody(signature_name, True, instances)
    if "inputs" in document:
        return PredictBody(signature_name, False, document["inputs"])
    raise invalid_argument("Missing 'inputs' or 'instances' key")


# --- tf.Example inputs of classify and regress --------------------------------------------------------------

_KIND_NAMES = {"bytes_list": "bytes", "float_list": "float", "int64_list": "int64", None: "UNKNOWN"}


def _add_to_feature(value: Any, name: str, feature: feature_pb2.Feature) -> None:
    """AddValueToFeature."""
    kind = feature.WhichOneof("kind")

    def require(wanted: str) -> None:
        if kind not in (None, wanted):
            raise invalid_argument(f"Unexpected element type in feature: {name} expecting type: {_KIND_NAMES[kind]}")

    if value is None or isinstance(value, list) or (isinstance(value, dict) and not _is_base64_object(value)):
        raise invalid_argument(f"Feature: {name} has element with unexpected JSON type: {json_type_name(value)}")
    if isinstance(value, bool):
        require("int64_list")
        feature.int64_list.value.append(1 if value else 0)
    elif isinstance(value, dict):
        require("bytes_list")
        feature.bytes_list.value.append(_decode_base64_object(value))
    elif isinstance(value, str):
        require("bytes_list")
        feature.bytes_list.value.append(value.encode("utf-8"))
    elif isinstance(value, float) or value >= 2**64 or value < -2**63:  # rapidjson keeps such numbers as doubles
        require("float_list")
        feature.float_list.value.append(float(value))
    else:
        require("int64_list")
        if value >= 2**63:
            raise invalid_argument(f"Feature: {name} has uint64_t element. Only int64_t is supported.")
        feature.int64_list.value.append(value)


def example_from_json(value: Any) -> example_pb2.Example:
    """MakeExampleFromJsonObject."""
    if not isinstance(value, dict):
        raise invalid_argument(f"Example must be JSON object but got JSON {json_type_name(value)}")
    example = example_pb2.Example()
    for name, content in value.items():
        feature = feature_pb2.Feature()
        for item in (content if isinstance(content, list) else [content]):
            _add_to_feature(item, name, feature)
        example.features.feature[name].CopyFrom(feature)
    return example


@dataclass
class ExamplesBody:
    signature_name: str
    serialized: list[bytes]  # context (if any) + example, concatenated: proto merge, the example's features win


def examples_body(document: dict[str, Any]) -> ExamplesBody:
    """FillClassifyRegressRequestFromJson."""
    signature_name = signature_name_of(document)
    prefix = b""
    if "context" in document:
        prefix = example_from_json(document["context"]).SerializeToString()
    if "examples" not in document:
        raise format_error(document, "When method is classify, key 'examples' is expected and was not found")
    examples = document["examples"]
    if not isinstance(examples, list):
        raise format_error(document, "Expecting 'examples' value to be an list/array")
    if not examples:
        raise format_error(document, "'examples' value is an empty array")
    return ExamplesBody(signature_name, [prefix + example_from_json(item).SerializeToString() for item in examples])
