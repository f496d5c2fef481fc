"""What a stored tensor holds: its payload size against its dims, read without copying the weights."""

from __future__ import annotations

from collections.abc import Iterator

import onnx

from .errors import ModelLoadError, quoted


def proto_size(model: onnx.ModelProto) -> int:
    """About the serialized size, without encoding the weights (`ByteSize()` encodes the whole model:
    a second copy of every weight, and impossible above 2 GB). Raw initializers count as
    dims x itemsize; everything else (nodes, Constant values, subgraphs) is measured."""
    total = 1024
    for t in model.graph.initializer:
        if not t.HasField("raw_data"):
            total += t.ByteSize()
            continue
        count = 1
        for d in t.dims:
            count *= d
        try:
            itemsize = onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
        except (KeyError, ValueError, TypeError):
            itemsize = 8
        total += count * itemsize + len(t.name) + 16 + 10 * len(t.dims)
    graph = model.graph
    for part in (graph.node, graph.input, graph.output, graph.value_info, model.functions):
        total += sum(item.ByteSize() for item in part)
    return total


def attribute_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Tensors held in node attributes (Constant values), subgraphs included, with their initializers."""
    for node in graph.node:
        for a in node.attribute:
            if a.HasField("t"):
                yield a.t
            yield from a.tensors
            for g in [a.g] if a.HasField("g") else []:
                yield from _all_tensors(g)
            for g in a.graphs:
                yield from _all_tensors(g)


def _all_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    yield from graph.initializer
    yield from attribute_tensors(graph)


def all_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    yield from _all_tensors(model.graph)
    for f in model.functions:
        for node in f.node:
            for a in node.attribute:
                if a.HasField("t"):
                    yield a.t


_DATA_TYPES = frozenset(onnx.TensorProto.DataType.values())

# Typed payload fields and how many entries one element takes in each (complex: two).
_TYPED_FIELDS = {
    onnx.TensorProto.FLOAT: ("float_data", 1),
    onnx.TensorProto.COMPLEX64: ("float_data", 2),
    onnx.TensorProto.DOUBLE: ("double_data", 1),
    onnx.TensorProto.COMPLEX128: ("double_data", 2),
    onnx.TensorProto.INT64: ("int64_data", 1),
    onnx.TensorProto.UINT32: ("uint64_data", 1),
    onnx.TensorProto.UINT64: ("uint64_data", 1),
    onnx.TensorProto.STRING: ("string_data", 1),
}
_PACKED_4BIT = {onnx.TensorProto.INT4, onnx.TensorProto.UINT4}


def _expected_entries(t: onnx.TensorProto, count: int) -> tuple[str, int]:
    """The payload field a tensor without raw_data uses, and how many entries it must hold."""
    name, per = _TYPED_FIELDS.get(t.data_type, ("int32_data", 1))
    if t.data_type in _PACKED_4BIT:
        return name, (count + 1) // 2
    return name, count * per


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _fields(buf: memoryview, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(field number, start, end) of the length-delimited fields of one protobuf message."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos)
        wire = key & 7
        if wire == 0:
            _, pos = _varint(buf, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            length, pos = _varint(buf, pos)
            yield key >> 3, pos, pos + length
            pos += length
        else:
            raise ValueError(f"wire type {wire}")


def raw_data_lengths(data: bytes) -> list[int | None] | None:
    """The raw_data length of each initializer of a serialized model, read from the wire format
    so that no weight is copied (`len(tensor.raw_data)` copies the bytes). None if unsure."""
    buf = memoryview(data)
    try:
        graphs = [(a, b) for field, a, b in _fields(buf, 0, len(buf)) if field == 7]  # ModelProto.graph
        if len(graphs) != 1:
            return None
        lengths: list[int | None] = []
        for field, a, b in _fields(buf, *graphs[0]):
            if field == 5:  # GraphProto.initializer
                raw = [end - begin for f, begin, end in _fields(buf, a, b) if f == 9]  # TensorProto.raw_data
                lengths.append(raw[-1] if raw else None)
        return lengths
    except (ValueError, IndexError):
        return None


def data_type_problem(model: onnx.ModelProto) -> str | None:
    """A tensor whose data type ONNX does not define (every tool after this one would trip on it)."""
    for t in all_tensors(model):
        if t.data_type not in _DATA_TYPES:
            return f"tensor {quoted(t.name)} has data type {t.data_type}, which ONNX does not define"
    return None


def check_tensor_sizes(model: onnx.ModelProto, known: dict[int, int] | None = None) -> None:
    """Every tensor's payload matches its dims (onnxruntime would fail later with a vaguer message).

    `known` maps an initializer's index to its raw_data length where that is known without copying
    the bytes (all_tensors() yields the graph's initializers first, in order).
    """
    known = known or {}
    for index, t in enumerate(all_tensors(model)):
        if t.data_type == onnx.TensorProto.UNDEFINED:
            raise ModelLoadError(f"tensor {quoted(t.name)} has no data type")
        if any(d < 0 for d in t.dims):
            raise ModelLoadError(f"tensor {quoted(t.name)} has negative dims {list(t.dims)}")
        count = 1
        for d in t.dims:
            count *= d
        if t.HasField("raw_data"):
            if t.data_type == onnx.TensorProto.STRING:
                raise ModelLoadError(f"tensor {quoted(t.name)}: a string tensor cannot hold raw_data")
            try:
                itemsize = onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
            except (KeyError, ValueError, TypeError):
                continue
            expected = (count + 1) // 2 if t.data_type in _PACKED_4BIT else count * itemsize
            held = known[index] if index in known else len(t.raw_data)
            if held != expected:
                raise ModelLoadError(
                    f"tensor {quoted(t.name)} holds {held} bytes but its dims {list(t.dims)} need {expected}"
                )
            continue
        field, expected = _expected_entries(t, count)
        held = len(getattr(t, field))
        if held == expected:
            continue
        if held == 0 and count > 0 and not any(len(getattr(t, f)) for f, _ in set(_TYPED_FIELDS.values())):
            raise ModelLoadError(f"tensor {quoted(t.name)} has no data but its dims {list(t.dims)} need {count} values")
        raise ModelLoadError(
            f"tensor {quoted(t.name)} holds {held} values in {field} but its dims {list(t.dims)} need {expected}"
        )
