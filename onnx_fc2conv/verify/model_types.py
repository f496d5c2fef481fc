"""The element type and dims a model declares for each tensor, read from the ModelProto itself.

One reader of `graph.input`, `graph.value_info`, `graph.output` and the initializers, so that
verification depends on the ONNX format only, not on how the converter represents a graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from ..graph import value_info_dims

Dim = int | str | None  # a fixed size, a symbolic name, or unknown


@dataclass(frozen=True)
class TensorType:
    elem_type: int
    dims: tuple[Dim, ...] | None  # None: rank unknown


def value_info_type(vi: onnx.ValueInfoProto) -> TensorType | None:
    """The tensor type of one value_info; None for sequences, maps and optional types."""
    if not vi.type.HasField("tensor_type"):
        return None
    tensor_type = vi.type.tensor_type
    if not tensor_type.HasField("shape"):
        return TensorType(tensor_type.elem_type, None)
    return TensorType(tensor_type.elem_type, value_info_dims(vi))


def tensor_types(model: onnx.ModelProto) -> dict[str, TensorType]:
    """Every declared tensor's type: initializers, then inputs, value_info and outputs."""
    graph = model.graph
    types = {t.name: TensorType(t.data_type, tuple(int(d) for d in t.dims)) for t in graph.initializer}
    for vi in (*graph.input, *graph.value_info, *graph.output):
        found = value_info_type(vi)
        if found is not None:
            types[vi.name] = found
    return types


def graph_inputs(model: onnx.ModelProto) -> dict[str, TensorType]:
    """The inputs a caller feeds (an input that is also an initializer has a default: not fed)."""
    weights = {t.name for t in model.graph.initializer}
    out = {}
    for vi in model.graph.input:
        found = value_info_type(vi)
        if vi.name not in weights and found is not None:
            out[vi.name] = found
    return out


_HALF = {onnx.TensorProto.FLOAT16: "float16", onnx.TensorProto.BFLOAT16: "bfloat16"}


def half_precision(model: onnx.ModelProto) -> str:
    """The half-precision type the main graph computes in ("float16" before "bfloat16"), "" for none:
    from its weights and the types it casts to."""
    graph = model.graph
    found = {t.data_type for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Cast":
            found.update(a.i for a in node.attribute if a.name == "to")
        elif node.op_type == "Constant":
            found.update(a.t.data_type for a in node.attribute if a.name == "value")
    return next((name for elem, name in _HALF.items() if elem in found), "")
