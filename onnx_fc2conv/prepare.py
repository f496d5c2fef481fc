"""The model as analysis and verification read it: model-local functions inlined (TorchScript's
`export_modules_as_functions` wraps every Conv2d and Linear in one), and with --exported-size the
input's symbolic spatial dims read at that size (exported_size.py). Both change no value the model
computes; the conversion and the original that verification runs are prepared alike, so the tensors
a reference is cut at exist in both.
"""

from __future__ import annotations

import onnx
import onnx.inliner

from .exported_size import pin


def prepare(model: onnx.ModelProto, exported_size: tuple[int, ...] | None) -> list[str]:
    """Prepare `model` in place; the notices say what changed."""
    notices = []
    if model.functions:
        names = ", ".join(sorted({f.name for f in model.functions}))
        model.CopyFrom(onnx.inliner.inline_local_functions(model))
        notices.append(f"model-local functions inlined ({names})")
    pinned = pin(model, exported_size) if exported_size is not None else None
    return [*notices, pinned] if pinned else notices


def prepared(model: onnx.ModelProto, exported_size: tuple[int, ...] | None) -> onnx.ModelProto:
    """`model`, prepared in place (for the original verification runs)."""
    prepare(model, exported_size)
    return model


def needs_preparing(model: onnx.ModelProto, exported_size: tuple[int, ...] | None) -> bool:
    return exported_size is not None or bool(model.functions)
