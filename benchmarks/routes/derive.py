"""The routes a classifier takes to its users besides the current exporters, each a function from
an exported model to the model a user would hold: down-converted to an older opset, simplified by
onnxsim, optimised offline by onnxruntime, converted to float16. The probe's own dependencies
(onnxsim, onnxconverter_common) are imported here only, when a route runs."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import onnx
import onnxruntime as ort

QUANTIZED_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "MatMulInteger"})


def opset_of(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def quantized(model: onnx.ModelProto) -> bool:
    return any(n.op_type in QUANTIZED_OPS or n.domain == "com.microsoft" for n in model.graph.node)


class Unsuitable(Exception):
    """The route does not apply to this model (no probe)."""


def down_convert(target: int) -> Callable[[onnx.ModelProto], onnx.ModelProto]:
    def route(model: onnx.ModelProto) -> onnx.ModelProto:
        if opset_of(model) <= target:
            raise Unsuitable(f"already at opset {opset_of(model)}")
        from onnx import version_converter

        return version_converter.convert_version(model, target)

    return route


def simplify(model: onnx.ModelProto) -> onnx.ModelProto:
    import onnxsim

    simplified, ok = onnxsim.simplify(model)
    if not ok:
        raise RuntimeError("onnxsim could not validate its result")
    return simplified


def ort_offline(level: ort.GraphOptimizationLevel) -> Callable[[onnx.ModelProto], onnx.ModelProto]:
    def route(model: onnx.ModelProto) -> onnx.ModelProto:
        with tempfile.TemporaryDirectory() as tmp:
            source, target = Path(tmp) / "in.onnx", Path(tmp) / "out.onnx"
            onnx.save(model, source)
            options = ort.SessionOptions()
            options.graph_optimization_level = level
            options.optimized_model_filepath = str(target)
            ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
            return onnx.load(target)

    return route


def float16(keep_io_types: bool) -> Callable[[onnx.ModelProto], onnx.ModelProto]:
    def route(model: onnx.ModelProto) -> onnx.ModelProto:
        if quantized(model):
            raise Unsuitable("quantized")
        from onnxconverter_common import float16 as f16

        return f16.convert_float_to_float16(model, keep_io_types=keep_io_types)

    return route


def identity(model: onnx.ModelProto) -> onnx.ModelProto:
    return model


ROUTES: dict[str, Callable[[onnx.ModelProto], onnx.ModelProto]] = {
    "original": identity,
    **{f"opset{n}": down_convert(n) for n in (7, 8, 9, 10, 11, 12)},
    "onnxsim": simplify,
    "ort-basic": ort_offline(ort.GraphOptimizationLevel.ORT_ENABLE_BASIC),
    "ort-extended": ort_offline(ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED),
    "fp16": float16(False),
    "fp16-keepio": float16(True),
}
