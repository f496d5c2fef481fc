"""onnxruntime's fused operators, written back as the standard ops they fuse.

A model saved by onnxruntime's offline optimizer (`SessionOptions.optimized_model_filepath`, level
`ORT_ENABLE_EXTENDED`) holds com.microsoft's `FusedConv` and `FusedGemm`:

    FusedConv(X, W, B, Z; activation, activation_params) = act(Conv(X, W, B) + Z)
    FusedGemm(A, B, C; activation, activation_*)          = act(Gemm(A, B, C))

with `act` a standard op: FusedConv names it and lists its float attributes in order
(LeakyRelu: alpha; HardSigmoid: alpha, beta; Clip: min, max), FusedGemm copies each attribute of
the op it absorbed as `activation_<name>`. Written as `Conv [-> Add] -> act` and `Gemm -> act` they
compute the same values, so the heads, shapes and layouts are read as for any exported model (and
onnxruntime fuses them again when it loads the converted model). An activation without a standard
op at the model's opset is refused, naming the node.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .errors import NotConvertibleError
from .rules.base import Code, Refusal

FUSED_OPS = frozenset({"FusedConv", "FusedGemm"})
_CONV_PARAMS = {"LeakyRelu": ("alpha",), "HardSigmoid": ("alpha", "beta"), "Clip": ("min", "max")}
_PREFIX = "activation_"


def _has_standard_op(op: str, opset: int) -> bool:
    try:
        onnx.defs.get_schema(op, opset, "")
    except onnx.defs.SchemaError:
        return False
    return True


def _activation(node: onnx.NodeProto, opset: int) -> tuple[str, dict[str, float]] | None:
    """The standard op `node` fuses and its attributes; None: no activation."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    op = attrs.get("activation")
    if op is None:
        return None
    op = op.decode() if isinstance(op, bytes) else str(op)
    if node.op_type == "FusedConv":
        params = list(attrs.get("activation_params", []))
        names = _CONV_PARAMS.get(op, ())
        if len(params) < len(names):
            raise Refusal(Code.UNSUPPORTED_OP, f"FusedConv '{node.name}': {op} needs {len(names)} activation_params")
        values = dict(zip(names, (float(p) for p in params), strict=False))
    else:
        values = {k.removeprefix(_PREFIX): float(v) for k, v in attrs.items() if k.startswith(_PREFIX)}
    if not _has_standard_op(op, opset):
        raise Refusal(
            Code.UNSUPPORTED_OP,
            f"{node.op_type} '{node.name}' fuses activation '{op}', which is no standard op at opset {opset}",
        )
    return op, values


def _fresh(taken: set[str], base: str) -> str:
    name, i = base, 0
    while name in taken:
        i += 1
        name = f"{base}_{i}"
    taken.add(name)
    return name


def _activation_nodes(
    op: str, values: dict[str, float], x: str, y: str, name: str, opset: int, taken: set[str], dtype: np.dtype
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """`y = op(x)`; Clip takes its bounds as inputs (of the data's type) from opset 11."""
    if op == "Clip" and opset >= 11:
        bounds = []
        for key in ("min", "max"):
            bound = _fresh(taken, f"{name}_{key}")
            bounds.append(numpy_helper.from_array(np.array(values[key], dtype), bound))
        node = helper.make_node("Clip", [x, *(b.name for b in bounds)], [y], name=name)
        return [node], bounds
    return [helper.make_node(op, [x], [y], name=name, **values)], []


def _unfused(
    node: onnx.NodeProto, opset: int, taken: set[str], dtype: np.dtype
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    activation = _activation(node, opset)
    standard = "Conv" if node.op_type == "FusedConv" else "Gemm"
    kept = set(onnx.defs.get_schema(standard, opset, "").attributes)
    attrs = [a for a in node.attribute if a.name in kept]
    inputs = list(node.input)
    z = inputs[3] if standard == "Conv" and len(inputs) > 3 and inputs[3] else None
    inputs = inputs[:3]
    y = node.output[0]
    last = y if z is None and activation is None else _fresh(taken, f"{y}_{standard.lower()}")
    core = helper.make_node(standard, inputs, [last], name=node.name)
    core.attribute.extend(attrs)
    nodes, inits = [core], []
    if z is not None:
        summed = y if activation is None else _fresh(taken, f"{y}_sum")
        nodes.append(helper.make_node("Add", [last, z], [summed], name=f"{node.name}/add"))
        last = summed
    if activation is not None:
        name = f"{node.name}/{activation[0]}"
        more, inits = _activation_nodes(*activation, last, y, name, opset, taken, dtype)
        nodes += more
    return nodes, inits


def unfuse(model: onnx.ModelProto, opset: int) -> list[str]:
    """Replace every FusedConv and FusedGemm of the main graph by standard ops; the notice saying so
    (none when there were none). NotConvertibleError: an activation without a standard op."""
    try:
        counts = _unfuse(model, opset)
    except Refusal as refusal:
        raise NotConvertibleError(refusal.reason, [refusal.reason]) from None
    if not counts:
        return []
    done = ", ".join(f"{n} {op}" for op, n in sorted(counts.items()))
    return [f"onnxruntime's fused ops written as the standard ops they fuse: {done}"]


def _unfuse(model: onnx.ModelProto, opset: int) -> dict[str, int]:
    graph = model.graph
    fused = [n for n in graph.node if n.domain == "com.microsoft" and n.op_type in FUSED_OPS]
    if not fused:
        return {}
    taken = {t for n in graph.node for t in (*n.input, *n.output)} | {t.name for t in graph.initializer}
    taken |= {n.name for n in graph.node}
    weight_types = {t.name: helper.tensor_dtype_to_np_dtype(t.data_type) for t in graph.initializer}
    counts: dict[str, int] = {}
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        if node.domain != "com.microsoft" or node.op_type not in FUSED_OPS:
            nodes.append(node)
            continue
        dtype = weight_types.get(node.input[1], np.dtype(np.float32))  # the data's type, as the weight's
        replacement, inits = _unfused(node, opset, taken, dtype)
        nodes += replacement
        graph.initializer.extend(inits)
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    del graph.node[:]
    graph.node.extend(nodes)
    return counts
