"""The converted model's declared output shapes are claims too: each run holds them to its arrays.

A declared output `[batch, 10, out_height, out_width]` promises rank 4, 10 classes, and the
same `batch` as the input's. An output whose rank, fixed dims, element type or shared symbols
differ from what the model returns fails verification, naming the output.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from ..graph import Dim, value_info_dims


class Declared:
    """The converted model's declared inputs and outputs (dims and element types)."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.inputs = {vi.name: value_info_dims(vi) for vi in model.graph.input}
        self.outputs = {vi.name: value_info_dims(vi) for vi in model.graph.output}
        self.types = {vi.name: vi.type.tensor_type.elem_type for vi in model.graph.output}

    def problem(self, name: str, array: np.ndarray, input_shape: tuple[int, ...]) -> str:
        """Why `array` (output `name`, from an input of `input_shape`) breaks its declaration, or ''."""
        symbols = self._input_symbols(input_shape)
        dims = self.outputs.get(name)
        elem = self.types.get(name, 0)
        if elem and np.dtype(helper.tensor_dtype_to_np_dtype(elem)) != array.dtype:
            return f"declared {helper.tensor_dtype_to_string(elem)}, returns {array.dtype}"
        if dims is None:
            return ""
        if len(dims) != array.ndim:
            return f"declared shape {_text(dims)}, returns {list(array.shape)}"
        for d, n in zip(dims, array.shape, strict=True):
            if (isinstance(d, int) and d != n) or (isinstance(d, str) and symbols.setdefault(d, n) != n):
                return f"declared shape {_text(dims)}, returns {list(array.shape)}"
        return ""

    def _input_symbols(self, input_shape: tuple[int, ...]) -> dict[str, int]:
        """Symbols bound by the (single image) input the run was fed; none when that is ambiguous."""
        ranked = [dims for dims in self.inputs.values() if dims is not None and len(dims) == len(input_shape)]
        if len(ranked) != 1:
            return {}
        return {d: n for d, n in zip(ranked[0], input_shape, strict=True) if isinstance(d, str)}


def _text(dims: tuple[Dim, ...]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"
