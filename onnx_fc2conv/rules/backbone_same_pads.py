"""Explicit 'same' pads written for one size become `auto_pad=SAME_UPPER`.

tf2onnx writes Keras `padding='same'` on a strided layer as explicit pads computed for the
exported size: total `max((ceil(n / s) - 1) * s + d * (k - 1) + 1 - n, 0)`, the odd pixel at the
end (`SAME_UPPER`). At the exported size `auto_pad=SAME_UPPER` gives the same pads; at other sizes
it gives TF's own rule, where the explicit pads make branches that join disagree. Taken only where
the model does not run one pixel larger as it is (elsewhere the explicit pads are what the original
means at other sizes), and only for asymmetric pads (symmetric ones are a choice of their own).
"""

from __future__ import annotations

import math

import onnx_graphsurgeon as gs

from ..graph import Edit, node_id, shape
from .backbone_base import BackboneContext, BackboneFix


def same_upper_pads(sizes: list[int], kernel: list[int], strides: list[int], dilations: list[int]) -> list[int]:
    begins, ends = [], []
    for n, k, s, d in zip(sizes, kernel, strides, dilations, strict=True):
        total = max((math.ceil(n / s) - 1) * s + d * (k - 1) + 1 - n, 0)
        begins.append(total // 2)
        ends.append(total - total // 2)
    return begins + ends


def same_only_at(
    pads: list[int], sizes: list[int], kernel: list[int], strides: list[int], dilations: list[int]
) -> bool:
    """Asymmetric pads of a strided layer that equal 'same' padding at these input sizes (and so
    may mean fixed pads or 'same' padding: elsewhere the two differ)."""
    n = len(sizes)
    strided = any(s != 1 for s in strides)
    return strided and pads[:n] != pads[n:] and pads == same_upper_pads(sizes, kernel, strides, dilations)


class SamePads:
    ops = frozenset({"Conv", "MaxPool", "AveragePool", "LpPool"})

    def match(self, ctx: BackboneContext, node: gs.Node) -> BackboneFix | None:
        if ctx.grows:  # the explicit pads do not stop other sizes: they keep their own meaning there
            return None
        pads = list(node.attrs.get("pads") or [])
        in_shape = shape(node.inputs[0])
        if not pads or in_shape is None or node.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", b"NOTSET"):
            return None
        n = len(pads) // 2
        sizes = list(in_shape[-n:])
        kernel = list(node.attrs.get("kernel_shape") or (shape(node.inputs[1]) or ())[2:])
        strides = list(node.attrs.get("strides") or [1] * n)
        dilations = list(node.attrs.get("dilations") or [1] * n)
        if not all(isinstance(d, int) for d in sizes) or {len(kernel), len(strides), len(dilations)} != {n}:
            return None  # attributes of the wrong length: onnxruntime refuses the node itself
        if not same_only_at(pads, sizes, kernel, strides, dilations):
            return None
        return BackboneFix(node_id(node), node.op, f"explicit pads {pads} -> auto_pad=SAME_UPPER", self, node)

    def rewrite(self, fix: BackboneFix, edit: Edit) -> None:
        node = fix.target
        del node.attrs["pads"]
        node.attrs["auto_pad"] = "SAME_UPPER"


RULES = [SamePads()]
