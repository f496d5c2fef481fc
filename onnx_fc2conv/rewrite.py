"""Rewrite matched heads into Conv nodes, in place on a ModelProto.

The algebra (DESIGN.md): a Gemm `y = alpha * x @ B' + beta * C` on `x = flatten(f)`, `f` of shape
`[N, C, *S]`, equals `Conv(f, W, b)` with `W = alpha * B'` (as `[M, K]`) reshaped to `[M, C, *S]`
and `b = beta * C` broadcast to `[M]`. Behind an NHWC flatten the `[M, K]` rows are laid out as
`[M, *S, C]` and are permuted back to `[M, C, *S]`. Later FC layers see `[N, K]` and become `1 x 1`
convolutions; per-feature constants `[M]` / `[1, M]` become `[M, 1, ..]`.

Weights are not copied when they need not be: a `[M, K]` initializer used by one node with
`alpha == 1` only gets new dims.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .graph import GraphIndex, set_attr
from .heads import FcLayer, Head

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LayerRewrite:
    """What one FC layer became."""

    nodes: tuple[str, ...]
    old_op: str
    old_weight_shape: tuple[int, ...]
    kernel_shape: tuple[int, ...]
    parameters: int
    weight_copied: bool


def kernel_from_weight(weight: np.ndarray, layer: FcLayer, perm: tuple[int, ...] | None) -> np.ndarray:
    """The Conv kernel `[M, C, *S]` equal to the FC weight (pure function, for tests and reuse)."""
    w = weight if layer.weight_is_mk else weight.T
    if layer.alpha != 1.0:
        w = (w.astype(np.float64) * layer.alpha).astype(weight.dtype)
    m, c, *spatial = layer.kernel_shape
    if perm is None:
        return np.ascontiguousarray(w).reshape(layer.kernel_shape)
    channel_first = (c, *spatial)
    stored = w.reshape(m, *(channel_first[p - 1] for p in perm[1:]))
    inverse = np.argsort(perm)
    return np.ascontiguousarray(stored.transpose([0, *(int(inverse[j]) for j in range(1, len(perm)))]))


def bias_from_constant(value: np.ndarray, beta: float, out_features: int) -> np.ndarray:
    b = np.broadcast_to(value.reshape(-1) if value.size != 1 else value.reshape(()), (out_features,))
    if beta != 1.0:
        b = (b.astype(np.float64) * beta).astype(value.dtype)
    return np.ascontiguousarray(b)


class _Editor:
    """Mutations on one model with name bookkeeping; the index is of the model before editing."""

    def __init__(self, model: onnx.ModelProto, ix: GraphIndex) -> None:
        self.model = model
        self.ix = ix
        self.graph = model.graph
        self.taken = {t for n in self.graph.node for t in (*n.input, *n.output)} | set(ix.initializers)
        self.taken |= {n.name for n in self.graph.node}

    def fresh(self, base: str) -> str:
        name, i = base, 1
        while name in self.taken:
            name, i = f"{base}_{i}", i + 1
        self.taken.add(name)
        return name

    def add_initializer(self, base: str, array: np.ndarray) -> str:
        name = self.fresh(base)
        self.graph.initializer.append(numpy_helper.from_array(array, name))
        return name

    def node_index(self, name: str) -> int:
        for i, node in enumerate(self.graph.node):
            if node.name == name:
                return i
        raise KeyError(name)

    def node(self, name: str) -> onnx.NodeProto:
        return self.graph.node[self.node_index(name)]

    def reshaped_constant(self, name: str, shape: tuple[int, ...], users: int = 1) -> tuple[str, bool]:
        """`name` with new dims; in place when it is an initializer read only here. (name, copied)."""
        tensor = self.ix.initializers.get(name)
        if tensor is not None and self.ix.use_count(name) == users and _in_place_ok(tensor):
            del tensor.dims[:]
            tensor.dims.extend(shape)
            _retype_input(self.graph, name, shape)
            return name, False
        value = self.ix.constant(name)
        assert value is not None
        return self.add_initializer(f"{name}_conv", np.ascontiguousarray(value).reshape(shape)), True


def _in_place_ok(tensor: onnx.TensorProto) -> bool:
    # Only dense tensors; external-data references keep their own layout metadata.
    return tensor.data_location != onnx.TensorProto.EXTERNAL


def _retype_input(graph: onnx.GraphProto, name: str, shape: tuple[int, ...]) -> None:
    """Old IR versions list initializers as graph inputs: keep that declaration in step."""
    for vi in graph.input:
        if vi.name == name:
            dims = vi.type.tensor_type.shape
            dims.ClearField("dim")
            for d in shape:
                dims.dim.add().dim_value = d


def rewrite_head(model: onnx.ModelProto, ix: GraphIndex, head: Head) -> list[LayerRewrite]:
    """Replace one head's FC layers with Conv nodes and adapt its tail ops."""
    ed = _Editor(model, ix)
    spatial = head.spatial_rank
    if head.keepdims_node:
        set_attr(ed.node(head.keepdims_node), "keepdims", 1)
    done: list[LayerRewrite] = []
    source = head.feature
    for i, layer in enumerate(head.layers):
        done.append(_layer_to_conv(ed, layer, source if i == 0 else None, head.perm if i == 0 else None))
    for op in head.tail:
        _rewrite_tail(ed, op, head, spatial)
    return done


def _layer_to_conv(ed: _Editor, layer: FcLayer, source: str | None, perm: tuple[int, ...] | None) -> LayerRewrite:
    ix = ed.ix
    fc = ed.node(layer.nodes[0])
    data = source if source is not None else fc.input[0]
    old_shape = ix.constant_shape(layer.weight) or ()
    zero_copy = layer.weight_is_mk and layer.alpha == 1.0 and perm is None
    if zero_copy:
        kernel, copied = ed.reshaped_constant(layer.weight, layer.kernel_shape)
    else:
        weight = ix.constant(layer.weight)
        assert weight is not None
        kernel = ed.add_initializer(f"{layer.weight}_conv", kernel_from_weight(weight, layer, perm))
        copied = True
    inputs = [data, kernel]
    if layer.bias is not None:
        bshape = ix.constant_shape(layer.bias)
        if layer.beta == 1.0 and bshape == (layer.out_features,):
            inputs.append(layer.bias)
        else:
            value = ix.constant(layer.bias)
            assert value is not None
            bias = bias_from_constant(value, layer.beta, layer.out_features)
            inputs.append(ed.add_initializer(f"{layer.bias}_conv", bias))
    k = list(layer.kernel_shape[2:])
    conv = helper.make_node(
        "Conv", inputs, [layer.output], name=fc.name, kernel_shape=k, strides=[1] * len(k), pads=[0] * 2 * len(k)
    )
    index = ed.node_index(fc.name)
    ed.graph.node.insert(index, conv)
    del ed.graph.node[index + 1]
    for extra in layer.nodes[1:]:  # the bias Add of MatMul+Add now lives in the Conv
        del ed.graph.node[ed.node_index(extra)]
    log.debug("%s %s -> Conv %s", layer.op, fc.name, layer.kernel_shape)
    return LayerRewrite(layer.nodes, layer.op, tuple(old_shape), layer.kernel_shape, layer.parameters, copied)


def _rewrite_tail(ed: _Editor, op, head: Head, spatial: int) -> None:
    node = ed.node(op.node)
    if op.action == "per_feature":
        for i in op.inputs:
            name = node.input[i]
            shape = ed.ix.constant_shape(name) or ()
            width = shape[-1]
            users = sum(1 for x in node.input if x == name)
            node.input[i], _ = ed.reshaped_constant(name, (width, *([1] * spatial)), users)
    elif op.action == "class_axis":
        set_attr(node, "axis", 1)
    elif op.action == "legacy_softmax":
        _legacy_softmax(ed, node, spatial)
    elif op.action == "to_identity":
        node.op_type = "Identity"
        del node.input[1:]
        node.ClearField("attribute")
    elif op.action == "bn_unwrap":
        unsqueeze, squeeze = (ed.node(n) for n in op.extra)
        node.input[0] = unsqueeze.input[0]
        node.output[0] = squeeze.output[0]
        del ed.graph.node[ed.node_index(squeeze.name)]
        del ed.graph.node[ed.node_index(unsqueeze.name)]


def _legacy_softmax(ed: _Editor, node: onnx.NodeProto, spatial: int) -> None:
    """Before opset 13 Softmax coerces its input to 2-D at `axis`: move the classes last, per pixel."""
    rank = spatial + 2
    to_last = [0, *range(2, rank), 1]
    to_first = [0, rank - 1, *range(1, rank - 1)]
    moved = ed.fresh(f"{node.output[0]}_classes_last")
    result = ed.fresh(f"{node.output[0]}_per_pixel")
    before = helper.make_node(
        "Transpose", [node.input[0]], [moved], name=ed.fresh(f"{node.name}_to_last"), perm=to_last
    )
    after = helper.make_node(
        "Transpose", [result], [node.output[0]], name=ed.fresh(f"{node.name}_to_first"), perm=to_first
    )
    node.input[0] = moved
    node.output[0] = result
    set_attr(node, "axis", rank - 1)
    index = ed.node_index(node.name)
    ed.graph.node.insert(index + 1, after)
    ed.graph.node.insert(index, before)


def remove_dead_nodes(model: onnx.ModelProto) -> int:
    """Drop nodes nothing reads and initializers no node reads; returns how many nodes went."""
    graph = model.graph
    live = {o.name for o in graph.output}
    keep: list[bool] = [False] * len(graph.node)
    for i in range(len(graph.node) - 1, -1, -1):
        node = graph.node[i]
        if any(o in live for o in node.output if o):
            keep[i] = True
            live.update(x for x in node.input if x)
            live.update(_subgraph_reads(node))
    removed = keep.count(False)
    for i in range(len(graph.node) - 1, -1, -1):
        if not keep[i]:
            del graph.node[i]
    dead_inits = [i for i, t in enumerate(graph.initializer) if t.name not in live]
    dead_names = {graph.initializer[i].name for i in dead_inits}
    for i in reversed(dead_inits):
        del graph.initializer[i]
    for i in range(len(graph.input) - 1, -1, -1):
        if graph.input[i].name in dead_names:
            del graph.input[i]
    return removed


def _subgraph_reads(node: onnx.NodeProto) -> set[str]:
    names: set[str] = set()
    for a in node.attribute:
        graphs = list(a.graphs) + ([a.g] if a.HasField("g") else [])
        for g in graphs:
            for sub in g.node:
                names.update(x for x in sub.input if x)
                names.update(_subgraph_reads(sub))
    return names
