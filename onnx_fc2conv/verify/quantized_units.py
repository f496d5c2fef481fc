"""One unit of a quantized output: what a difference in rounding order may change.

The rewrite keeps every integer, but onnxruntime fuses `DequantizeLinear -> Gemm -> QuantizeLinear`
into a QGemm and the Conv form into a QLinearConv, whose requantization rounds the same sums in
a different float order: a value that lies on a rounding boundary may land one unit away. So an
output that is quantized is compared in its own units: at most one unit of difference, that is
one scale for the float output of a per-tensor `DequantizeLinear`, 1 for an integer output of a
quantizing op, on at most one element in a hundred (compare.ROUNDED_SHARE).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

_QUANTIZING_OPS = frozenset({"QuantizeLinear", "QLinearConv", "QLinearMatMul", "QGemm", "QLinearAdd", "QLinearMul"})


def output_units(model: onnx.ModelProto) -> dict[str, float]:
    """The unit of each quantized graph output (absent: not quantized)."""
    constants = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            constants[node.output[0]] = node.attribute[0].t
    producers = {out: node for node in model.graph.node for out in node.output}
    units: dict[str, float] = {}
    for output in model.graph.output:
        node = producers.get(output.name)
        if node is None:
            continue
        if node.op_type in _QUANTIZING_OPS:
            units[output.name] = 1.0
        elif node.op_type == "DequantizeLinear" and len(node.input) > 1 and node.input[1] in constants:
            scale = numpy_helper.to_array(constants[node.input[1]])
            if scale.size == 1:
                units[output.name] = float(np.abs(scale).reshape(()))
    return units


def unit_notes(units: dict[str, float]) -> list[str]:
    return [
        f"output '{name}' is quantized: compared within one unit of rounding ({unit:.4g}) beyond the float bound"
        for name, unit in units.items()
    ]
