"""A flatten of a channel-last map: `Transpose(perm=[0, 2, .., r-1, 1]) -> flatten -> FC`.

The FC weight's `K` axis is then laid out as `[*S, C]`; read in that layout and permuted to
`[C, *S]` it is the kernel of a Conv on the channel-first map before the Transpose, which goes.
Besides the flatten only `Shape` may read the transposed map (tf2onnx computes the Reshape
target from it); the Transpose stays for them.
"""

from __future__ import annotations

import math

import onnx_graphsurgeon as gs

from ..graph import constant_shape, is_output, node_label, producer, shape, static_tail, users
from .base import GLOBAL_POOLS, Code, Refusal

RULES: list = []  # a step of every flatten rule, called by the head walker


def channel_last_perm(rank: int) -> tuple[int, ...]:
    return (0, *range(2, rank), 1)


def absorb(graph: gs.Graph, flatten: gs.Node, src: gs.Tensor, src_shape: tuple, fc_label: str):
    """(channel-first map, perm) when `src` is a channel-last Transpose that can be absorbed."""
    rank = len(src_shape)
    node = producer(src)
    if node is None or node.op != "Transpose" or tuple(node.attrs.get("perm", ())) != channel_last_perm(rank):
        _refuse_hidden_transpose(src, rank, src_shape, fc_label)
        return None
    others = [u for u in users(src) if u is not flatten]
    if not is_output(graph, src) and all(u.op == "Shape" for u in others) and static_tail(node.inputs[0]) is not None:
        return node.inputs[0], channel_last_perm(rank)
    if any(d != 1 for d in src_shape[1:-1]):
        # Not absorbed, [N, H, W, C] would be read as [N, C', H', W']: exact only at the exported
        # size (a 1 x 1 map cannot grow, so that case stays exact).
        raise Refusal(
            Code.CHANNEL_LAST_SHARED,
            f"{node_label(node)} before {fc_label} moves the channels last and its output is also "
            "used elsewhere: the kernel layout cannot be proven",
        )
    return None


_HIDING_STEPS = 8


def _refuse_hidden_transpose(src: gs.Tensor, rank: int, src_shape: tuple, fc_label: str) -> None:
    """A channel-last Transpose behind ops that keep the shape with per-tensor constants (a
    QuantizeLinear -> DequantizeLinear pair that onnxruntime's optimizer moved after it): the map
    is channel-last and no rule reads it so. Refusal, unless a global pool makes the map 1 x 1 at
    every size (then any order holds)."""
    tensor, between = src, []
    for _ in range(_HIDING_STEPS):
        node = producer(tensor)
        if node is None:
            return
        if node.op == "Transpose" and tuple(node.attrs.get("perm", ())) == channel_last_perm(rank):
            pooled = getattr(producer(node.inputs[0]), "op", None) in GLOBAL_POOLS  # 1 x 1 at every size
            if between and not pooled:
                raise Refusal(
                    Code.CHANNEL_LAST_SHARED,
                    f"{node_label(node)} moves the channels last before {', '.join(between)} and {fc_label}: "
                    "no rule reads that map channel-last, so the kernel layout cannot be proven",
                )
            return
        data = [t for t in node.inputs if t.name and constant_shape(t) is None]  # shapes only: no weight loads
        constants_per_tensor = all(
            math.prod(constant_shape(t) or ()) <= 1 for t in node.inputs if t.name and t not in data
        )
        if len(data) != 1 or len(node.outputs) != 1 or not constants_per_tensor:
            return
        if shape(node.outputs[0]) != shape(data[0]):
            return
        between.insert(0, node_label(node))
        tensor = data[0]
