"""A static-size model against the dynamic model it was made from, at its one size.

The dynamic model has been verified (at that size among others); the static one must give the
same outputs on the same seeded input at its static shape, and pass the checker.
"""

from __future__ import annotations

import numpy as np
import onnx

from ..static_size import StaticSize
from .compare import PhaseResult, VerificationReport, compare, failed
from .inputs import random_value
from .model_types import graph_inputs
from .phases import VerifyOptions, checker
from .sessions import RunError, run, session

CHECK = "static size"


def verify_static(
    report: VerificationReport,
    original: onnx.ModelProto,
    static: StaticSize,
    model: onnx.ModelProto,
    options: VerifyOptions,
) -> VerificationReport:
    """`report` (the dynamic model's) with the static model's comparisons and checker verdict."""
    elem = graph_inputs(model)[static.input].elem_type
    x = random_value(static.input_shape, elem, np.random.default_rng(options.seed + 1))
    result = PhaseResult(notes=[static.describe()])
    try:
        expected = run(session(static.dynamic), {static.input: x}, "the dynamic model")
        actual = run(session(model), {static.input: x}, "the static model")
    except RunError as exc:
        result.comparisons.append(failed(CHECK, "*", static.input_shape, str(exc)))
    else:
        for name, exp in expected.items():
            result.comparisons.append(
                compare(actual[name], exp, options.tolerance, check=CHECK, output=name, input_shape=static.input_shape)
            )
    verdict, checked = checker(original, model)
    dynamic = PhaseResult(comparisons=list(report.comparisons), notes=list(report.notes))
    if report.checker != "passed":
        verdict = report.checker
    return VerificationReport.of([dynamic, result, checked], verdict)
