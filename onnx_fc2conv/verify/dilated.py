"""The independent reference of a denser (a trous) map, built from the original graph.

For an output stride S / 2^k (levels L_1 .. L_k, L_1 the last strided layer, L_k the earliest):
the original graph cut at L_k's input `u` runs at the size under test; for every choice of
shifts `r_m` in {0, 1} per level and axis, the original graph from `u` to the heads' feature maps
runs with each L_m's window origin moved `r_m` pixels later (begin pad reduced, or `u` cropped
where the pad is 0), then each original head on every window (reference.head_on_windows). Its
cell `j` is the denser map's cell `2^k j + sum_m r_m 2^(k-m)` (docs/denser-maps.md); the maps
are interleaved and compared cell by cell. No dilated layer is used to build it.

It runs at the exported size (batch 1 and 2) and at two larger, non-square sizes (batch 2): the
zero-shift cells are the original model's map, so the same-size claim is part of it.
"""

from __future__ import annotations

import itertools
import logging

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..dilate import Dilation, shifted_pads
from ..heads import Head
from ..shapes import inferred_skeleton
from .compare import PhaseResult, VerificationReport, compare, failed
from .cut import cut
from .inputs import default_sizes, model_inputs, random_value
from .model_types import tensor_types
from .phases import VerifyOptions, checker
from .reference import head_on_windows
from .sessions import RunError, run, session

log = logging.getLogger(__name__)

CHECK = "a trous"


def _shifted_tail(tail: onnx.ModelProto, dilation: Dilation, shifts: tuple[tuple[int, ...], ...]) -> None:
    """Move each level's window origin in `tail` (a cut of the original) by its shift, in place."""
    opset = next((o.version for o in tail.opset_import if o.domain in ("", "ai.onnx")), 13)
    for level, shift in zip(dilation.levels, shifts, strict=True):
        index, node = next((i, n) for i, n in enumerate(tail.graph.node) if level.node in n.output)
        rank = len(shift)
        pads, crop = shifted_pads(node, rank, shift)
        for a in list(node.attribute):
            if a.name == "pads":
                node.attribute.remove(a)
        node.attribute.append(helper.make_attribute("pads", pads))
        if any(crop):
            cropped = f"{node.input[0]}__shift_{'_'.join(map(str, crop))}"
            axes = list(range(2, 2 + rank))
            big = [np.iinfo(np.int64).max] * rank
            if opset >= 10:
                names = [f"{cropped}_{p}" for p in ("starts", "ends", "axes")]
                for name, value in zip(names, (crop, big, axes), strict=True):
                    tail.graph.initializer.append(numpy_helper.from_array(np.array(value, np.int64), name))
                slice_node = helper.make_node("Slice", [node.input[0], *names], [cropped])
            else:
                slice_node = helper.make_node("Slice", [node.input[0]], [cropped], starts=crop, ends=big, axes=axes)
            node.input[0] = cropped
            tail.graph.node.insert(index, slice_node)


class AtrousReference:
    """The interleaved maps of every shifted tail (see the module docstring)."""

    def __init__(
        self,
        original: onnx.ModelProto,
        heads: list[Head],
        input_name: str,
        dilation: Dilation,
        converted: onnx.ModelProto | None = None,
    ) -> None:
        self.converted = converted  # its part before L_k is unchanged: the stand-in for a size-pinned original
        self.notes: list[str] = []
        types = tensor_types(inferred_skeleton(original))
        self.heads = heads
        self.dilation = dilation
        self.input_name = input_name
        u = dilation.levels[-1].u
        self.u = u
        self.prefix = session(cut(original, types, inputs=[input_name], outputs=[u], size_free=True))
        # without FC heads (a fully convolutional model) the tail runs to the graph's outputs
        self.whole = [o.name for o in original.graph.output] if not heads else []
        features = list(dict.fromkeys(h.feature for h in heads)) or self.whole
        rank = len(dilation.levels[-1].begin_pads)
        self.rank = rank
        per_level = list(itertools.product((0, 1), repeat=rank))
        self.tails = {}
        for shifts in itertools.product(per_level, repeat=len(dilation.levels)):
            tail = cut(original, types, inputs=[u], outputs=features, size_free=True)
            _shifted_tail(tail, dilation, shifts)
            self.tails[shifts] = session(tail)
        self.head_sessions = [
            session(cut(original, types, inputs=[h.ref_input], outputs=list(h.outputs))) for h in heads
        ]

    @property
    def outputs(self) -> list[str]:
        return [o for h in self.heads for o in h.outputs] + self.whole

    def offset(self, shifts: tuple[tuple[int, ...], ...]) -> tuple[int, ...]:
        """Per axis, the denser map's cell of the shifted tail's cell 0: sum_m r_m 2^(k-m)."""
        k = len(self.dilation.levels)
        return tuple(sum(shift[a] * 2 ** (k - 1 - m) for m, shift in enumerate(shifts)) for a in range(self.rank))

    def _u(self, x: np.ndarray) -> np.ndarray:
        """`u` from the original backbone; where that cannot run at this size, from the converted
        model's part before the strided layers (not rewritten by the a trous step), with a note."""
        try:
            return run(self.prefix, {self.input_name: x}, "the original backbone up to the strided layer")[self.u]
        except RunError as exc:
            if self.converted is None:
                raise
            types = tensor_types(inferred_skeleton(self.converted))
            part = cut(self.converted, types, inputs=[self.input_name], outputs=[self.u], size_free=True)
            self.prefix, self.converted = session(part), None
            self.notes.append(
                f"{exc}; the size-agnostic backbone up to the strided layer was used as the reference's start"
            )
            return run(self.prefix, {self.input_name: x}, "the size-agnostic backbone up to the strided layer")[self.u]

    def expected(self, x: np.ndarray) -> dict[str, np.ndarray | str]:
        try:
            u = self._u(x)
            parts: dict[tuple[int, ...], dict[str, np.ndarray | tuple[int, ...] | str]] = {}
            for shifts, sess in self.tails.items():
                try:
                    features = run(sess, {self.u: u}, f"the original tail with shifts {list(shifts)}")
                except RunError as exc:  # too small to run: the denser map must have no cell there
                    parts[self.offset(shifts)] = dict.fromkeys(self.outputs, str(exc))
                    continue
                found: dict[str, np.ndarray | tuple[int, ...] | str] = {o: features[o] for o in self.whole}
                for head, head_sess in zip(self.heads, self.head_sessions, strict=True):
                    feature = features[head.feature]
                    grid = tuple(max(f - k + 1, 0) for f, k in zip(feature.shape[2:], head.window, strict=False))
                    if feature.ndim > 2 and 0 in grid:  # a shifted map one cell short of a window: no cells
                        found.update(dict.fromkeys(head.outputs, grid))
                    else:
                        found.update(head_on_windows(head, head_sess, feature))
                parts[self.offset(shifts)] = found
        except RunError as exc:
            return dict.fromkeys(self.outputs, str(exc))
        factor = self.dilation.factor
        return {name: _interleave({o: p[name] for o, p in parts.items()}, factor) for name in self.outputs}


Part = np.ndarray | tuple[int, ...] | str  # a shifted map; the grid of one without cells; why it could not run


def _interleave(parts: dict[tuple[int, ...], Part], factor: int) -> np.ndarray | str:
    """`out[..., o_0 + factor * j_0, o_1 + factor * j_1] = parts[o][..., j_0, j_1]`.

    A part without cells (or that could not run) must land on an empty slice of `out`.
    """
    arrays = {o: p for o, p in parts.items() if isinstance(p, np.ndarray)}
    if not arrays:
        return next((p for p in parts.values() if isinstance(p, str)), "no shifted map has a cell at this size")
    rank = len(next(iter(parts)))
    sample = next(iter(arrays.values()))
    lead = sample.shape[:-rank]
    totals = []
    for a in range(rank):
        sizes: dict[int, int] = {}
        for o, p in arrays.items():
            sizes[o[a]] = max(sizes.get(o[a], 0), p.shape[p.ndim - rank + a])
        totals.append(sum(sizes.values()))
    out = np.zeros((*lead, *totals), dtype=sample.dtype)
    for o, p in parts.items():
        index = (..., *(slice(start, None, factor) for start in o))
        target = out[index]
        if isinstance(p, np.ndarray) and target.shape == p.shape:
            out[index] = p
        elif target.size:
            why = p if isinstance(p, str) else f"shifted map {list(getattr(p, 'shape', p))} does not fit"
            return f"cells at offset {list(o)} of the interleaved {list(out.shape)}: {why}"
    return out


def verify_dilated(
    original: onnx.ModelProto,
    converted: onnx.ModelProto,
    heads: list[Head],
    dilation: Dilation,
    options: VerifyOptions,
) -> VerificationReport:
    """The denser model against the a trous reference at the exported and two larger sizes."""
    plan = model_inputs(original, converted, set())
    image = [i for i in plan.inputs if i.spatial_axes]
    if len(plan.inputs) != 1 or len(image) != 1 or image[0].at_batch(1) is None:
        note = "a denser map is verified on models with exactly one image input of known size"
        return VerificationReport.of([PhaseResult(comparisons=[failed(CHECK, "*", (), note)])], "not run")
    inp = image[0]
    exported = tuple(int(inp.shape[a]) for a in inp.spatial_axes)  # type: ignore[arg-type]
    batch = plan.batches[-1]
    runs = [(b, exported) for b in plan.batches] + [(batch, s) for s in options.sizes or default_sizes(exported)]
    rng = np.random.default_rng(options.seed)
    reference = AtrousReference(original, heads, inp.name, dilation, converted)
    conv_sess = session(converted)
    result = PhaseResult(notes=[f"output stride {dilation.old_stride} -> {dilation.new_stride} by the a trous rewrite"])
    for b, size in runs:
        shape = [b, *(int(d) for d in inp.shape[1:])]  # type: ignore[arg-type]
        for axis, s in zip(inp.spatial_axes, size, strict=True):
            shape[axis] = s
        x = random_value(tuple(shape), inp.elem_type, rng)
        log.info("verify: a trous map at %s", shape)
        try:
            actual = run(conv_sess, {inp.name: x}, f"the converted model at {shape}")
        except RunError as exc:
            result.comparisons += [failed(CHECK, o, tuple(shape), str(exc)) for o in reference.outputs]
            continue
        for name, exp in reference.expected(x).items():
            if isinstance(exp, str):
                result.comparisons.append(failed(CHECK, name, tuple(shape), exp))
                continue
            result.comparisons.append(
                compare(actual[name], exp, options.tolerance, check=CHECK, output=name, input_shape=tuple(shape))
            )
    result.notes += reference.notes
    verdict, checked = checker(original, converted)
    return VerificationReport.of([result, checked], verdict)
