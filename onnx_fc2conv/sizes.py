"""Which input sizes the written model runs at, found on shapes and checked by verification.

A backbone whose every layer follows its input runs at any size from a minimum: the smallest
size whose feature map still holds the head's window. A backbone whose branches join at
different strides (HRNet's fusion, Keras 'same' padding written as explicit pads for one size)
only runs where every branch agrees: the exported size plus whole multiples of the output
stride. Both are decided by shape inference on the weight-free graph at a concrete size, where a
broadcast or Concat that does not fit is an error; verification then runs the claim.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import onnx

from .errors import NotConvertibleError, UsageError, one_line
from .fixed_same_pads import ambiguous_pads
from .geometry import WINDOW_OPS, Geometry
from .graph import value_info_dims
from .layout import InputLayout
from .shapes import RelaxedInput, all_static, fold_sizes, skeleton_at

PREFIX = "onnx_fc2conv."


@dataclass(frozen=True)
class ValidSizes:
    """Spatial sizes (innermost last) the model runs at: `minimum + k * step` per axis, k >= 0.

    `step` is 1 on an axis that takes any size from the minimum.
    """

    exported: tuple[int, ...]
    minimum: tuple[int, ...]
    step: tuple[int, ...]
    note: str = ""  # why fewer sizes are claimed than the model runs at

    def accepts(self, size: tuple[int, ...]) -> bool:
        return len(size) == len(self.minimum) and all(
            s == m if st == 0 else s >= m and (s - m) % st == 0
            for s, m, st in zip(size, self.minimum, self.step, strict=True)
        )

    def describe(self) -> str:
        """`224+ x 224+` (any size from 224), `224+32k x 224+32k`, or `224 x 224` (that size only)."""
        return " x ".join(f"{m}" if st == 0 else f"{m}+" if st == 1 else f"{m}+{st}k" for m, st in zip(
            self.minimum, self.step, strict=True))  # fmt: skip

    def larger(self) -> tuple[tuple[int, ...], ...]:
        """Two larger, non-square sizes this model accepts (none when it takes one size only)."""
        if 0 in self.step:
            return ()
        sizes = []
        for factors, extra in (((1.5, 1.25, 1.25), 0), ((1.25, 1.75, 1.5), 1)):
            size = []
            for i, (e, st, f) in enumerate(zip(self.exported, self.step, factors, strict=False)):
                target = round(e * f) + (i if extra == 0 else 1)
                size.append(e + max(st, -(-(target - e) // st) * st))
            sizes.append(tuple(size))
        return tuple(sizes)


def runs_at(model: onnx.ModelProto, layout: InputLayout, size: tuple[int, ...]) -> bool:
    return size_error(model, layout, size) is None


def size_error(model: onnx.ModelProto, layout: InputLayout, size: tuple[int, ...]) -> str | None:
    """Why the model cannot run with its input at `size` (shape inference's own words), or None.

    Where sizes are computed from `Shape` (inference leaves dims unknown), the size arithmetic is
    folded at that size first, so a target computed for the exported size shows its conflict.
    """
    declared = next(value_info_dims(vi) for vi in model.graph.input if vi.name == layout.name)
    dims = list(declared or ())
    if layout.batch is not None:
        dims[layout.batch] = 1
    for axis, s in zip(layout.spatial, size, strict=True):
        dims[axis] = s
    skel = skeleton_at(model, {layout.name: dims})
    try:
        inferred = onnx.shape_inference.infer_shapes(skel, strict_mode=True, data_prop=True)
        if not all_static(inferred):
            folded = fold_sizes(skel)
            if folded is not None:
                inferred = onnx.shape_inference.infer_shapes(folded, strict_mode=True, data_prop=True)
    except Exception as exc:  # onnx reports a shape conflict in its own exception types
        return one_line(exc)
    for out in inferred.graph.output:
        found = value_info_dims(out) or ()
        if any(isinstance(d, int) and d < 1 for d in found):
            return f"output '{out.name}' would be {list(found)}"
    return _empty_window(inferred)


def _empty_window(inferred: onnx.ModelProto) -> str | None:
    """A window op whose map would be empty: the outputs may lie behind an op shape inference does
    not know (com.microsoft's QLinearAdd), which hides it there."""
    windows = {out: node for node in inferred.graph.node if node.op_type in WINDOW_OPS for out in node.output[:1]}
    for vi in inferred.graph.value_info:
        found = value_info_dims(vi) or ()
        if vi.name in windows and any(isinstance(d, int) and d < 1 for d in found[2:]):
            node = windows[vi.name]
            return f"{node.op_type} '{node.name or vi.name}' would output {list(found)}"
    return None


_STEPS = (2, 4, 8, 16, 32, 64)  # steps tried beside the output stride, for backbones that hide it


def _step(
    model: onnx.ModelProto,
    layout: InputLayout,
    exported: tuple[int, ...],
    axis: int,
    stride: int | None,
    multiple: int,
) -> int:
    """1: any size; S: the exported size plus multiples of S (the output stride, or the smallest
    power of two that fits where a resize hides the stride); 0: the exported size only. `multiple`
    1 allows any size, 0 asks for a step above 1, and above 1 for a multiple of it.

    Any size is claimed only where sizes one stride apart run too: below the stride the maps
    often keep their size, so one or two pixels more prove nothing."""
    candidates = [*([1] if multiple == 1 else []), *([stride] if stride else []), *_STEPS]
    if multiple > 1:
        candidates = [math.lcm(c, multiple) for c in candidates]
    for step in dict.fromkeys(c for c in candidates if c > 1 or multiple == 1):
        grows = [step, 2 * step] + ([stride, stride + 1] if step == 1 and stride and stride > 2 else [])
        sizes = [tuple(e + g if a == axis else e for a, e in enumerate(exported)) for g in grows]
        if all(runs_at(model, layout, size) for size in sizes):
            return step
    return 0


def valid_sizes(
    model: onnx.ModelProto,
    layout: InputLayout,
    exported: tuple[int, ...],
    stride: tuple[int, ...] | None,
    estimate: tuple[int, ...] | None = None,
    multiple: tuple[int, ...] | None = None,
) -> ValidSizes:
    """The sizes `model` (relaxed) runs at, from the exported size and the output stride (the
    geometry's; where there is none, `estimate` only guides the step, not the minimum). Where
    `multiple` is above 1 on an axis, only the exported size plus multiples of it are claimed there."""
    multiple = multiple or (1,) * len(exported)
    guide = stride or estimate
    axes = range(len(exported))
    # every step tried below divides this one: where the model does not run one such step larger on
    # every axis, no step does (a quick answer for graphs whose shape inference takes seconds)
    common = tuple(math.lcm(_STEPS[-1], guide[axis] if guide else 1) for axis in axes)
    if not runs_at(model, layout, tuple(e + c for e, c in zip(exported, common, strict=True))):
        return ValidSizes(tuple(exported), tuple(exported), (0,) * len(exported))
    steps = [_step(model, layout, exported, axis, guide[axis] if guide else None, multiple[axis]) for axis in axes]
    if 1 in steps and not all(
        runs_at(model, layout, size) for size in ValidSizes(exported, exported, tuple(steps)).larger()
    ):
        # branches that agree one pixel and one stride further can still disagree elsewhere (Keras
        # 'same' pads at each stride-2 stage): the sizes verification would run decide
        steps = [_step(model, layout, exported, axis, guide[axis] if guide else None, 0) for axis in axes]
    minimum = list(exported)
    for axis, step in enumerate(steps):
        if step != 1:
            continue
        low, high = max(exported[axis] - (stride[axis] if stride else 1), 0), exported[axis]
        while high - low > 1:  # runs at `high`, not at `low` (or `low` is the floor): bisect
            mid = (low + high) // 2
            probe = list(minimum)
            probe[axis] = mid
            low, high = (low, mid) if runs_at(model, layout, tuple(probe)) else (mid, high)
        minimum[axis] = high
    return ValidSizes(tuple(exported), tuple(minimum), tuple(steps))


def record(model: onnx.ModelProto, sizes: ValidSizes | None, geometry: Geometry | None) -> dict[str, str]:
    """Write the claims into `metadata_props` (keys under `onnx_fc2conv.`); returns what was written."""
    entries: dict[str, str] = {}
    if sizes is not None:
        entries["valid_sizes"] = sizes.describe()
        entries["min_size"] = "x".join(map(str, sizes.minimum))
        entries["exported_size"] = "x".join(map(str, sizes.exported))
    if geometry is not None:
        entries["output_stride"] = "x".join(map(str, geometry.stride))
        entries["receptive_field"] = "x".join(map(str, geometry.receptive_field))
        entries["offset"] = "x".join(map(str, geometry.offset))
    keys = {PREFIX + k for k in entries}
    kept = [p for p in model.metadata_props if p.key not in keys]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in entries.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = PREFIX + key, value
    return entries


def claimed_sizes(
    model: onnx.ModelProto,
    layouts: dict[str, InputLayout],
    relaxed: list[RelaxedInput],
    geometry: dict,
    feature_map: tuple[int, ...] | None,
) -> ValidSizes | None:
    """Valid sizes of the first image input whose exported spatial size is known. The stride is
    the geometry's, else the exported size over the heads' map (before any global pool)."""
    for r in relaxed:
        layout = layouts.get(r.name)
        exported = tuple(r.old_shape[a] for a in layout.spatial) if layout else ()
        if layout and all(isinstance(d, int) for d in exported):
            stride = next((g.stride for g in geometry.values() if isinstance(g, Geometry)), None)
            estimate = None
            if feature_map and len(feature_map) == len(exported):
                estimate = tuple(max(e // max(f, 1), 1) for e, f in zip(exported, feature_map, strict=True))
            note, multiple = ambiguous_pads(model, layout, exported)  # type: ignore[arg-type]
            valid = valid_sizes(model, layout, exported, stride, estimate, multiple)  # type: ignore[arg-type]
            if 0 in valid.step:  # claiming a symbolic size it cannot take would be a lie
                guide = stride or estimate or (1,) * len(exported)
                probe = tuple(e + (s or 1) for e, s in zip(exported, guide, strict=True))
                why = size_error(model, layout, probe) or "no larger size runs"
                text, at = ("x".join(map(str, x)) for x in (exported, probe))
                raise NotConvertibleError(f"the model runs only at its exported size {text}: at {at}, {why}")
            return replace(valid, note=note) if note and 0 not in valid.step else valid
    return None


def sizes_to_verify(sizes: tuple[tuple[int, ...], ...] | None, valid: ValidSizes) -> tuple[tuple[int, ...], ...]:
    """The sizes to verify at: the user's, each one the model accepts (UsageError otherwise), or two
    larger valid ones."""
    if sizes is None:
        return valid.larger()
    for size in sizes:
        text = "x".join(map(str, size))
        if len(size) != len(valid.minimum):
            raise UsageError(f"--size {text} has {len(size)} dims; the input has {len(valid.minimum)} spatial dims")
        if not valid.accepts(size):
            raise UsageError(f"--size {text} is not a size this model runs at; valid sizes: {valid.describe()}")
    return sizes
