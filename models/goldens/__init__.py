"""The registry of golden models: one small factory per model, registered with a decorator.

A factory builds the framework model with its random weights; the decorator says which file it becomes,
through which exporter, at which opset and input shape, and what the model reproduces. The exporters
(`goldens.torch_export`, `goldens.keras_models`, `goldens.ort_export`) seed the generators, call the factory,
export and hand back the framework's forward pass, against which `make_models.py` checks the written file.
A quantized golden's factory quantizes a float golden with onnxruntime's own tool; its forward pass is
the float model's, compared within the quantization's tolerance (`atol`).

Adding a golden model: write the factory in the module of its backend, put `@torchscript(...)`,
`@dynamo(...)`, `@tf2onnx(...)` or `@ort_quantization(...)` on it, run `make_models.py <backend> --only
<file>`, describe it in models/README.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, TypeVar


class Exporter(str, Enum):
    TORCHSCRIPT = "torchscript"  # torch.onnx.export(..., dynamo=False)
    DYNAMO = "dynamo"  # torch.onnx.export(..., dynamo=True)
    TF2ONNX = "tf2onnx"  # Keras through tf2onnx
    ORT_QUANTIZATION = "onnxruntime.quantization"  # a float golden quantized by onnxruntime's tool

    @property
    def backend(self) -> str:
        return {Exporter.TF2ONNX: "keras", Exporter.ORT_QUANTIZATION: "quantized"}.get(self, "torch")


@dataclass(frozen=True)
class Golden:
    """One golden file and how to make it."""

    file: str
    exporter: Exporter
    factory: Callable[..., Any]
    shape: tuple[int, ...]  # the exported input shape; with dynamic_batch the batch axis is symbolic
    opset: int
    reproduces: str  # one line: the exporter pattern or architecture the model stands for
    dynamic_batch: bool = False
    dtype: str = "float32"  # the input's element type
    issue: int | None = None  # the issue whose pattern it reproduces (None: a supported FC head)
    options: dict[str, Any] = field(default_factory=dict)  # extra keyword arguments for the exporter
    atol: float = 1e-4  # how far the written file's output may be from the framework's


REGISTRY: dict[str, Golden] = {}
F = TypeVar("F", bound=Callable[..., Any])


def golden(
    file: str, exporter: Exporter, shape: tuple[int, ...], opset: int, reproduces: str, **kw: Any
) -> Callable[[F], F]:
    """Register the decorated factory as the maker of ``file``."""

    def register(factory: F) -> F:
        if file in REGISTRY:
            raise ValueError(f"{file} is registered twice")
        REGISTRY[file] = Golden(file, exporter, factory, shape, opset, reproduces, **kw)
        return factory

    return register


def torchscript(file: str, shape: tuple[int, ...], reproduces: str, opset: int = 17, **kw: Any) -> Callable[[F], F]:
    return golden(file, Exporter.TORCHSCRIPT, shape, opset, reproduces, **kw)


def dynamo(file: str, shape: tuple[int, ...], reproduces: str, opset: int = 18, **kw: Any) -> Callable[[F], F]:
    return golden(file, Exporter.DYNAMO, shape, opset, reproduces, **kw)


def both_torch_exporters(stem: str, shape: tuple[int, ...], reproduces: str, **kw: Any) -> Callable[[F], F]:
    """``ts_<stem>.onnx`` (TorchScript, opset 17) and ``dynamo_<stem>.onnx`` (dynamo, opset 18)."""

    def register(factory: F) -> F:
        torchscript(f"ts_{stem}.onnx", shape, reproduces, **kw)(factory)
        return dynamo(f"dynamo_{stem}.onnx", shape, reproduces, **kw)(factory)

    return register


def tf2onnx(file: str, shape: tuple[int, ...], opset: int, reproduces: str, **kw: Any) -> Callable[[F], F]:
    return golden(file, Exporter.TF2ONNX, shape, opset, reproduces, **kw)


def ort_quantization(
    file: str, source: str, shape: tuple[int, ...], reproduces: str, atol: float, opset: int = 17
) -> Callable[[F], F]:
    """``file``: the float golden ``source`` quantized by the decorated factory (issue 13)."""
    return golden(
        file, Exporter.ORT_QUANTIZATION, shape, opset, f"{source} through {reproduces}",
        issue=13, options={"source": source}, atol=atol,
    )  # fmt: skip
