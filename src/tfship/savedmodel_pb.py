"""A small reader of saved_model.pb's wire format: the (tags, signature name -> method name) of each meta graph.

TensorFlow's own protobuf classes would do this, but importing them imports all of TensorFlow (seconds of CPU),
which validation before every build should not pay when the load check is cached."""

from __future__ import annotations

from typing import Any, Iterator

# Field numbers from tensorflow/core/protobuf/{saved_model,meta_graph}.proto.
_SAVED_MODEL_META_GRAPHS = 2
_META_GRAPH_INFO, _META_GRAPH_SIGNATURES = 1, 5
_META_INFO_TAGS = 4
_MAP_KEY, _MAP_VALUE = 1, 2
_SIGNATURE_METHOD_NAME = 3
_VARINT, _FIXED64, _LENGTH_DELIMITED, _FIXED32 = 0, 1, 2, 5


def read_meta_graphs(data: memoryview) -> list[tuple[set[str], dict[str, str]]]:
    meta_graphs = []
    for number, value in _fields(data):
        if number == _SAVED_MODEL_META_GRAPHS:
            tags: set[str] = set()
            signatures: dict[str, str] = {}
            for field_number, field_value in _fields(_bytes(value)):
                if field_number == _META_GRAPH_INFO:
                    tags |= {_text(v) for n, v in _fields(_bytes(field_value)) if n == _META_INFO_TAGS}
                elif field_number == _META_GRAPH_SIGNATURES:
                    entry = dict(_fields(_bytes(field_value)))
                    method = dict(_fields(_bytes(entry.get(_MAP_VALUE, b"")))).get(_SIGNATURE_METHOD_NAME, b"")
                    signatures[_text(entry.get(_MAP_KEY, b""))] = _text(method)
            meta_graphs.append((tags, signatures))
    return meta_graphs


def _fields(data: memoryview | bytes) -> Iterator[tuple[int, Any]]:
    """(field number, value) pairs of one message: ints for scalars, memoryviews for length-delimited fields."""
    data = memoryview(data)
    position = 0
    while position < len(data):
        key, position = _varint(data, position)
        number, wire_type = key >> 3, key & 7
        if number == 0:
            raise ValueError(f"field number 0 at byte {position}")
        if wire_type == _VARINT:
            value, position = _varint(data, position)
        elif wire_type in (_FIXED64, _FIXED32):
            size = 8 if wire_type == _FIXED64 else 4
            value, position = int.from_bytes(data[position:position + size], "little"), position + size
        elif wire_type == _LENGTH_DELIMITED:
            size, position = _varint(data, position)
            value, position = data[position:position + size], position + size
        else:
            raise ValueError(f"unsupported wire type {wire_type} at byte {position}")
        if position > len(data):
            raise ValueError("truncated")
        yield number, value


def _varint(data: memoryview, position: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if position >= len(data) or shift > 63:
            raise ValueError("truncated or overlong varint")
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result, position


def _bytes(value: Any) -> memoryview:
    if isinstance(value, int):
        raise ValueError("a message field has the wrong wire type")
    return memoryview(value)  # b"" stands for an absent field (proto3 leaves empty ones out)


def _text(value: Any) -> str:
    try:
        return bytes(_bytes(value)).decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("a string field is not UTF-8")
