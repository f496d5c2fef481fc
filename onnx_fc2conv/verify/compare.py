"""The comparison criterion: each output, image by image, against a bound scaled to its magnitude.

For every output and every image `n` of the batch (the leading axis, when it holds the batch):

    max|a[n] - b[n]|  <=  atol + rtol * max|b[n]|

`a` is the converted model's output, `b` the reference's. The rewrite is exact; float32 results
differ only by summation order, and that error follows the magnitude of the sums, not of each
element: an element near zero carries the same absolute error as its largest neighbour. A
per-element bound `atol + rtol * |b|` therefore failed exact rewrites of deep or wide networks on
their near-zero elements. On a 1,000-layer synthetic backbone (tests/test_verify_tolerance.py)
the error measured up to 2.3e-6 of the output's largest magnitude, so the default `rtol = 1e-4`
leaves a margin of 40x; one changed weight of its head still exceeds the bound 24x. `atol` only
matters for outputs whose values are all close to zero.

Half precision rounds every partial sum, so fp16 and bf16 outputs get both tolerances scaled up
(and `atol` multiplied by the output's largest magnitude, when above 1). So do float32 outputs of a
model that computes in half precision inside (float16 weights between float32 inputs and outputs,
as `convert_float_to_float16(..., keep_io_types=True)` writes them): `compute` names that type.

Each comparison records the bound it was held to (`allowed`) and its error as a fraction of that
bound (`ratio`, at most 1 to pass); `max_rel` is the error relative to the output's largest
magnitude. Empty, mismatched or non-finite arrays fail; integer outputs (indices) must be equal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import printable, quoted


@dataclass(frozen=True)
class Tolerance:
    """fp32 tolerances of the magnitude-scaled criterion (see module docstring)."""

    rtol: float = 1e-4
    atol: float = 1e-5
    compute: str = ""  # "float16" / "bfloat16": the model computes in it, whatever its outputs' type

    def for_dtype(self, dtype: np.dtype, scale: float = 1.0) -> tuple[float, float]:
        """(rtol, atol) for an output of `dtype` whose largest magnitude is `scale`."""
        if not np.issubdtype(dtype, np.floating) and dtype.name != "bfloat16":
            return self.rtol, self.atol
        if dtype == np.float16 or self.compute == "float16":
            return self.rtol * 100, self.atol * 100 * max(1.0, scale)
        if dtype.name == "bfloat16" or self.compute == "bfloat16":
            return self.rtol * 500, self.atol * 1000 * max(1.0, scale)
        return self.rtol, self.atol

    def bound(self, dtype: np.dtype, scale: float) -> float:
        """The largest error allowed for one image whose largest magnitude is `scale`."""
        rtol, atol = self.for_dtype(dtype, scale)
        return atol + rtol * scale


@dataclass(frozen=True)
class Comparison:
    check: str  # "same size" | "larger size" | "dense mean" | "declared shape" | "independence" | "batch"
    output: str
    input_shape: tuple[int, ...]
    shape: tuple[int, ...]
    max_abs: float
    max_rel: float  # max|a - b| / max|b|, of the worst image
    passed: bool
    note: str = ""
    allowed: float = math.nan  # the bound max_abs was held to (for the worst image)
    ratio: float = math.inf  # error / allowed, of the worst image: at most 1 to pass


def failed(check: str, output: str, input_shape: tuple, note: str) -> Comparison:
    """A comparison that could not be made (a model failed to run): it fails, saying why."""
    return Comparison(check, output, tuple(input_shape), (), math.inf, math.inf, False, note)


def compare(
    actual: np.ndarray,
    expected: np.ndarray,
    tol: Tolerance,
    *,
    check: str,
    output: str,
    input_shape: tuple,
    unit: float = 0.0,
) -> Comparison:
    """`actual` against `expected` by the criterion of the module docstring. A quantized output
    (`unit` > 0: its scale, or 1 for integers) may also differ by one unit (quantized_units.py)."""

    def result(max_abs: float, max_rel: float, passed: bool, note: str = "", allowed=math.nan, ratio=math.inf):
        shape = tuple(expected.shape)
        return Comparison(check, output, tuple(input_shape), shape, max_abs, max_rel, passed, note, allowed, ratio)

    if expected.size == 0 or actual.size == 0:
        return result(math.inf, math.inf, False, "empty output")
    if actual.shape != expected.shape:
        if actual.size == expected.size and _only_unit_dims_differ(actual.shape, expected.shape):
            actual = actual.reshape(expected.shape)
        else:
            return result(math.inf, math.inf, False, f"shape {list(actual.shape)} != {list(expected.shape)}")
    if not np.issubdtype(expected.dtype, np.floating):
        diff = np.abs(actual.astype(np.int64) - expected.astype(np.int64))
        worst = float(diff.max())
        if unit > 0:  # quantized values: one unit of rounding, on a few elements
            images = int(input_shape[0]) if input_shape else 1
            note = "quantized values differ" if worst > unit else _too_many_rounded(diff > 0, images)
            return result(worst, worst, not note, note, unit, worst / unit)
        equal = worst == 0
        return result(worst, worst, equal, "" if equal else "indices differ", 0.0, 0.0 if equal else math.inf)
    a = actual.astype(np.float64)
    b = expected.astype(np.float64)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return result(math.nan, math.nan, False, "non-finite values")
    images = int(input_shape[0]) if input_shape else 1
    if b.ndim == 0 or b.shape[0] != images:
        a, b = a[None], b[None]  # an output without a batch axis is one image
    worst = (-1.0, 0.0, 0.0)  # (ratio, allowed, max_rel)
    max_abs = 0.0
    rounded = []  # quantized outputs: the elements beyond the float bound, within the unit
    for a_n, b_n in zip(a, b, strict=True):
        error = float(np.abs(a_n - b_n).max())
        scale = float(np.abs(b_n).max())
        allowed = tol.bound(expected.dtype, scale) + unit
        rounded.append(np.abs(a_n - b_n) > allowed - unit)
        ratio = error / allowed if allowed > 0 else (0.0 if error == 0 else math.inf)
        rel = error / scale if scale > 0 else (0.0 if error == 0 else math.inf)
        max_abs = max(max_abs, error)
        if ratio > worst[0]:
            worst = (ratio, allowed, rel)
    ratio, allowed, rel = worst
    note = _too_many_rounded(np.stack(rounded), len(rounded)) if unit > 0 and ratio <= 1.0 else ""
    return result(max_abs, rel, ratio <= 1.0 and not note, note, allowed, ratio)


# Rounding order moves a quantized value only where it lies on a rounding boundary: one element in
# a hundred at the most, or one an image (every golden measures none); a systematic unit off (a
# zero point, a bias rounded twice) moves most of them.
ROUNDED_SHARE = 0.01


def _too_many_rounded(moved: np.ndarray, images: int) -> str:
    """Why the elements one unit away are too many to be rounding order, or ""."""
    count, total = int(np.count_nonzero(moved)), int(moved.size)
    if count <= max(images, int(total * ROUNDED_SHARE)):
        return ""
    return f"{count} of {total} quantized values are one unit away: more than rounding order moves"


def _only_unit_dims_differ(a: tuple, b: tuple) -> bool:
    return [d for d in a if d != 1] == [d for d in b if d != 1]


@dataclass
class PhaseResult:
    """What one phase of verification found: its comparisons and what it could not check."""

    comparisons: list[Comparison] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class VerificationReport:
    comparisons: list[Comparison] = field(default_factory=list)
    checker: str = "not run"
    notes: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, phases: list[PhaseResult], checker: str) -> VerificationReport:
        report = cls(checker=checker)
        for phase in phases:
            report.comparisons += phase.comparisons
            report.notes += [n for n in dict.fromkeys(phase.notes) if n not in report.notes]
        return report

    @property
    def passed(self) -> bool:
        return bool(self.comparisons) and all(c.passed for c in self.comparisons) and self.checker == "passed"

    @property
    def failures(self) -> list[Comparison]:
        return [c for c in self.comparisons if not c.passed]

    def failure_line(self) -> str:
        """The error line of a verification that did not pass."""
        if not self.comparisons:
            return "verification compared nothing"
        if self.checker != "passed":
            return f"the converted model fails the ONNX checker: {self.checker.removeprefix('failed: ')}"
        worst = self.failures[0]
        detail = worst.note or f"max abs error {worst.max_abs:.3g}, {worst.ratio:.3g}x the allowed {worst.allowed:.3g}"
        where = f"({worst.check}, input {list(worst.input_shape)})"
        return printable(f"verification FAILED: output {quoted(worst.output)} {where}: {detail}")
