"""Read-only index over an ONNX graph: producers, consumers, constants, shapes and attributes."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

# Ops through which a constant keeps its value (the TorchScript exporter routes deduplicated
# initializers through Identity nodes).
_PASS_THROUGH = {"Identity"}


def attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def set_attr(node: onnx.NodeProto, name: str, value: Any) -> None:
    for i, a in enumerate(node.attribute):
        if a.name == name:
            del node.attribute[i]
            break
    node.attribute.append(helper.make_attribute(name, value))


def opset_version(model: onnx.ModelProto, domain: str = "") -> int:
    for imp in model.opset_import:
        if imp.domain in (domain, "ai.onnx" if domain == "" else domain):
            return int(imp.version)
    return 0


Dim = int | str | None
"""A dimension: a fixed size, a symbolic name, or unknown."""


def shape_of_type(tp: onnx.TypeProto) -> tuple[Dim, ...] | None:
    if not tp.HasField("tensor_type") or not tp.tensor_type.HasField("shape"):
        return None
    dims: list[Dim] = []
    for d in tp.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            dims.append(d.dim_param)
        else:
            dims.append(None)
    return tuple(dims)


class GraphIndex:
    """Producers, consumers, constants and known shapes of one graph.

    Built once per analysis; it never mutates the graph. Shapes come from the value_info,
    inputs and outputs of the (shape-inferred) model it is given.
    """

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        graph = model.graph
        self.graph = graph
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for node in graph.node:
            for out in node.output:
                if out:
                    self.producer[out] = node
            for inp in node.input:
                if inp:
                    self.consumers[inp].append(node)
        self.initializers: dict[str, onnx.TensorProto] = {t.name: t for t in graph.initializer}
        self.graph_outputs = [o.name for o in graph.output]
        self.output_set = set(self.graph_outputs)
        self.graph_inputs = [i.name for i in graph.input if i.name not in self.initializers]
        self.shapes: dict[str, tuple[Dim, ...]] = {}
        self.elem_types: dict[str, int] = {}
        for vi in [*graph.input, *graph.value_info, *graph.output]:
            shape = shape_of_type(vi.type)
            if shape is not None:
                self.shapes[vi.name] = shape
            if vi.type.HasField("tensor_type"):
                self.elem_types[vi.name] = vi.type.tensor_type.elem_type
        for t in graph.initializer:
            self.shapes[t.name] = tuple(int(d) for d in t.dims)
            self.elem_types[t.name] = t.data_type
        self.opset = opset_version(model)

    # -- constants -------------------------------------------------------------------------

    def constant_source(self, name: str) -> onnx.TensorProto | None:
        """The TensorProto holding a constant tensor's value, through Identity chains."""
        seen = 0
        while seen < 64:
            seen += 1
            if name in self.initializers:
                return self.initializers[name]
            node = self.producer.get(name)
            if node is None:
                return None
            if node.op_type == "Constant":
                value = attr(node, "value")
                if isinstance(value, onnx.TensorProto):
                    return value
                return _constant_from_scalar_attrs(node)
            if node.op_type in _PASS_THROUGH and node.input:
                name = node.input[0]
                continue
            return None
        return None

    def is_constant(self, name: str) -> bool:
        return self.constant_source(name) is not None

    def constant(self, name: str) -> np.ndarray | None:
        src = self.constant_source(name)
        return None if src is None else numpy_helper.to_array(src)

    def constant_shape(self, name: str) -> tuple[int, ...] | None:
        src = self.constant_source(name)
        return None if src is None else tuple(int(d) for d in src.dims)

    # -- shapes ----------------------------------------------------------------------------

    def shape(self, name: str) -> tuple[Dim, ...] | None:
        if name in self.shapes:
            return self.shapes[name]
        const = self.constant_shape(name)
        return const

    def rank(self, name: str) -> int | None:
        shape = self.shape(name)
        return None if shape is None else len(shape)

    def static_tail(self, name: str) -> tuple[int, ...] | None:
        """Dims after the batch dim, if all are known integers."""
        shape = self.shape(name)
        if shape is None or len(shape) < 1:
            return None
        tail = shape[1:]
        if all(isinstance(d, int) and d > 0 for d in tail):
            return tuple(int(d) for d in tail)  # type: ignore[arg-type]
        return None

    def elem_type(self, name: str) -> int | None:
        if name in self.elem_types:
            return self.elem_types[name]
        src = self.constant_source(name)
        return None if src is None else src.data_type

    # -- topology --------------------------------------------------------------------------

    def users(self, name: str) -> list[onnx.NodeProto]:
        return self.consumers.get(name, [])

    def use_count(self, name: str) -> int:
        """How many node inputs and graph outputs read this tensor."""
        return len(self.users(name)) + (1 if name in self.output_set else 0)

    def sole_user(self, name: str) -> onnx.NodeProto | None:
        users = self.users(name)
        if len(users) == 1 and name not in self.output_set:
            return users[0]
        return None

    def ancestors(self, names: Iterable[str], stop: set[str] | None = None) -> list[onnx.NodeProto]:
        """Nodes the given tensors depend on (not crossing `stop` tensors)."""
        stop = stop or set()
        seen: set[int] = set()
        out: list[onnx.NodeProto] = []
        stack = [n for n in names if n not in stop]
        while stack:
            name = stack.pop()
            node = self.producer.get(name)
            if node is None or id(node) in seen:
                continue
            seen.add(id(node))
            out.append(node)
            stack.extend(i for i in node.input if i and i not in stop)
        return out


def _constant_from_scalar_attrs(node: onnx.NodeProto) -> onnx.TensorProto | None:
    for key, dtype in (("value_float", np.float32), ("value_int", np.int64)):
        value = attr(node, key)
        if value is not None:
            return numpy_helper.from_array(np.array(value, dtype=dtype))
    for key, dtype in (("value_floats", np.float32), ("value_ints", np.int64)):
        value = attr(node, key)
        if value is not None:
            return numpy_helper.from_array(np.array(list(value), dtype=dtype))
    return None


def node_label(node: onnx.NodeProto) -> str:
    """How a node is named in messages: its op and name (or first output when unnamed)."""
    return f"{node.op_type} '{node.name or node.output[0]}'"
