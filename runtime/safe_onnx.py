"""Refuse ONNX files whose external data would be read from outside their own directory.

A tensor in an ONNX file may keep its bytes in another file, named by the `location` entry of its
`external_data`; onnxruntime opens that path relative to the model. A model from elsewhere could
name `/etc/passwd`, `../../secrets` or a symlink leading out of the directory. check_external_data
reads every such location in the file (initializers, sparse initializers, tensor attributes, in
the main graph, every subgraph such as a Scan body, functions and training graphs) and raises
HybridError for any that is absolute or resolves outside the model's directory, or is missing.

The file is read with a small protobuf wire-format walker rather than the `onnx` package, so the
runtime needs nothing beyond numpy and onnxruntime; weights (raw_data) are skipped, not parsed.
"""

from __future__ import annotations

import os
from pathlib import Path

from hybrid.runtime.errors import HybridError
from hybrid.runtime.files import unsafe_name as _unsafe  # one rule for every name a file gives
from hybrid.runtime.safe_ort import is_ort_format, tensors_with_external_data

# The onnx.proto messages and fields that lead to a TensorProto: {message: {field number: message}}.
_MODEL, _GRAPH, _NODE, _ATTR, _TENSOR, _SPARSE, _FUNC, _TRAIN, _ENTRY = range(9)
_CHILDREN = {
    _MODEL: {7: _GRAPH, 20: _TRAIN, 25: _FUNC},  # graph, training_info, functions
    _TRAIN: {1: _GRAPH, 2: _GRAPH},  # initialization, algorithm
    _GRAPH: {1: _NODE, 5: _TENSOR, 15: _SPARSE},  # node, initializer, sparse_initializer
    _FUNC: {7: _NODE},  # node
    _NODE: {5: _ATTR},  # attribute
    _ATTR: {5: _TENSOR, 6: _GRAPH, 10: _TENSOR, 11: _GRAPH, 22: _SPARSE, 23: _SPARSE},  # t g tensors graphs ...
    _SPARSE: {1: _TENSOR, 2: _TENSOR},  # values, indices
    _TENSOR: {13: _ENTRY},  # external_data
    _ENTRY: {},
}
_TENSOR_NAME, _ENTRY_KEY, _ENTRY_VALUE = 8, 1, 2
MAX_DEPTH = 64  # nested subgraphs; deeper is not a model anyone exported


class _Malformed(Exception):
    pass


def _varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    result, shift = 0, 0
    while True:
        if pos >= end or shift > 63:
            raise _Malformed("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


def _fields(buf: memoryview, start: int, end: int):
    """(field number, wire type, value or (start, end) of a length-delimited field) of one message."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise _Malformed("field number 0")
        if wire == 0:
            value, pos = _varint(buf, pos, end)
        elif wire == 1:
            value, pos = None, pos + 8
        elif wire == 5:
            value, pos = None, pos + 4
        elif wire == 2:
            n, pos = _varint(buf, pos, end)
            value, pos = (pos, pos + n), pos + n
        else:
            raise _Malformed(f"unsupported wire type {wire}")
        if pos > end:
            raise _Malformed("field runs past the end of its message")
        yield field, wire, value


def _text(buf: memoryview, span: tuple[int, int]) -> str:
    try:
        return bytes(buf[span[0] : span[1]]).decode("utf-8")
    except UnicodeDecodeError:
        raise _Malformed("a string field is not UTF-8") from None


def external_locations(data: bytes) -> list[tuple[str, str]]:
    """(tensor name, location) of every tensor in a serialized ModelProto that keeps its data
    in an external file. Raises ValueError for bytes that are not a well-formed ModelProto."""
    buf = memoryview(data)
    found: list[tuple[str, str]] = []
    stack = [(_MODEL, 0, len(buf), 0)]
    try:
        while stack:
            kind, start, end, depth = stack.pop()
            if depth > MAX_DEPTH:
                raise _Malformed(f"messages nested deeper than {MAX_DEPTH}")
            name, entries = "", []
            for field, wire, value in _fields(buf, start, end):
                child = _CHILDREN[kind].get(field)
                if wire != 2:
                    continue
                if kind == _TENSOR and field == _TENSOR_NAME:
                    name = _text(buf, value)
                elif kind == _TENSOR and child == _ENTRY:
                    key = val = None
                    for f2, w2, v2 in _fields(buf, *value):
                        if w2 == 2 and f2 == _ENTRY_KEY:
                            key = _text(buf, v2)
                        elif w2 == 2 and f2 == _ENTRY_VALUE:
                            val = _text(buf, v2)
                    if key == "location":
                        entries.append(val or "")
                elif child is not None:
                    stack.append((child, value[0], value[1], depth + 1))
            found.extend((name, loc) for loc in entries)
    except _Malformed as e:
        raise ValueError(str(e)) from None
    return found


def _check_ort(path: Path, data: bytes) -> None:
    try:
        external = tensors_with_external_data(data)
    except ValueError as e:
        raise HybridError(f"{path}: not a valid ORT-format file ({e})") from None
    if external:
        raise HybridError(f"{path}: refusing to load: tensor {external[0]!r} points at external data")


def check_external_data(model_path: str | os.PathLike) -> list[str]:
    """Raise HybridError if any external-data location of the ONNX file at `model_path` is absolute,
    leaves the file's directory (by '..' or a symlink) or does not exist; returns the locations.
    An ORT-format file (`ORTM` at bytes 4-8) has none: it is checked to point at no external data."""
    path = Path(model_path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise HybridError(f"{path}: ONNX file not found") from None
    except OSError as e:
        raise HybridError(f"{path}: cannot read ({e.strerror or e.__class__.__name__})") from None
    if is_ort_format(data):  # onnxruntime-mobile's format: no external data, verified there
        _check_ort(path, data)
        return []
    try:
        entries = external_locations(data)
    except ValueError as e:
        raise HybridError(f"{path}: not a valid ONNX file ({e})") from None
    root = path.parent.resolve()
    locations = []
    for tensor, loc in entries:
        why = _unsafe(loc)
        target = (root / loc).resolve() if why is None else None
        if target is not None and not target.is_relative_to(root):
            why = "resolves outside the model's directory"
        if why:
            raise HybridError(f"{path}: refusing to load: external data {loc!r} of tensor {tensor!r} {why}")
        if not target.is_file():
            raise HybridError(f"{path}: external data file {loc!r} of tensor {tensor!r} not found beside the model")
        locations.append(loc)
    return sorted(set(locations))
