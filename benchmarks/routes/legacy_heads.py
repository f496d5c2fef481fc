"""Caffe2-style classifier heads at opsets 7-9, built in code with seeded weights.

They mimic the ONNX Model Zoo's classic models: a batch baked at 1, a Reshape with a constant
`[1, -1]` target, Gemm with a `[1, M]` bias, Dropout with a ratio, an average pool whose kernel
covers the whole map, and, at IR version 3, every weight listed as a graph input too.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

IR_FOR_OPSET = {7: 3, 8: 3, 9: 4}


class Builder:
    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def name(self, base: str) -> str:
        self.count += 1
        return f"{base}_{self.count}"

    def const(self, base: str, shape: tuple[int, ...] | None = None, value: np.ndarray | None = None) -> str:
        name = self.name(base)
        if value is None:
            value = (self.rng.standard_normal(shape) * 0.3).astype(np.float32)
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], **attrs) -> str:
        out = self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out + "_node", **attrs))
        return out

    def conv(self, x: str, c_in: int, c_out: int, k: int, **attrs) -> str:
        w, b = self.const("conv_w", (c_out, c_in, k, k)), self.const("conv_b", (c_out,))
        return self.op("Relu", [self.op("Conv", [x, w, b], kernel_shape=[k, k], **attrs)])

    def gemm(self, x: str, k: int, m: int, *, trans_b: int = 1, bias_row: bool = False) -> str:
        w = self.const("fc_w", (m, k) if trans_b else (k, m))
        b = self.const("fc_b", (1, m) if bias_row else (m,))
        return self.op("Gemm", [x, w, b], transB=trans_b)

    def reshape(self, x: str, target: list[int]) -> str:
        return self.op("Reshape", [x, self.const("shape", value=np.array(target, np.int64))])


def _backbone(b: Builder, x: str) -> tuple[str, int]:
    """16x16 input -> Conv 3x3 -> LRN -> MaxPool 2 -> Conv 3x3 stride 1 pad 1: a [1, 8, 7, 7] map."""
    y = b.conv(x, 3, 6, 3)
    y = b.op("LRN", [y], size=3, alpha=1e-4, beta=0.75, bias=1.0)
    y = b.op("MaxPool", [y], kernel_shape=[2, 2], strides=[2, 2])
    return b.conv(y, 6, 8, 3, pads=[1, 1, 1, 1]), 8 * 7 * 7


def reshape_gemm(b: Builder, x: str, m: int) -> str:
    y, k = _backbone(b, x)
    return b.op("Softmax", [b.gemm(b.reshape(y, [1, -1]), k, m)])


def flatten_gemm_dropout_gemm(b: Builder, x: str, m: int) -> str:
    y, k = _backbone(b, x)
    y = b.op("Relu", [b.gemm(b.op("Flatten", [y]), k, 12)])
    y = b.op("Dropout", [y], ratio=0.5)
    return b.op("Softmax", [b.gemm(y, 12, m)])


def avgpool_reshape_gemm(b: Builder, x: str, m: int) -> str:
    y, _ = _backbone(b, x)
    y = b.op("AveragePool", [y], kernel_shape=[7, 7])
    return b.op("Softmax", [b.gemm(b.reshape(y, [1, -1]), 8, m)])


def gemm_row_bias(b: Builder, x: str, m: int) -> str:
    y, k = _backbone(b, x)
    return b.gemm(b.op("Flatten", [y]), k, m, trans_b=0, bias_row=True)


def matmul_add(b: Builder, x: str, m: int) -> str:
    y, k = _backbone(b, x)
    y = b.op("MatMul", [b.op("Flatten", [y]), b.const("mm_w", (k, m))])
    return b.op("Add", [y, b.const("mm_b", (m,))])


def sum_gemm(b: Builder, x: str, m: int) -> str:
    """Two branches joined by Sum (ResNet-v1 in the zoo), a BatchNormalization with `spatial`."""
    y, k = _backbone(b, x)
    z = b.conv(y, 8, 8, 3, pads=[1, 1, 1, 1])
    stats = {"s": np.ones(8), "b": np.zeros(8), "m": np.full(8, 0.1), "v": np.full(8, 2.0)}
    bn = [b.const(n, value=v.astype(np.float32)) for n, v in stats.items()]
    z = b.op("BatchNormalization", [z, *bn])
    y = b.op("Sum", [y, z])
    return b.gemm(b.op("Flatten", [y]), k, m)


def squeezenet_all_conv(b: Builder, x: str, m: int) -> str:
    y, _ = _backbone(b, x)
    y = b.conv(y, 8, m, 1)
    y = b.op("GlobalAveragePool", [y])
    return b.op("Softmax", [b.reshape(y, [1, m])])


HEADS: dict[str, Callable[[Builder, str, int], str]] = {
    "reshape_gemm": reshape_gemm,
    "flatten_gemm_dropout_gemm": flatten_gemm_dropout_gemm,
    "avgpool7_reshape_gemm": avgpool_reshape_gemm,
    "gemm_bias_1m": gemm_row_bias,
    "matmul_add": matmul_add,
    "sum_bn_gemm": sum_gemm,
    "squeezenet_gap_reshape_softmax": squeezenet_all_conv,
}


def build(head: str, opset: int, *, weights_as_inputs: bool, classes: int = 5) -> onnx.ModelProto:
    b = Builder(seed=sum(map(ord, head)) + opset)
    out = HEADS[head](b, "data_0", classes)
    _old_attributes(b, opset)
    inputs = [helper.make_tensor_value_info("data_0", TensorProto.FLOAT, [1, 3, 16, 16])]
    if weights_as_inputs:  # IR 3: an initializer must also be a graph input
        inputs += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in b.inits]
    output = helper.make_tensor_value_info(out, TensorProto.FLOAT, None)
    graph = helper.make_graph(b.nodes, f"caffe2_{head}", inputs, [output], b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = IR_FOR_OPSET[opset] if weights_as_inputs else max(IR_FOR_OPSET[opset], 4)
    inferred = onnx.shape_inference.infer_shapes(model)
    model.graph.output[0].CopyFrom(inferred.graph.output[0])
    onnx.checker.check_model(model)
    return model


def _old_attributes(b: Builder, opset: int) -> None:
    """Attributes the zoo's models carry at these opsets (BatchNormalization's `spatial` until 9)."""
    for node in b.nodes:
        if node.op_type == "BatchNormalization" and opset < 9:
            node.attribute.append(helper.make_attribute("spatial", 1))


def all_models() -> dict[str, onnx.ModelProto]:
    models = {}
    for head in HEADS:
        for opset in (7, 8, 9):
            models[f"caffe2/{head}@{opset}"] = build(head, opset, weights_as_inputs=opset < 9)
    return models
