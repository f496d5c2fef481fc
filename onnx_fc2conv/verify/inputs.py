"""What verification feeds: the models' inputs, the batches and sizes to run at, random values.

An input's spatial axes are the axes the conversion left free in the converted model (the batch,
axis 0, aside); its batch is symbolic when the converted model's is. Only the ModelProtos'
declared types are read (model_types), never the converter's own analysis.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from .model_types import Dim, graph_inputs

_NP_FLOAT = {
    onnx.TensorProto.FLOAT: np.float32,
    onnx.TensorProto.FLOAT16: np.float16,
    onnx.TensorProto.DOUBLE: np.float64,
}

# The size an input that accepts any size is compared at (per spatial rank): a usual classifier size.
_BASE_SIZE = {1: 224, 2: 224, 3: 32}


@dataclass(frozen=True)
class ModelInput:
    name: str
    elem_type: int
    shape: tuple[Dim, ...]  # the original's dims; spatial dims it leaves free get a usual size
    spatial_axes: tuple[int, ...]  # axes the converted model accepts at any size
    batched: bool  # the converted model's batch (axis 0) is symbolic
    unit_axes: int = 0  # an MLP's [N, K] becomes [N, K, *S]: this many trailing axes, fed as 1

    def at_batch(self, batch: int) -> tuple[int, ...] | None:
        """The concrete shape at `batch` (a fixed batch stays), or None when a dim is unknown."""
        dims = list(self.shape)
        if dims and (self.batched or not isinstance(dims[0], int)):
            dims[0] = batch
        if not all(isinstance(d, int) and d > 0 for d in dims):
            return None
        return tuple(dims)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Inputs:
    inputs: list[ModelInput]
    batches: tuple[int, ...]  # batches the same-size check runs at: (1, 2), or the fixed one
    original_batch: int | None  # the original's fixed batch, None when symbolic
    notes: list[str]

    @property
    def fixed_batch(self) -> int | None:
        return self.batches[0] if len(self.batches) == 1 else None


def model_inputs(original: onnx.ModelProto, converted: onnx.ModelProto, mlp_inputs: set[str]) -> Inputs:
    """The original's inputs as the converted model accepts them (see module docstring)."""
    converted_types = graph_inputs(converted)
    inputs, notes = [], []
    for name, declared in graph_inputs(original).items():
        shape = declared.dims or ()
        new = converted_types[name].dims if name in converted_types else None
        new = new if new is not None else shape
        if len(new) == len(shape):  # a dim the conversion fixed (a symbolic channel count) is fed so
            shape = tuple(
                n if isinstance(n, int) and not isinstance(o, int) else o for o, n in zip(shape, new, strict=True)
            )
        batched = bool(new) and not isinstance(new[0], int)
        unit_axes = len(new) - len(shape) if name in mlp_inputs else 0
        axes = () if name in mlp_inputs or len(new) != len(shape) else _spatial_axes(shape, new)
        free = [a for a in axes if not isinstance(shape[a], int)]
        if free:
            base = _BASE_SIZE.get(len(axes), 32)
            usual = tuple(base if a in free else d for a, d in enumerate(shape))
            notes.append(
                f"input '{name}' accepts any size {list(shape)}: the original size is taken as {list(usual[1:])}"
            )
            shape = usual
        inputs.append(ModelInput(name, declared.elem_type, shape, axes, batched, unit_axes))
    fixed = [int(i.shape[0]) for i in inputs if i.shape and not i.batched and isinstance(i.shape[0], int)]
    batches = (fixed[0],) if fixed else (1, 2)
    original_batches = [d.dims[0] for d in graph_inputs(original).values() if d.dims]
    original_batch = next((int(b) for b in original_batches if isinstance(b, int)), None)
    return Inputs(inputs, batches, original_batch, notes)


def _spatial_axes(original: tuple[Dim, ...], converted: tuple[Dim, ...]) -> tuple[int, ...]:
    """An image input's free axes after the batch: those the conversion relaxed and those the
    original left free already (`[N, 3, h, 6]` becomes `[N, 3, h, width]`: both are spatial)."""
    free = tuple(a for a in range(1, len(converted)) if not isinstance(converted[a], int))
    return free if len(converted) >= 3 else ()


def random_value(shape: tuple[int, ...], elem_type: int, rng: np.random.Generator) -> np.ndarray:
    """Seeded values in the input type's range: normal floats; integers over their whole range
    (8 and 16 bits) or 0..255 (wider: an image stored as int32 or int64); random booleans."""
    dtype = _NP_FLOAT.get(elem_type)
    if dtype is not None:
        return rng.standard_normal(shape).astype(dtype)
    np_type = onnx.helper.tensor_dtype_to_np_dtype(elem_type)
    if np_type == np.bool_:
        return rng.integers(0, 2, shape).astype(np.bool_)
    if np.issubdtype(np_type, np.integer):
        info = np.iinfo(np_type)
        high = int(info.max) if info.bits <= 16 else 255
        low = int(info.min) if info.bits <= 16 else 0
        return rng.integers(low, high, shape, endpoint=True).astype(np_type)
    return np.zeros(shape, dtype=np_type)


def default_sizes(spatial: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    """Two larger, non-square sizes: grow each axis by a different factor."""
    if all(s == 1 for s in spatial):  # an MLP input [N, K] relaxed to [N, K, *S]: any sizes, one per axis
        return ((3, 5, 4)[: len(spatial)] or (3, 5), (6, 4, 3)[: len(spatial)] or (6, 4))
    first = tuple(int(round(s * f)) + i for i, (s, f) in enumerate(zip(spatial, (1.5, 1.25, 1.25), strict=False)))
    second = tuple(int(round(s * f)) + 1 for s, f in zip(spatial, (1.25, 1.75, 1.5), strict=False))
    return first, second
