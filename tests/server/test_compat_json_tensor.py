"""TF Serving's tensorflow_serving/util/json_tensor_test.cc, ported: REST bodies in and out of tensors, against the
real server on loopback. Where the C++ test fills a TensorProto from a made-up signature, the server here serves
tests' echo model (tiny_models.save_echo_model) with the same signatures, so its answer shows the tensor it built.
The classify/regress request tests use TF Serving's half_plus_two (testdata)."""

from __future__ import annotations

import json
import math
from typing import Any, Iterator

import numpy as np
import pytest
import requests

from server_harness import HALF_PLUS_TWO, ServerProcess, require_testdata
from tiny_models import save_echo_model

TIMEOUT = 30.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    require_testdata()
    workdir = tmp_path_factory.mktemp("json_tensor")
    save_echo_model(str(workdir / "echo"), 1)
    config = workdir / "models.config"
    config.write_text(f'model_config_list {{ config {{ name: "echo" base_path: "{workdir / "echo"}" }} '
                      f'config {{ name: "half" base_path: "{HALF_PLUS_TWO}" }} }}\n')
    process = ServerProcess([f"--model_config_file={config}"], workdir / "server.log")
    process.wait_ready()
    yield process
    assert process.stop() == 0


def _post(server: ServerProcess, body: Any, model: str = "echo", verb: str = "predict") -> requests.Response:
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return requests.post(f"{server.rest_url}/v1/models/{model}:{verb}", data=data, timeout=TIMEOUT)


def _ok(server: ServerProcess, body: Any, **kwargs: Any) -> Any:
    reply = _post(server, body, **kwargs)
    assert reply.status_code == 200, reply.text
    return reply.json()


def _error(server: ServerProcess, body: Any, status: int = 400, **kwargs: Any) -> str:
    reply = _post(server, body, **kwargs)
    assert reply.status_code == status, reply.text
    return reply.json()["error"]


# --- FillPredictRequestFromJson: tensors from "instances" and "inputs" --------------------------------------

def test_single_unnamed_tensor(server: ServerProcess) -> None:  # SingleUnnamedTensor
    assert _ok(server, '{"instances": [[1,2],[3,4],[5,6]]}') == {"predictions": [[1, 2], [3, 4], [5, 6]]}


def test_deeply_nested_well_formed(server: ServerProcess) -> None:  # DeeplyNestedWellFormed
    body = '{"signature_name": "int32", "instances":[1], "nested":' + "[" * 500000 + "]" * 500000 + "}"
    assert _ok(server, body) == {"predictions": [1]}


def test_deeply_nested_malformed(server: ServerProcess) -> None:  # DeeplyNestedMalformed
    body = '{"signature_name":' + "[" * 500000 + "]" * 500000 + "}"
    assert "key must be a string value" in _error(server, body)


def test_mixed_input_for_float_tensor(server: ServerProcess) -> None:  # MixedInputForFloatTensor
    reply = _post(server, '{"signature_name": "float32", "instances": [1, 2.0, 3, 4, 5.003, 0.007, 0.0]}')
    assert reply.json() == {"predictions": [1.0, 2.0, 3.0, 4.0, 5.003, 0.007, 0.0]}
    assert b"[1.0, 2.0, 3.0, 4.0, 5.003, 0.007, 0.0\n" in reply.content  # WriteDecimal: no float noise


def test_mixed_input_for_double_tensor(server: ServerProcess) -> None:  # MixedInputForDoubleTensor
    reply = _ok(server, '{"signature_name": "float64", "instances": [1.0, 2, 3, 4, 0.662, 0, 0.0]}')
    assert reply == {"predictions": [1.0, 2.0, 3.0, 4.0, 0.662, 0.0, 0.0]}


def test_float_tensor_with_precision_loss(server: ServerProcess) -> None:  # FloatTensorWithPrecisionLoss
    for literal in ("1435774380", "1435774380.0"):
        reply = _ok(server, f'{{"signature_name": "float32", "instances": [{literal}]}}')
        assert np.float32(reply["predictions"][0]) == np.float32(1435774380)  # the float nearest, both ways


def test_float_tensor_that_exceeds_max_returns_inf(server: ServerProcess) -> None:
    # FloatTensorThatExceedsMaxReturnsInf
    assert _ok(server, '{"signature_name": "float32", "instances": [1.79769e+308]}') == {"predictions": [math.inf]}
    assert _ok(server, '{"signature_name": "float32", "instances": [-1.79769e+308]}') == {"predictions": [-math.inf]}


def test_float_tensor_that_exceeds_min_returns_zero(server: ServerProcess) -> None:
    # FloatTensorThatExceedsMinReturnsZero
    positive = _ok(server, '{"signature_name": "float32", "instances": [2.22507e-308]}')["predictions"][0]
    negative = _ok(server, '{"signature_name": "float32", "instances": [-2.22507e-308]}')["predictions"][0]
    assert (positive, math.copysign(1, positive)) == (0.0, 1)
    assert (negative, math.copysign(1, negative)) == (0.0, -1)


def test_single_unnamed_tensor_with_signature(server: ServerProcess) -> None:  # SingleUnnamedTensorWithSignature
    assert _ok(server, {"signature_name": "int32", "instances": [[1, 2]]}) == {"predictions": [[1, 2]]}


def test_tensor_from_non_null_terminated_buffer(server: ServerProcess) -> None:
    # TensorFromNonNullTerminatedBuffer: bytes after the document are not read (kParseStopWhenDoneFlag)
    assert _ok(server, '{"instances": [[1,2],[3,4],[5,6]]}X') == {"predictions": [[1, 2], [3, 4], [5, 6]]}


def test_single_unnamed_tensor_base64_scalars(server: ServerProcess) -> None:  # SingleUnnamedTensorBase64Scalars
    body = {"signature_name": "string", "instances": [{"b64": "aGVsbG8="}, {"b64": "d29ybGQ="}]}
    assert _ok(server, body) == {"predictions": ["hello", "world"]}


def test_single_unnamed_tensor_base64_lists(server: ServerProcess) -> None:  # SingleUnnamedTensorBase64Lists
    body = {"signature_name": "string", "instances": [[{"b64": "aGVsbG8="}], [{"b64": "d29ybGQ="}]]}
    assert _ok(server, body) == {"predictions": [["hello"], ["world"]]}


def test_single_named_tensor_base64(server: ServerProcess) -> None:  # SingleNamedTensorBase64
    body = {"signature_name": "string",
            "instances": [{"default": [[{"b64": "aGVsbG8="}], [{"b64": "d29ybGQ="}]]}]}
    assert _ok(server, body) == {"predictions": [[["hello"], ["world"]]]}  # shape [1, 2, 1]


def test_multiple_named_tensor(server: ServerProcess) -> None:  # MultipleNamedTensor
    body = """{"signature_name": "four", "instances": [
        {"int_tensor": [[1,2],[3,4],[5,6]], "str_tensor": ["foo", "bar"], "float_tensor": [1.0, NaN],
         "dbl_tensor": [NaN]},
        {"int_tensor": [[7,8],[9,0],[1,2]], "str_tensor": ["baz", "bat"], "float_tensor": [2.0, Infinity],
         "dbl_tensor": [2.0]}]}"""
    first, second = _ok(server, body)["predictions"]
    assert first["int_tensor"] == [[1, 2], [3, 4], [5, 6]] and second["int_tensor"] == [[7, 8], [9, 0], [1, 2]]
    assert (first["str_tensor"], second["str_tensor"]) == (["foo", "bar"], ["baz", "bat"])
    assert first["float_tensor"][0] == 1.0 and math.isnan(first["float_tensor"][1])
    assert second["float_tensor"] == [2.0, math.inf]
    assert math.isnan(first["dbl_tensor"][0]) and second["dbl_tensor"] == [2.0]


def test_single_unnamed_tensor_columnar_format(server: ServerProcess) -> None:  # SingleUnnamedTensorColumnarFormat
    expected = {"outputs": [[[1, 2], [3, 4], [5, 6]]]}  # shape [1, 3, 2]
    assert _ok(server, {"inputs": {"default": [[[1, 2], [3, 4], [5, 6]]]}}) == expected
    assert _ok(server, {"inputs": [[[1, 2], [3, 4], [5, 6]]]}) == expected  # the one input need not be named


def test_multiple_named_tensor_columnar_format(server: ServerProcess) -> None:
    # MultipleNamedTensorColumnarFormat
    body = {"signature_name": "with_bin", "inputs": {
        "int_tensor": [[[1, 2], [3, 4], [5, 6]]], "str_tensor": ["foo", "bar"], "bin_tensor": {"b64": "aGVsbG8="}}}
    assert _ok(server, body) == {"outputs": {
        "bin_tensor": "hello", "int_tensor": [[[1, 2], [3, 4], [5, 6]]], "str_tensor": ["foo", "bar"]}}


@pytest.mark.parametrize(("body", "expected"), [  # SingleUnnamedTensorErrors
    ("", "JSON Parse error: The document is empty"),
    ('{"signature_name": 5, "instances": [[1,2],[3,4],[5,6,7]]}', "must be a string value"),
    ('{"instances": [[1,2],[3,4],[5,6,7]], "inputs": [[1,2],[3,4],[5,6,7]]}', "Not formatted correctly"),
    ('{"instances": [[1,2],[3,4],[5,6,7]]}', "Expecting tensor size"),
    ('{"instances": [[1,2],[3,4],[[5,6]]]}', "Expecting shape"),
    ('{"instances": [1, [1]]}', "Expecting shape"),
    ('{"instances": [[1,2],["a", "b"]]}', "not of expected type"),
])
def test_single_unnamed_tensor_errors(server: ServerProcess, body: str, expected: str) -> None:
    assert expected in _error(server, body)


def test_single_unnamed_tensor_errors_word_for_word(server: ServerProcess) -> None:
    """The texts json_tensor.cc builds (FillTensorMapFromInstancesList, AddInstanceItem, TypeError)."""
    assert _error(server, '{"instances": [[1,2],[3,4],[5,6,7]]}') == (
        "Failed to process element: 2 of 'instances' list. Error: INVALID_ARGUMENT: Expecting tensor size: 2 "
        "but got: 3")
    assert _error(server, '{"instances": [[1,2],[3,4],[[5,6]]]}') == (
        "Failed to process element: 2 of 'instances' list. Error: INVALID_ARGUMENT: Expecting shape [2] but got: "
        "[1,2]")
    assert _error(server, '{"instances": [[1,2],["a", "b"]]}') == (
        "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: JSON Value: \"a\" Type: String "
        "is not of expected type: int32")
    assert _error(server, '{"instances": [1.5]}') == (
        "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: JSON Value: 1.5 Type: Number "
        "is not of expected type: int32")
    assert _error(server, '{"instances": [], "x": 1}') == 'JSON Value: {\n    "instances": [],\n    "x": 1\n} ' \
                                                          "No values in 'instances' array"
    assert _error(server, '{"instances": 1}') == 'JSON Value: {\n    "instances": 1\n} ' \
                                                 "Expecting 'instances' to be an list/array"
    assert _error(server, '{"instance": [1]}') == "Missing 'inputs' or 'instances' key"
    assert _error(server, "instances = [1, 2]") == "JSON Parse error: Invalid value. at offset: 0"
    assert _error(server, "[1]") == "JSON Value: [1] Is not object"
    assert _error(server, '{"inputs": [[1], 2]}') == \
        "JSON Value: 2 found at incorrect level: 2 in the JSON DOM. Expected at level: 2"
    assert _error(server, '{"inputs": [[1], [2, 3]]}') == \
        "Encountered list at unexpected size: 2 at level: 1 expected size: 1"
    assert _error(server, '{"inputs": [1, [2]]}') == "Encountered list at unexpected level: 1 expected < 1"


@pytest.mark.parametrize(("body", "expected"), [  # MultipleNamedTensorErrors
    ({"signature_name": "int_str", "instances": [
        {"int_tensor": [[1, 2], [3, 4], [5, 6]], "str_tensor": ["foo", "bar"]},
        {"int_tensor": [[[7, 8], [9, 0], [1, 2]]], "str_tensor": ["baz", "bat"]}]}, "Expecting shape"),
    ({"signature_name": "int_str", "instances": [
        {"int_tensor": [[1, 2], [3, 4], [5, 6], [7, 8]], "str_tensor": ["foo", "bar"]},
        {"int_tensor": [[7, 8], [9, 0], [1, 2]], "str_tensor": ["baz", "bat"]}]}, "Expecting tensor size"),
    ({"signature_name": "int_str", "instances": [
        {"int_tensor": [[1, 2], [3, 4], [5, 6]], "str_tensor": ["foo", "bar"]},
        [1, 20, 30],
        {"int_tensor": [[[7, 8], [9, 0], [1, 2]]], "str_tensor": ["baz", "bat"]}]}, "Expecting object but got list"),
    ({"signature_name": "str_only", "instances": [["baz", "bar"], {"str_tensor": ["baz", "bat"]}]},
     "Expecting value/list but got object"),
    ({"signature_name": "int_str", "instances": [[1, 2]]},
     "instances is a plain list, but expecting list of objects as multiple input tensors required as per "
     "tensorinfo_map"),
    ({"signature_name": "int_str", "inputs": [1, 2]},
     "inputs is a plain value/list, but expecting an object as multiple input tensors required as per "
     "tensorinfo_map"),
    ({"signature_name": "int_str", "inputs": {"int_tensor": [1]}},
     "Missing named input: str_tensor in 'inputs' object."),
    ({"signature_name": "int_str", "instances": [{"int_tensor": [1]}]},
     "Failed to process element: 0 of 'instances' list. JSON object: {\n    \"int_tensor\": [1]\n} keys must be "
     "equal to: int_tensor,str_tensor"),
    ({"signature_name": "str_only", "instances": [{"str_tensor": "a", "extra": 1}]},
     "Failed to process element: 0 key: extra of 'instances' list. Error: INVALID_ARGUMENT: JSON object: does not "
     "have named input: extra"),
])
def test_multiple_named_tensor_errors(server: ServerProcess, body: Any, expected: str) -> None:
    assert expected in _error(server, body)


def test_base64_errors(server: ServerProcess) -> None:
    """JsonDecodeBase64Object and IsValBase64Object."""
    assert _error(server, {"signature_name": "string", "instances": [{"b64": "!!!"}]}).endswith(
        "Error: INVALID_ARGUMENT: Unable to base64 decode")
    assert "Type: Object is not of expected type: float" in _error(
        server, {"signature_name": "float32", "instances": [{"b64": "AAAA"}]})
    assert _error(server, {"signature_name": "string", "inputs": [{"b64": "AA==", "x": 1}]}) == \
        'JSON Value: {\n    "b64": "AA==",\n    "x": 1\n} not formatted correctly for base64 data'


def test_unsupported_dtype_is_unimplemented(server: ServerProcess) -> None:
    """AddValueToTensor: a dtype JSON cannot fill is UNIMPLEMENTED (501 on its own, wrapped in the
    INVALID_ARGUMENT of the 'instances' list otherwise)."""
    assert _error(server, {"signature_name": "half", "inputs": [1.0]}, status=501) == \
        "Conversion of JSON Value: 1.0 to type: half"
    assert _error(server, {"signature_name": "half", "instances": [1.0]}) == (
        "Failed to process element: 0 of 'instances' list. Error: UNIMPLEMENTED: Conversion of JSON Value: 1.0 "
        "to type: half")


# --- MakeJsonFromTensors: answers in the row and columnar formats --------------------------------------------

def test_from_json_single_tensor(server: ServerProcess) -> None:  # FromJsonSingleTensor
    values = [[[1, 2], [3, 4]], [[5, 6], [7, 8]]]
    assert _ok(server, {"instances": values}) == {"predictions": values}
    assert _ok(server, {"inputs": values}) == {"outputs": values}


def test_from_json_single_scalar_tensor(server: ServerProcess) -> None:  # FromJsonSingleScalarTensor
    assert _ok(server, {"instances": [1, 2, 3, 4, 5]}) == {"predictions": [1, 2, 3, 4, 5]}
    assert _ok(server, {"inputs": [1, 2, 3, 4, 5]}) == {"outputs": [1, 2, 3, 4, 5]}


def test_from_json_single_bytes_tensor(server: ServerProcess) -> None:  # FromJsonSingleBytesTensor
    body = {"signature_name": "bytes_out", "instances": [[{"b64": "aGVsbG8="}, {"b64": "d29ybGQ="}],
                                                         [{"b64": "dGY="}, {"b64": "c2VydmluZw=="}]]}
    assert _ok(server, body) == {"predictions": [[{"b64": "aGVsbG8="}, {"b64": "d29ybGQ="}],
                                                 [{"b64": "dGY="}, {"b64": "c2VydmluZw=="}]]}


def test_from_json_single_float_tensor_six_digit_precision(server: ServerProcess) -> None:
    # FromJsonSingleFloatTensorSixDigitPrecision (compared as text, as CompareJsonAllValuesAsStrings does)
    body = '{"signature_name": "float32", "instances": [[9000000, 999999, 0.50000], [.0003, .00003, 555557.5]]}'
    body = body.replace("[.0003, .00003", "[0.0003, 0.00003")  # JSON needs the leading 0; the floats are the same
    reply = _post(server, body)
    assert reply.content == b'{\n    "predictions": [[9e+06, 999999.0, 0.5], [0.0003, 3e-05, 555557.5]\n    ]\n}'


def test_from_json_single_float_tensor_non_finite(server: ServerProcess) -> None:
    # FromJsonSingleFloatTensorNonFinite
    reply = _post(server, '{"signature_name": "float32", "instances": [[NaN, Infinity], [3, -Infinity]]}')
    assert reply.content == b'{\n    "predictions": [[NaN, Infinity], [3.0, -Infinity]\n    ]\n}'


def test_from_json_single_tensor_errors(server: ServerProcess) -> None:  # FromJsonSingleTensorErrors
    assert _error(server, {"signature_name": "complex_out", "inputs": [1.0]}) == \
        "Failed to write JSON value for tensor type: complex64"
    assert _error(server, {"signature_name": "scalar_out", "instances": [1.0, 2.0]}) == \
        "Tensor name: sum has no shape information "
    assert _ok(server, {"signature_name": "scalar_out", "inputs": [1.0, 2.0]}) == {"outputs": 3.0}


def test_from_json_multiple_named_tensors(server: ServerProcess) -> None:  # FromJsonMultipleNamedTensors
    body = {"signature_name": "four", "instances": [
        {"int_tensor": [[1, 2], [3, 4], [5, 6]], "str_tensor": ["foo", "bar"], "float_tensor": [1.0],
         "dbl_tensor": 8.0},
        {"int_tensor": [[7, 8], [9, 0], [1, 2]], "str_tensor": ["baz", "bat"], "float_tensor": [2.0],
         "dbl_tensor": 9.0}]}
    assert _ok(server, body) == {"predictions": [
        {"dbl_tensor": 8.0, "float_tensor": [1.0], "int_tensor": [[1, 2], [3, 4], [5, 6]],
         "str_tensor": ["foo", "bar"]},
        {"dbl_tensor": 9.0, "float_tensor": [2.0], "int_tensor": [[7, 8], [9, 0], [1, 2]],
         "str_tensor": ["baz", "bat"]},
    ]}
    columnar = {"signature_name": "four", "inputs": {"int_tensor": [[1, 2]], "str_tensor": ["foo"],
                                                      "float_tensor": [1.0], "dbl_tensor": 8.0}}
    assert _ok(server, columnar) == {"outputs": {"dbl_tensor": 8.0, "float_tensor": [1.0], "int_tensor": [[1, 2]],
                                                 "str_tensor": ["foo"]}}


def test_from_json_multiple_named_tensors_errors(server: ServerProcess) -> None:
    # FromJsonMultipleNamedTensorsErrors, FromJsonMultipleZeroBatchTensorsErrors
    assert _error(server, {"signature_name": "uneven_batches", "instances": [1.0, 2.0]}) == \
        "Tensor name: b has inconsistent batch size: 4 expecting: 2"


def test_from_json_zero_batch_tensors(server: ServerProcess) -> None:
    # FromJsonSingleZeroBatchTensor, FromJsonMultipleZeroBatchTensors
    assert _ok(server, {"signature_name": "empty_batches", "instances": [1.0, 2.0]}) == {"predictions": []}


# --- FillClassifyRegressRequestFromJson (with TF Serving's half_plus_two) -----------------------------------

def test_classify_regress_request_no_context(server: ServerProcess) -> None:  # RequestNoContext
    body = {"signature_name": "regress_x_to_y", "examples": [
        {"names": ["foo", "bar"], "ratings": [8.0, 9.0], "age": 20, "x": 2.0},
        {"names": ["baz"], "ratings": 6.0, "x": 4.0}]}
    assert _ok(server, body, model="half", verb="regress") == {"results": [3.0, 4.0]}
    body["signature_name"] = "classify_x_to_y"
    assert _ok(server, body, model="half", verb="classify") == {"results": [[["", 3.0]], [["", 4.0]]]}


def test_classify_regress_request_with_context_and_signature(server: ServerProcess) -> None:
    # RequestWithContextAndSignature
    body = """{"signature_name": "regress_x_to_y",
        "context": {"query": "pizza", "location": ["sfo"], "x": 2.0},
        "examples": [
            {"names": ["foo", "bar"], "ratings": [8.0, 9.0, NaN, Infinity], "age": 20},
            {"names": ["baz", {"b64": "aGVsbG8="}], "ratings": 6.0, "intboolmix": [1, true, false], "x": 4.0},
            {"names": "bar", "ratings": -Infinity, "x": NaN}]}"""
    results = _ok(server, body, model="half", verb="regress")["results"]
    assert results[:2] == [3.0, 4.0] and math.isnan(results[2])


@pytest.mark.parametrize("verb", ["classify", "regress"])
@pytest.mark.parametrize(("body", "expected"), [  # ClassifyRegressRequestTest.JsonErrors
    ({"signature_name": ["hello"], "examples": [{"names": ["foo", "bar"]}]}, "'signature_name' key must be a string"),
    ({"context": [{"names": ["foo", "bar"]}]}, "Example must be JSON object"),
    ({"examples": {"names": ["foo", "bar"]}}, "list/array"),
    ({"examples": [[{"names": ["foo", "bar"]}]]}, "Example must be JSON object"),
    ({"examples": [{"names": [10, None]}]}, "names has element with unexpected JSON type: Null"),
    ({"examples": [{"names": [10, 10.0]}]}, "feature: names expecting type: int64"),
    ({"examples": [{"names": [10, {"test": 10}]}]}, "names has element with unexpected JSON type: Object"),
    ({"examples": [{"names": [[10], 20]}]}, "names has element with unexpected JSON type: Array"),
    ('{"examples": [{"names": [20, 18446744073709551603]}]}', "Only int64_t is supported"),
    ({"examples": []}, "'examples' value is an empty array"),
    ({"signature_name": "regress_x_to_y"}, "When method is classify, key 'examples' is expected and was not found"),
])
def test_classify_regress_json_errors(server: ServerProcess, verb: str, body: Any, expected: str) -> None:
    assert expected in _error(server, body, model="half", verb=verb)


def test_regression_result_with_non_finite(server: ServerProcess) -> None:
    # ClassifyRegressnResultTest.JsonFromRegressionResultWithNonFinite
    body = '{"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}, {"x": Infinity}, {"x": -Infinity}]}'
    reply = _post(server, body, model="half", verb="regress")
    assert reply.content == b'{\n    "results": [3.0, Infinity, -Infinity]\n}'


def test_errors_are_json_objects(server: ServerProcess) -> None:
    # MakeJsonFromTensors.StatusError: the message, JSON-escaped, under "error"
    reply = _post(server, '{"signature_name": "no \\"such\\" signature", "instances": [1]}')
    assert reply.status_code == 400
    assert reply.content == b'{\n    "error": "Serving signature name: \\"no \\"such\\" signature\\" not found in ' \
                            b'signature def"\n}'
