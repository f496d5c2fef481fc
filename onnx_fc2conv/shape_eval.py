"""Evaluate small shape-computing subgraphs (Shape -> Gather -> Concat -> Reshape and kin).

Exporters compute the target of a flatten Reshape at run time (`x.view(x.size(0), -1)`). To
prove such a Reshape is a flatten we evaluate its shape input for a concrete batch size, with
every other dimension taken from the inferred (static) shapes. Only the few integer ops these
subgraphs use are supported; anything else makes the evaluation return None.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from .graph import attr, constant, producer, shape

_MAX_DEPTH = 64


def evaluate_int_tensor(tensor: gs.Tensor, batch: int) -> np.ndarray | None:
    """Value of an integer tensor computed from shapes and constants, or None if unknown."""
    memo: dict[int, np.ndarray | None] = {}
    return _eval(tensor, batch, memo, 0)


def _eval(tensor: gs.Tensor, batch: int, memo: dict[int, np.ndarray | None], depth: int):
    key = id(tensor)
    if key in memo:
        return memo[key]
    if depth > _MAX_DEPTH:
        return None
    const = constant(tensor)
    if const is not None:
        memo[key] = const
        return const
    node = producer(tensor)
    if node is None:
        return None
    args = []
    if node.op != "Shape":
        for inp in node.inputs:
            if not inp.name:
                args.append(None)
                continue
            value = _eval(inp, batch, memo, depth + 1)
            if value is None:
                return None
            args.append(value)
    try:
        result = _apply(node, args, batch)
    except (ValueError, IndexError, TypeError):
        result = None
    memo[key] = result
    return result


def _apply(node: gs.Node, args: list, batch: int) -> np.ndarray | None:
    op = node.op
    if op == "Shape":
        found = shape(node.inputs[0])
        if found is None:
            return None
        dims = [batch, *found[1:]] if found else []
        if not all(isinstance(d, int) for d in dims):
            return None
        full = np.array(dims, dtype=np.int64)
        start = attr(node, "start", 0)
        end = attr(node, "end", len(dims))
        return full[start:end]
    if op in ("Identity", "Cast"):
        return args[0].astype(np.int64) if op == "Cast" else args[0]
    if op == "Gather":
        axis = attr(node, "axis", 0)
        return np.take(args[0], args[1], axis=axis)
    if op == "Unsqueeze":
        axes = attr(node, "axes") if len(args) < 2 else list(args[1])
        out = args[0]
        for a in sorted(int(a) % (out.ndim + len(axes)) for a in axes):
            out = np.expand_dims(out, a)
        return out
    if op == "Squeeze":
        axes = attr(node, "axes") if len(args) < 2 else list(args[1])
        return np.squeeze(args[0], axis=tuple(int(a) for a in axes)) if axes else np.squeeze(args[0])
    if op == "Concat":
        return np.concatenate([np.atleast_1d(a) for a in args], axis=attr(node, "axis", 0))
    if op == "Slice":
        return _slice(node, args)
    if op in ("Mul", "Div", "Add", "Sub"):
        a, b = args
        fn = {"Mul": np.multiply, "Div": np.floor_divide, "Add": np.add, "Sub": np.subtract}[op]
        return fn(a, b)
    if op == "ReduceProd":
        keep = attr(node, "keepdims", 1)
        return np.prod(args[0], keepdims=bool(keep)).astype(np.int64)
    if op == "Reshape":
        return args[0].reshape(tuple(int(d) for d in args[1]))
    return None


def _slice(node: gs.Node, args: list) -> np.ndarray:
    data = args[0]
    if len(args) >= 3:
        starts, ends = args[1], args[2]
        axes = args[3] if len(args) > 3 and args[3] is not None else np.arange(len(starts))
        steps = args[4] if len(args) > 4 and args[4] is not None else np.ones(len(starts), np.int64)
    else:
        starts = attr(node, "starts")
        ends = attr(node, "ends")
        axes = attr(node, "axes", list(range(len(starts))))
        steps = [1] * len(starts)
    index = [slice(None)] * data.ndim
    for s, e, a, st in zip(starts, ends, axes, steps, strict=False):
        index[int(a)] = slice(int(s), int(min(e, 2**62)), int(st))
    return data[tuple(index)]
