"""Verify that an ORT-format model file (`.ort`, onnxruntime-mobile's format) reads nothing else.

An ORT file is a FlatBuffer whose identifier, bytes 4-8, is `ORTM`. Its tensors keep their bytes
inside the file; the schema's one way out is a tensor's `external_data_offset` (an offset into a
separate data file, meant for training checkpoints). check_ort_file walks every tensor the file
holds (initializers, sparse initializers, tensor attributes, in the main graph and every
subgraph such as a Scan body) and refuses the file if any tensor sets that field, or if the
buffer is not a well-formed FlatBuffer of that shape. Standard library only, like safe_onnx.py:
weights are skipped, not parsed.

Field numbers are those of onnxruntime's schema (onnxruntime/core/flatbuffers/schema/ort.fbs).
"""

from __future__ import annotations

import struct

IDENTIFIER = b"ORTM"
MAX_DEPTH = 64  # nested subgraphs

# (table, field index) of what leads to a tensor; index = (vtable offset - 4) / 2.
_SESSION_MODEL = 1
_MODEL_GRAPH = 7
_GRAPH_INITIALIZERS, _GRAPH_NODES, _GRAPH_SPARSE = 0, 2, 7
_NODE_ATTRIBUTES = 10
_ATTR_T, _ATTR_G, _ATTR_TENSORS, _ATTR_GRAPHS = 6, 7, 11, 12
_SPARSE_VALUES, _SPARSE_INDICES = 0, 1
_TENSOR_NAME, _TENSOR_EXTERNAL_OFFSET = 0, 6


class _Malformed(Exception):
    pass


def is_ort_format(data: bytes) -> bool:
    return len(data) >= 8 and data[4:8] == IDENTIFIER


class _Buffer:
    def __init__(self, data: bytes):
        self.data = data

    def _unpack(self, fmt: str, pos: int):
        if pos < 0 or pos + struct.calcsize(fmt) > len(self.data):
            raise _Malformed("an offset points past the end of the file")
        return struct.unpack_from(fmt, self.data, pos)[0]

    def field(self, table: int, index: int) -> int | None:
        """Position of a table's field, or None when absent."""
        vtable = table - self._unpack("<i", table)
        vsize = self._unpack("<H", vtable)
        if 4 + 2 * index >= vsize:
            return None
        off = self._unpack("<H", vtable + 4 + 2 * index)
        return table + off if off else None

    def table(self, table: int, index: int) -> int | None:
        pos = self.field(table, index)
        return None if pos is None else pos + self._unpack("<I", pos)

    def tables(self, table: int, index: int) -> list[int]:
        pos = self.field(table, index)
        if pos is None:
            return []
        vec = pos + self._unpack("<I", pos)
        n = self._unpack("<I", vec)
        if n > len(self.data) // 4:
            raise _Malformed("a vector is longer than the file")
        items = [vec + 4 + 4 * i for i in range(n)]
        return [p + self._unpack("<I", p) for p in items]

    def int64(self, table: int, index: int, default: int) -> int:
        pos = self.field(table, index)
        return default if pos is None else self._unpack("<q", pos)

    def string(self, table: int, index: int) -> str:
        pos = self.field(table, index)
        if pos is None:
            return ""
        start = pos + self._unpack("<I", pos)
        n = self._unpack("<I", start)
        return self.data[start + 4 : start + 4 + n].decode("utf-8", "replace")


def tensors_with_external_data(data: bytes) -> list[str]:
    """Names of the tensors in an ORT-format file that point at external data. Raises
    ValueError for bytes that are not a well-formed ORT-format model."""
    return [name for name, offset in tensors(data) if offset != -1]


def tensors(data: bytes) -> list[tuple[str, int]]:
    """(name, external_data_offset; -1 when none) of every tensor in an ORT-format file."""
    if not is_ort_format(data):
        raise ValueError("no ORTM identifier at bytes 4-8")
    buf = _Buffer(data)
    try:
        model = buf.table(buf._unpack("<I", 0), _SESSION_MODEL)
        graph = None if model is None else buf.table(model, _MODEL_GRAPH)
        if graph is None:
            raise _Malformed("no model graph")
        graphs, found, visited = [(graph, 0)], [], set()
        while graphs:
            g, depth = graphs.pop()
            if depth > MAX_DEPTH:
                raise _Malformed(f"subgraphs nested deeper than {MAX_DEPTH}")
            if g in visited:  # a subgraph that is its own ancestor (or shared): no exported model has one
                raise _Malformed("a graph appears twice")
            visited.add(g)
            found += buf.tables(g, _GRAPH_INITIALIZERS)
            for sparse in buf.tables(g, _GRAPH_SPARSE):
                found += [t for t in (buf.table(sparse, _SPARSE_VALUES), buf.table(sparse, _SPARSE_INDICES)) if t]
            for node in buf.tables(g, _GRAPH_NODES):
                for attr in buf.tables(node, _NODE_ATTRIBUTES):
                    found += [t for t in [buf.table(attr, _ATTR_T)] if t] + buf.tables(attr, _ATTR_TENSORS)
                    subgraphs = [s for s in [buf.table(attr, _ATTR_G)] if s] + buf.tables(attr, _ATTR_GRAPHS)
                    graphs += [(s, depth + 1) for s in subgraphs]
        return [(buf.string(t, _TENSOR_NAME), buf.int64(t, _TENSOR_EXTERNAL_OFFSET, -1)) for t in found]
    except _Malformed as e:
        raise ValueError(str(e)) from None
