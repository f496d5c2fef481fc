"""Errors the tool raises on purpose; each carries the CLI exit code it maps to."""

from __future__ import annotations

import re

_ORT_PREFIX = re.compile(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ")


def one_line(exc: BaseException, limit: int = 300) -> str:
    """One readable line from any exception: lines joined, onnxruntime's prefix dropped, control
    characters escaped (text from a model must not span lines or fake a message)."""
    text = " ".join(line.strip() for line in str(exc).strip().splitlines() if line.strip())
    text = _ORT_PREFIX.sub("", text)
    text = printable(text)
    return (text or type(exc).__name__)[:limit]


def printable(text: str) -> str:
    """Text with every control or unprintable character escaped (`\\n`, `\\x1b`, ...)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def quoted(text: str | bytes, limit: int = 120) -> str:
    """A name or string taken from a model, safe inside a message: quoted, escaped, shortened.
    Bytes that are not UTF-8 are shown escaped."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="backslashreplace")
    shown = printable(text)
    if len(shown) > limit:
        shown = shown[: limit - 3] + "..."
    return f"'{shown}'"


class Fc2ConvError(Exception):
    """Base class: a failure explained in one line, never a traceback."""

    exit_code = 2


class UsageError(Fc2ConvError):
    """Bad options or paths (output equal to input, missing file, ...)."""

    exit_code = 2


class ModelLoadError(Fc2ConvError):
    """The input is not a readable, valid ONNX model."""

    exit_code = 2


class ModelRunError(ModelLoadError):
    """onnxruntime cannot run the original model (an op it lacks, inconsistent weights, ...)."""

    exit_code = 2


class NotConvertibleError(Fc2ConvError):
    """The model has FC layers (or size-baked nodes) that cannot be rewritten exactly."""

    exit_code = 3

    def __init__(self, message: str, reasons: list[str] | None = None) -> None:
        super().__init__(message)
        self.reasons = list(reasons or [])


class VerificationError(Fc2ConvError):
    """The converted model is not equal to the original within tolerance."""

    exit_code = 1

    def __init__(self, message: str, report: object = None) -> None:
        super().__init__(message)
        self.report = report


class CheckerError(VerificationError):
    """The converted model, as it would be written, fails `onnx.checker.check_model(full_check=True)`."""

    exit_code = 1
