"""REST response bodies written as TF Serving writes them (rapidjson PrettyWriter, json_tensor.cc).

Byte-compatible layout: 4-space indents, each row of "predictions" on one line and the closing bracket on its
own line, columnar "outputs" one value per line, and floats written as TF Serving's WriteDecimal does
(shortest 6-digit form when it round-trips, else max_digits10; always with a '.0' or an exponent).
"""

from __future__ import annotations

import base64
import json
import math
from typing import Any

import numpy as np

_INDENT = "    "


def format_decimal(value: float, single_precision: bool) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "-Infinity" if value < 0 else "Infinity"
    text = "%g" % value
    as_read = np.float32(float(text)) if single_precision else float(text)
    if as_read != (np.float32(value) if single_precision else value):
        text = "%.*g" % (9 if single_precision else 17, value)
    if "." not in text and "e" not in text:
        text += ".0"
    return text


def _float_tokens(flat: np.ndarray) -> list[str]:
    """format_decimal of every value, with the round-trip check vectorised: "%g" for every value, all read back at
    once, max_digits10 where that did not give the same value back, TF Serving's words where it is not finite."""
    single = flat.dtype.itemsize <= 4
    values = flat.tolist()
    if len(values) <= 16:  # below this, numpy's set-up costs more than it saves
        return [format_decimal(value, single) for value in values]
    texts = ["%g" % value for value in values]
    with np.errstate(all="ignore"):
        read_back = np.array(texts, dtype=np.float64)
        same = (read_back.astype(np.float32) == flat.astype(np.float32)) if single else (read_back == flat)
    digits = 9 if single else 17
    finite = np.isfinite(flat)
    for index in np.flatnonzero(~(same & finite)).tolist():
        value = values[index]
        texts[index] = "%.*g" % (digits, value) if finite[index] else format_decimal(value, single)
    return [text if "." in text or "e" in text or text[-1] in "Ny" else text + ".0" for text in texts]


def _string_token(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


class PrettyWriter:
    """The state machine of rapidjson::PrettyWriter (indent 4), including kFormatSingleLineArray."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.levels: list[list[Any]] = []  # [in_array, value_count]
        self.single_line_arrays = False

    def _prefix(self) -> None:
        if not self.levels:
            return
        level = self.levels[-1]
        in_array, count = level
        out = self.parts
        if in_array:
            if count > 0:
                out.append(", " if self.single_line_arrays else ",")
            if not self.single_line_arrays:
                out.append("\n" + _INDENT * len(self.levels))
        else:
            if count > 0:
                out.append(",\n" if count % 2 == 0 else ": ")
            else:
                out.append("\n")
            if count % 2 == 0:
                out.append(_INDENT * len(self.levels))
        level[1] += 1

    def raw(self, token: str) -> None:
        self._prefix()
        self.parts.append(token)

    def key(self, name: str) -> None:
        self.raw(_string_token(name))

    def start_object(self) -> None:
        self._prefix()
        self.parts.append("{")
        self.levels.append([False, 0])

    def end_object(self) -> None:
        if self.levels.pop()[1]:
            self.parts.append("\n" + _INDENT * len(self.levels))
        self.parts.append("}")

    def start_array(self) -> None:
        self._prefix()
        self.parts.append("[")
        self.levels.append([True, 0])

    def end_array(self) -> None:
        if self.levels.pop()[1] and not self.single_line_arrays:
            self.parts.append("\n" + _INDENT * len(self.levels))
        self.parts.append("]")

    def scalar_array(self, tokens: list[str]) -> None:
        """start_array, raw(token) for each token, end_array: the same bytes, without a call per value."""
        self._prefix()
        if self.single_line_arrays:
            self.parts.append("[" + ", ".join(tokens) + "]")
        else:
            inner = "\n" + _INDENT * (len(self.levels) + 1)
            self.parts.append("[" + inner + ("," + inner).join(tokens) + "\n" + _INDENT * len(self.levels) + "]")

    def text(self) -> bytes:
        return "".join(self.parts).encode()


def _tokens(array: np.ndarray, alias: str) -> Any:
    """Nested lists of ready-to-write JSON tokens for a tensor."""
    kind = array.dtype.kind
    if kind == "f":
        flat = _float_tokens(array.ravel())
    elif kind == "b":
        flat = ["true" if v else "false" for v in array.ravel().tolist()]
    elif kind in "iu":
        flat = [str(v) for v in array.ravel().tolist()]
    else:
        as_b64 = alias.endswith("_bytes")
        flat = [json.dumps({"b64": base64.b64encode(v).decode("ascii")}) if as_b64
                else _string_token(v.decode("utf-8", errors="replace")) for v in array.ravel().tolist()]
    return np.array(flat, dtype=object).reshape(array.shape).tolist() if array.ndim else flat[0]


def _write_tokens(writer: PrettyWriter, tokens: Any) -> None:
    if isinstance(tokens, list):
        if tokens and all(type(item) is str and not item.startswith("{") for item in tokens):
            writer.scalar_array(tokens)  # the innermost level: written at once, same bytes
            return
        writer.start_array()
        for item in tokens:
            _write_tokens(writer, item)
        writer.end_array()
    elif tokens.startswith("{\"b64\""):
        writer.start_object()
        writer.key("b64")
        writer.raw(_string_token(json.loads(tokens)["b64"]))
        writer.end_object()
    else:
        writer.raw(tokens)


def predictions_json(outputs: dict[str, np.ndarray]) -> bytes:
    """Row format: {"predictions": [...]}, one line per row (MakeRowFormatJsonFromTensors)."""
    columns = {alias: _tokens(array, alias) for alias, array in sorted(outputs.items())}
    batch = len(next(iter(columns.values())))
    writer = PrettyWriter()
    writer.start_object()
    writer.key("predictions")
    writer.start_array()
    as_objects = len(columns) > 1
    for row in range(batch):
        if as_objects:
            writer.start_object()
        writer.single_line_arrays = True
        for alias, column in columns.items():
            if as_objects:
                writer.key(alias)
            _write_tokens(writer, column[row])
        writer.single_line_arrays = False
        if as_objects:
            writer.end_object()
    writer.end_array()
    writer.end_object()
    return writer.text()


def outputs_json(outputs: dict[str, np.ndarray]) -> bytes:
    """Columnar format: {"outputs": value} or {"outputs": {alias: value}} (MakeColumnarFormatJsonFromTensors)."""
    writer = PrettyWriter()
    writer.start_object()
    writer.key("outputs")
    as_objects = len(outputs) > 1
    if as_objects:
        writer.start_object()
    for alias, array in sorted(outputs.items()):
        if as_objects:
            writer.key(alias)
        _write_tokens(writer, _tokens(array, alias))
    if as_objects:
        writer.end_object()
    writer.end_object()
    return writer.text()


def classification_json(rows: list[list[tuple[str, float]]]) -> bytes:
    writer = PrettyWriter()
    writer.start_object()
    writer.key("results")
    writer.start_array()
    for row in rows:
        writer.single_line_arrays = True
        writer.start_array()
        for label, score in row:
            writer.start_array()
            writer.raw(_string_token(label))
            writer.raw(format_decimal(score, True))
            writer.end_array()
        writer.end_array()
        writer.single_line_arrays = False
    writer.end_array()
    writer.end_object()
    return writer.text()


def regression_json(values: list[float]) -> bytes:
    writer = PrettyWriter()
    writer.start_object()
    writer.key("results")
    writer.single_line_arrays = True
    writer.start_array()
    for value in values:
        writer.raw(format_decimal(value, True))
    writer.end_array()
    writer.end_object()
    return writer.text()


def error_json(message: str) -> bytes:
    writer = PrettyWriter()
    writer.start_object()
    writer.key("error")
    writer.raw(_string_token(message))
    writer.end_object()
    return writer.text()
