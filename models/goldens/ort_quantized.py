"""Golden models quantized by onnxruntime's own tool from two float goldens (issue 13).

`ts_vgg_small.onnx` (Flatten head) and `ts_resnet_gap.onnx` (global-pool head), each quantized four
ways: QDQ with per-tensor and per-channel int8 weights, QOperator (QGemm, QLinearConv), and dynamic
(DynamicQuantizeLinear -> MatMulInteger). Activations are uint8, weights int8; and `ts_vgg_small.onnx`
with int4 weights (DequantizeLinear reads int4 from opset 21 on).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnx
from onnx import version_converter
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static

from goldens import ort_quantization

# short name: (float golden, its input shape, how far the quantized output may be from the float one)
SOURCES = {
    "vgg_small": ("ts_vgg_small.onnx", (1, 3, 64, 64), 0.005),  # outputs up to about 0.11
    "resnet_gap": ("ts_resnet_gap.onnx", (1, 3, 32, 32), 0.05),  # outputs up to about 1.4
}
Factory = Callable[[Path, Path, CalibrationDataReader], None]


def from_each_source(kind: str, reproduces: str) -> Callable[[Factory], Factory]:
    """``ort_<kind>_<source>.onnx`` for every float source."""

    def register(factory: Factory) -> Factory:
        for short, (source, shape, atol) in SOURCES.items():
            ort_quantization(f"ort_{kind}_{short}.onnx", source, shape, reproduces, atol)(factory)
        return factory

    return register


def _static(source: Path, target: Path, images: CalibrationDataReader, **options: Any) -> None:
    types = {"activation_type": QuantType.QUInt8, "weight_type": QuantType.QInt8}
    quantize_static(source, target, images, **{**types, **options})


@from_each_source("qdq_pt", "quantize_static QDQ, per-tensor int8 weights, uint8 activations")
def qdq_per_tensor(source: Path, target: Path, images: CalibrationDataReader) -> None:
    _static(source, target, images, quant_format=QuantFormat.QDQ, per_channel=False)


@from_each_source("qdq_pc", "quantize_static QDQ, per-channel int8 weights, uint8 activations")
def qdq_per_channel(source: Path, target: Path, images: CalibrationDataReader) -> None:
    _static(source, target, images, quant_format=QuantFormat.QDQ, per_channel=True)


@from_each_source("qop", "quantize_static QOperator (QGemm, QLinearConv)")
def qoperator(source: Path, target: Path, images: CalibrationDataReader) -> None:
    _static(source, target, images, quant_format=QuantFormat.QOperator, per_channel=False)


@from_each_source("dyn", "quantize_dynamic (DynamicQuantizeLinear, MatMulInteger)")
def dynamic(source: Path, target: Path, images: CalibrationDataReader) -> None:
    quantize_dynamic(source, target, weight_type=QuantType.QInt8)


# A MatMul head behind a channel-last flatten (Keras): QOperator writes QLinearMatMul on int8 [K, M]
# weights, with the bias Add in float or, quantized too, as QLinearAdd (com.microsoft).
MNIST = ("keras_mnist_dynbatch.onnx", (1, 28, 28, 1))


@ort_quantization("ort_qop_mm_pt_keras_mnist.onnx", *MNIST, "quantize_static QOperator on MatMul only", 0.02, 13)
def qoperator_matmul(source: Path, target: Path, images: CalibrationDataReader) -> None:
    _static(source, target, images, quant_format=QuantFormat.QOperator, op_types_to_quantize=["MatMul"])


@ort_quantization(
    "ort_qop_mm_pc_keras_mnist.onnx", *MNIST, "quantize_static QOperator on MatMul and Add, per-channel", 0.02, 13
)
def qoperator_matmul_add(source: Path, target: Path, images: CalibrationDataReader) -> None:
    _static(
        source, target, images, quant_format=QuantFormat.QOperator, per_channel=True,
        op_types_to_quantize=["MatMul", "Add"],
    )  # fmt: skip


@ort_quantization(
    "ort_qdq_int4_pc_vgg_small.onnx", *SOURCES["vgg_small"][:2],
    "onnx's version converter to opset 21, then quantize_static QDQ, per-channel int4 weights", 0.01, opset=21,
)  # fmt: skip
def qdq_int4_per_channel(source: Path, target: Path, images: CalibrationDataReader) -> None:
    with tempfile.TemporaryDirectory() as folder:
        at_21 = Path(folder) / source.name
        onnx.save(version_converter.convert_version(onnx.load(str(source)), 21), str(at_21))
        _static(at_21, target, images, quant_format=QuantFormat.QDQ, per_channel=True, weight_type=QuantType.QInt4)


@ort_quantization(
    "ort_qop_all_keras_mnist.onnx", *MNIST, "quantize_static QOperator on every op, per-channel", 0.02, 13
)
def qoperator_all(source: Path, target: Path, images: CalibrationDataReader) -> None:
    _static(source, target, images, quant_format=QuantFormat.QOperator, per_channel=True)
