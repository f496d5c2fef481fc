"""Make classifier CNNs fully convolutional: FC heads become exact convolutions.

from onnx_fc2conv import convert, ConvertOptions
result = convert("model.onnx", ConvertOptions())   # verified by default
onnx.save(result.model, "model_fcn.onnx")
"""

from __future__ import annotations

from .api import (
    ConversionResult,
    ConvertOptions,
    HeadRewrite,
    Inspection,
    convert,
    convert_file,
    inspect,
    verify,
    window_geometry,
)
from .errors import (
    CheckerError,
    Fc2ConvError,
    ModelLoadError,
    ModelRunError,
    NotConvertibleError,
    UsageError,
    VerificationError,
)
from .geometry import Geometry
from .heads import FcLayer, Head, Skipped
from .shapes import DimNames
from .verify import Comparison, Tolerance, VerificationReport

__all__ = [
    "CheckerError",
    "Comparison",
    "ConversionResult",
    "ConvertOptions",
    "DimNames",
    "Fc2ConvError",
    "FcLayer",
    "Geometry",
    "Head",
    "HeadRewrite",
    "Inspection",
    "ModelLoadError",
    "ModelRunError",
    "NotConvertibleError",
    "Skipped",
    "Tolerance",
    "UsageError",
    "VerificationError",
    "VerificationReport",
    "convert",
    "convert_file",
    "inspect",
    "verify",
    "window_geometry",
]
__version__ = "0.1.0"
