"""The one in-memory graph: onnx-graphsurgeon, with the few look-ups the rules share.

Every pass works on a `gs.Graph`: a tensor knows its producer (`tensor.inputs`), its users
(`tensor.outputs`), its shape and, for a constant, its value. Nodes are objects, never looked
up by name. `write_back` returns the edited graph to the ModelProto it came from without
copying the weights that did not change (onnx-graphsurgeon's own exporter copies every
initializer once, which would double the peak memory of a large model).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import helper, numpy_helper
from onnx_graphsurgeon.exporters.onnx_exporter import OnnxExporter
from onnx_graphsurgeon.ir.tensor import LazyValues

from .errors import ModelLoadError, one_line

Dim = int | str | None
"""A dimension: a fixed size, a symbolic name, or unknown."""

# Ops through which a constant keeps its value (the TorchScript exporter routes deduplicated
# initializers through Identity nodes).
_PASS_THROUGH = frozenset({"Identity"})


def import_graph(model: onnx.ModelProto) -> gs.Graph:
    """The graph of `model` (shape-inferred), sharing its weights; `model` keeps ownership."""
    gs.logger.G_LOGGER.severity = gs.logger.G_LOGGER.ERROR
    return gs.import_onnx(model)


def opset_version(model: onnx.ModelProto, domain: str = "") -> int:
    for imp in model.opset_import:
        if imp.domain in (domain, "ai.onnx" if domain == "" else domain):
            return int(imp.version)
    return 0


def value_info_dims(vi: onnx.ValueInfoProto) -> tuple[Dim, ...] | None:
    """A value_info's dims (int, symbol or None), or None when it has no tensor shape."""
    tp = vi.type
    if not tp.HasField("tensor_type") or not tp.tensor_type.HasField("shape"):
        return None
    dims: list[Dim] = []
    for d in tp.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        else:
            dims.append(d.dim_param or None)
    return tuple(dims)


def set_value_info_dims(vi: onnx.ValueInfoProto, dims: Iterable[Dim]) -> None:
    shape = vi.type.tensor_type.shape
    shape.ClearField("dim")
    for d in dims:
        dim = shape.dim.add()
        if isinstance(d, int):
            dim.dim_value = d
        elif d:
            dim.dim_param = d


# -- tensors ------------------------------------------------------------------------------------


def producer(tensor: gs.Tensor) -> gs.Node | None:
    return tensor.inputs[0] if tensor.inputs else None


def users(tensor: gs.Tensor) -> list[gs.Node]:
    """The nodes reading `tensor`, each once."""
    return list({id(n): n for n in tensor.outputs}.values())


def is_output(graph: gs.Graph, tensor: gs.Tensor) -> bool:
    return any(t is tensor for t in graph.outputs)


def is_graph_input(graph: gs.Graph, tensor: gs.Tensor) -> bool:
    return any(t is tensor for t in graph.inputs)


def sole_user(graph: gs.Graph, tensor: gs.Tensor) -> gs.Node | None:
    found = users(tensor)
    if len(found) == 1 and not is_output(graph, tensor):
        return found[0]
    return None


def constant_source(tensor: gs.Tensor) -> gs.Constant | None:
    """The Constant holding a tensor's value, through Constant nodes and Identity chains."""
    for _ in range(64):
        if isinstance(tensor, gs.Constant):
            return tensor
        node = producer(tensor)
        if node is None:
            return None
        if node.op == "Constant":
            return _constant_node_value(node)
        if node.op in _PASS_THROUGH and node.inputs:
            tensor = node.inputs[0]
            continue
        return None
    return None


def _constant_node_value(node: gs.Node) -> gs.Constant | None:
    value = node.attrs.get("value")
    if isinstance(value, gs.Constant):
        return value
    for key, dtype in (("value_float", np.float32), ("value_int", np.int64)):
        if key in node.attrs:
            return gs.Constant(node.outputs[0].name, np.array(node.attrs[key], dtype=dtype))
    for key, dtype in (("value_floats", np.float32), ("value_ints", np.int64)):
        if key in node.attrs:
            return gs.Constant(node.outputs[0].name, np.array(list(node.attrs[key]), dtype=dtype))
    return None


def constant(tensor: gs.Tensor) -> np.ndarray | None:
    src = constant_source(tensor)
    return None if src is None else np.asarray(src.values)


def constant_ints(tensor: gs.Tensor) -> list[int] | None:
    """A constant's values as a flat list of ints (a shape, axes, pads), or None."""
    value = constant(tensor)
    return None if value is None else [int(v) for v in value.reshape(-1)]


def constant_shape(tensor: gs.Tensor) -> tuple[int, ...] | None:
    """A constant's shape, read without loading its values."""
    src = constant_source(tensor)
    return None if src is None else tuple(int(d) for d in src.shape)


def is_constant(tensor: gs.Tensor) -> bool:
    return constant_source(tensor) is not None


def shape(tensor: gs.Tensor) -> tuple[Dim, ...] | None:
    if isinstance(tensor, gs.Constant):
        return tuple(int(d) for d in tensor.shape)
    if tensor.shape is not None:
        return tuple(tensor.shape)
    return constant_shape(tensor)


def rank(tensor: gs.Tensor) -> int | None:
    found = shape(tensor)
    return None if found is None else len(found)


def static_tail(tensor: gs.Tensor) -> tuple[int, ...] | None:
    """Dims after the batch dim, if all are known positive integers."""
    found = shape(tensor)
    if not found:
        return None
    tail = found[1:]
    if all(isinstance(d, int) and d > 0 for d in tail):
        return tuple(int(d) for d in tail)  # type: ignore[arg-type]
    return None


def elem_type(tensor: gs.Tensor) -> int | None:
    if tensor.dtype is None:
        src = constant_source(tensor)
        return None if src is None else int(helper.np_dtype_to_tensor_dtype(np.dtype(src.dtype)))
    return int(gs.exporters.onnx_exporter.dtype_to_onnx(tensor.dtype))


def ancestors(roots: Iterable[gs.Tensor], stop: Iterable[gs.Tensor] = ()) -> list[gs.Node]:
    """Nodes the given tensors depend on (not crossing `stop` tensors)."""
    stopped = {id(t) for t in stop}
    seen: set[int] = set()
    out: list[gs.Node] = []
    stack = [t for t in roots if id(t) not in stopped]
    while stack:
        node = producer(stack.pop())
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        out.append(node)
        stack.extend(t for t in node.inputs if id(t) not in stopped)
    return out


def attr(node: gs.Node, name: str, default: Any = None) -> Any:
    return node.attrs.get(name, default)


def node_label(node: gs.Node) -> str:
    """How a node is named in messages: its op and name (or first output when unnamed)."""
    name = node.name or (node.outputs[0].name if node.outputs else "")
    return f"{node.op} '{name}'"


def node_id(node: gs.Node) -> str:
    """A node's name for records: its name, else its first output's name."""
    return node.name or (node.outputs[0].name if node.outputs else node.op)


# -- editing ------------------------------------------------------------------------------------


def fresh_name(base: str, taken: set[str]) -> str:
    """`base`, or `base_1`, `base_2`, ... : the first not in `taken`, which it joins."""
    name, i = base, 1
    while name in taken:
        name, i = f"{base}_{i}", i + 1
    taken.add(name)
    return name


class Edit:
    """Edits of one graph: fresh names, new constants, variables and nodes."""

    def __init__(self, graph: gs.Graph) -> None:
        self.graph = graph
        self.taken = set(graph.tensors()) | {n.name for n in graph.nodes}

    def add_node(
        self, op: str, base: str, inputs: list[gs.Tensor], outputs: list[gs.Tensor], *, at: gs.Node, **attrs: Any
    ) -> gs.Node:
        """A new node, placed just before `at` (or after it, when `at` produces one of its inputs):
        the graph keeps its order and write_back does not need to re-sort it."""
        return self.insert(gs.Node(op, self.fresh(base), attrs, inputs=inputs, outputs=outputs), at)

    def insert(self, node: gs.Node, at: gs.Node) -> gs.Node:
        nodes = self.graph.nodes
        index = next(i for i, n in enumerate(nodes) if n is at)
        after = any(t is o for t in node.inputs for o in at.outputs)
        nodes.insert(index + 1 if after else index, node)
        return node

    def fresh(self, base: str) -> str:
        return fresh_name(base, self.taken)

    def constant(self, base: str, value: np.ndarray) -> gs.Constant:
        return gs.Constant(self.fresh(base), np.ascontiguousarray(value))

    def variable(self, base: str) -> gs.Variable:
        return gs.Variable(self.fresh(base))


def reshape_in_place(const: gs.Constant, new_shape: tuple[int, ...]) -> bool:
    """Give a constant new dims without copying its bytes (a weight read from the model).

    Only a dense tensor still held by the model can be reshaped this way; returns False otherwise.
    """
    values = const._values
    if not isinstance(values, LazyValues) or values.tensor.data_location == onnx.TensorProto.EXTERNAL:
        return False
    del values.tensor.dims[:]
    values.tensor.dims.extend(new_shape)
    values.shape = list(new_shape)
    return True


def write_back(graph: gs.Graph, model: onnx.ModelProto) -> None:
    """Return the edited `graph` (cleaned up and sorted) to `model`, in place.

    Nodes are exported again; initializers the model still holds are kept as they are (no copy),
    unused ones dropped, new constants added. Inputs, outputs and every other field of the model
    keep their protos; value_info is dropped (it is re-inferred).
    """
    graph.cleanup(remove_unused_graph_inputs=False)
    if not _is_sorted(graph):
        graph.toposort()
    g = model.graph
    g.ClearField("node")
    g.node.extend(_export_node(node) for node in graph.nodes)
    live = {name: t for name, t in graph.tensors().items() if isinstance(t, gs.Constant)}
    held: set[str] = set()
    for i in range(len(g.initializer) - 1, -1, -1):
        name = g.initializer[i].name
        const = live.get(name)
        if const is not None and isinstance(const._values, LazyValues) and name not in held:
            held.add(name)
        else:
            del g.initializer[i]
    for name, const in live.items():
        if name not in held:
            tensor = _tensor_proto(const)
            g.initializer.append(tensor)
            if model.ir_version < 4:  # before IR 4 every initializer is also a graph input
                g.input.append(helper.make_tensor_value_info(name, tensor.data_type, list(tensor.dims)))
                held.add(name)
    kept_inputs = {t.name for t in graph.inputs} | held
    for i in range(len(g.input) - 1, -1, -1):
        vi = g.input[i]
        if vi.name not in kept_inputs:
            del g.input[i]
        elif vi.name in held:  # old IR versions declare initializers as inputs: keep the dims in step
            set_value_info_dims(vi, live[vi.name].shape)
    g.ClearField("value_info")


def _export_node(node: gs.Node) -> onnx.NodeProto:
    try:
        return OnnxExporter.export_node(node)
    except ValueError as exc:  # an empty list attribute has no type onnx-graphsurgeon can give back
        raise ModelLoadError(f"{node_label(node)}: cannot write its attributes back ({one_line(exc)})") from exc


def _is_sorted(graph: gs.Graph) -> bool:
    """Every node after the producers of its inputs (edits keep the original order where they can;
    re-sorting would move every Constant node to the front)."""
    done: set[int] = set()
    for node in graph.nodes:
        for t in node.inputs:
            if t.inputs and id(t.inputs[0]) not in done:
                return False
        done.add(id(node))
    return True


def _tensor_proto(const: gs.Constant) -> onnx.TensorProto:
    if isinstance(const._values, LazyValues):
        tensor = onnx.TensorProto()
        tensor.CopyFrom(const._values.tensor)
        tensor.name = const.name
        return tensor
    return numpy_helper.from_array(np.asarray(const.values), const.name)
