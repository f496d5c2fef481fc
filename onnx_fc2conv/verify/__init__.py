"""Prove a conversion exact with onnxruntime: phases that each return their comparisons.

- phases.py: same size, batch, dense mean, larger sizes, checker; verify() composes them
- compare.py: the criterion (a bound scaled to each output's magnitude, image by image)
- reference.py: the independent reference at a larger size, from the original model
- inputs.py: the inputs, batches and sizes verified at; model_types.py: declared tensor types
- sessions.py: onnxruntime sessions (over 2 GB too), running them with one-line errors
- cut.py: cutting the original graph with onnx-graphsurgeon
"""

from __future__ import annotations

from .compare import Comparison, PhaseResult, Tolerance, VerificationReport, compare
from .inputs import default_sizes
from .phases import VerifyOptions, verify
from .sessions import session

__all__ = [
    "Comparison",
    "PhaseResult",
    "Tolerance",
    "VerificationReport",
    "VerifyOptions",
    "compare",
    "default_sizes",
    "session",
    "verify",
]
