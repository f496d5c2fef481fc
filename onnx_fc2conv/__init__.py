"""Make classifier CNNs fully convolutional: FC heads become exact convolutions.

from onnx_fc2conv import convert, ConvertOptions
result = convert("model.onnx", ConvertOptions())   # verified by default
onnx.save(result.model, "model_fcn.onnx")

Every error the API raises is an Fc2ConvError subclass carrying the CLI's exit code (`exit_code`).
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
from .backbone import BackboneFix
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
from .rewrite import LayerRewrite
from .shapes import DimNames, RelaxedInput
from .verify import Comparison, Tolerance, VerificationReport

__all__ = [
    "BackboneFix",
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
    "LayerRewrite",
    "ModelLoadError",
    "ModelRunError",
    "NotConvertibleError",
    "RelaxedInput",
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
