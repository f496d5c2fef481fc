"""`--input-size HxW` (and `--batch N`): the converted model written with static shapes.

Runtimes and NPU compilers that need every dim known get the image input at that size and batch,
and every output's map shape inferred from it. The size must be one the dynamic model accepts
(sizes.py); verification proves the dynamic model at that size, then the static one equal to it
there (verify/static.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import onnx

from .errors import UsageError
from .graph import set_value_info_dims, value_info_dims
from .layout import InputLayout
from .shapes import clear_output_shapes, infer_shapes
from .sizes import PREFIX, ValidSizes

if TYPE_CHECKING:
    from .api import ConversionResult


@dataclass(frozen=True)
class StaticSize:
    """The image input's static shape, each output's, and the model as it was (dynamic)."""

    input: str
    input_shape: tuple[int, ...]
    size: tuple[int, ...]
    output_shapes: dict[str, tuple]
    dynamic: onnx.ModelProto

    def describe(self) -> str:
        outs = ", ".join(f"'{k}' {list(v)}" for k, v in self.output_shapes.items())
        return f"static shapes: input '{self.input}' {list(self.input_shape)}; outputs {outs}"


def apply(
    result: ConversionResult, layouts: dict[str, InputLayout], size: tuple[int, ...] | None, batch: int | None
) -> ConversionResult:
    """With a `size`: pin the result's image input to it (and `batch`, default 1) in place, and note
    it; sizes the dynamic model cannot run at are refused."""
    if size is None:
        if batch is not None:
            raise UsageError("--batch needs --input-size")
        return result
    result.static = pin(result.model, layouts, result.valid_sizes, size, batch)
    result.valid_sizes = ValidSizes(size, size, (0,) * len(size))
    result.notices.append(result.static.describe())
    return result


def pin(
    model: onnx.ModelProto,
    layouts: dict[str, InputLayout],
    valid: ValidSizes | None,
    size: tuple[int, ...],
    batch: int | None,
) -> StaticSize:
    """Pin the image input to `size` and `batch` in place; the model as it was is kept for verification."""
    text = "x".join(map(str, size))
    if len(layouts) != 1:
        raise UsageError(f"--input-size needs exactly one image input; the model has {len(layouts)}")
    layout = next(iter(layouts.values()))
    if len(size) != len(layout.spatial):
        raise UsageError(f"--input-size {text} has {len(size)} dims; the input has {len(layout.spatial)} spatial dims")
    if valid is not None and not valid.accepts(size):
        raise UsageError(f"--input-size {text} is not a size this model runs at; valid sizes: {valid.describe()}")
    dynamic = onnx.ModelProto()
    dynamic.CopyFrom(model)
    vi = next(i for i in model.graph.input if i.name == layout.name)
    dims = list(value_info_dims(vi) or ())
    for axis, s in zip(layout.spatial, size, strict=True):
        dims[axis] = s
    if layout.batch is not None:
        dims[layout.batch] = batch or 1
    elif batch is not None and dims[0] != batch:
        raise UsageError(f"--batch {batch}: the model's batch stays fixed at {dims[0]} (a node pins it)")
    set_value_info_dims(vi, dims)
    clear_output_shapes(model, {o.name for o in model.graph.output})
    infer_shapes(model)
    outputs = {o.name: tuple(value_info_dims(o) or ()) for o in model.graph.output}
    _record(model, text, "x".join(map(str, dims)))
    return StaticSize(layout.name, tuple(dims), size, outputs, dynamic)


def _record(model: onnx.ModelProto, size: str, shape: str) -> None:
    entries = {PREFIX + "valid_sizes": f"{size} only (static shapes)", PREFIX + "static_input_shape": shape}
    kept = [p for p in model.metadata_props if p.key not in entries]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in entries.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
