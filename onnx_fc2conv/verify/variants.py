"""Verification of the model variants: a denser map (dilated.py) and static shapes (static.py).

Without either, the usual phases (phases.py). A static model is proven through the dynamic model
it was made from: that one verified (at the static size among the others), then the two equal.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

import onnx

from ..heads import Head
from .compare import VerificationReport
from .dilated import verify_dilated
from .phases import VerifyOptions
from .static import verify_static

if TYPE_CHECKING:
    from ..api import ConversionResult

Verifier = Callable[[onnx.ModelProto, onnx.ModelProto, list[Head], VerifyOptions], VerificationReport]


def verify_result(
    original: onnx.ModelProto, result: ConversionResult, options: VerifyOptions, plain: Verifier
) -> VerificationReport:
    """`result.model` against `original`: `plain` (phases.verify) unless a variant asks otherwise."""
    dilation, static = result.dilation, result.static
    model = static.dynamic if static else result.model
    if static is not None:
        options = replace(options, sizes=tuple(dict.fromkeys((static.size, *(options.sizes or ())))))
    if dilation is not None:
        report = verify_dilated(original, model, result.heads, dilation, options)
    else:
        report = plain(original, model, result.heads, options)
    return verify_static(report, original, static, result.model, options) if static else report
