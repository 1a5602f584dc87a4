"""REST bodies laid out byte for byte as TF Serving's rapidjson PrettyWriter lays them out (json_tensor.cc)."""

from __future__ import annotations

from unittest import mock

import hypothesis
import hypothesis.extra.numpy
import hypothesis.strategies
import numpy as np
import pytest

from tfship.server import rest_json
from tfship.server.rest_json import (
    classification_json,
    error_json,
    format_decimal,
    outputs_json,
    predictions_json,
    regression_json,
)


def test_row_format_single_output() -> None:
    body = predictions_json({"y": np.array([3.0, 3.5, 4.0], np.float32)})
    assert body == b'{\n    "predictions": [3.0, 3.5, 4.0\n    ]\n}'


def test_row_format_rows_of_vectors() -> None:
    body = predictions_json({"y": np.array([[3.0], [3.5]], np.float32)})
    assert body == b'{\n    "predictions": [[3.0], [3.5]\n    ]\n}'


def test_row_format_several_outputs_are_objects_per_row() -> None:
    body = predictions_json({"scores": np.array([[0.25, 0.75]], np.float32), "label": np.array([b"cat"], object)})
    assert body == (b'{\n    "predictions": [\n        {\n            "label": "cat",\n'
                    b'            "scores": [0.25, 0.75]\n        }\n    ]\n}')


def test_columnar_format_one_value_per_line() -> None:
    assert outputs_json({"y": np.array([3.0, 3.5], np.float32)}) == \
        b'{\n    "outputs": [\n        3.0,\n        3.5\n    ]\n}'


def test_bytes_outputs_are_base64_objects() -> None:
    body = outputs_json({"image_bytes": np.array(b"\x00\x01", dtype=object)})
    assert body == b'{\n    "outputs": {\n        "b64": "AAE="\n    }\n}'


def test_classify_regress_and_error_bodies() -> None:
    assert classification_json([[("", 3.0)]]) == b'{\n    "results": [[["", 3.0]]\n    ]\n}'
    assert regression_json([3.0, 0.5]) == b'{\n    "results": [3.0, 0.5]\n}'
    assert error_json('no "x"') == b'{\n    "error": "no \\"x\\""\n}'


@pytest.mark.parametrize(("value", "single", "text"), [
    (3.0, True, "3.0"),
    (float(np.float32(0.1)), True, "0.1"),  # no float->double noise digits
    (float(np.float32(1 / 3)), True, "0.333333343"),  # 6 digits do not round-trip: max_digits10
    (9_000_000.0, True, "9e+06"),
    (1 / 3, False, "0.33333333333333331"),
    (float("nan"), True, "NaN"),
    (float("-inf"), False, "-Infinity"),
])
def test_decimals_as_tf_serving_writes_them(value: float, single: bool, text: str) -> None:
    assert format_decimal(value, single) == text


class _ValueByValue(rest_json.PrettyWriter):
    """The writer as it was: one start/raw.../end call per value (the reference for scalar_array's shortcut)."""

    def scalar_array(self, tokens: list[str]) -> None:
        self.start_array()
        for token in tokens:
            self.raw(token)
        self.end_array()


def _value_by_value_tokens(flat: np.ndarray) -> list[str]:
    return [format_decimal(float(value), flat.dtype.itemsize <= 4) for value in flat.tolist()]


@pytest.mark.parametrize("dtype, width", [(np.float32, 32), (np.float64, 64)])
def test_vectorised_floats_and_rows_are_the_same_bytes_as_value_by_value(dtype, width) -> None:
    @hypothesis.settings(max_examples=150, deadline=None)
    @hypothesis.given(hypothesis.extra.numpy.arrays(
        dtype, hypothesis.extra.numpy.array_shapes(min_dims=1, max_dims=3, max_side=5),
        elements=hypothesis.strategies.floats(width=width)))
    def check(array: np.ndarray) -> None:
        fast = (predictions_json({"y": array}), outputs_json({"y": array, "z": array[..., :1]}))
        with mock.patch.object(rest_json, "PrettyWriter", _ValueByValue), \
                mock.patch.object(rest_json, "_float_tokens", _value_by_value_tokens):
            reference = (predictions_json({"y": array}), outputs_json({"y": array, "z": array[..., :1]}))
        assert fast == reference

    check()
