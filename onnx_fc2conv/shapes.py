"""Shapes: relax the input to symbolic sizes, re-infer every shape, name the output dims."""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass

import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort
from onnx import helper

from . import contrib_shapes
from .graph import opset_version, set_value_info_dims, shape, value_info_dims
from .layout import InputLayout, trace_layout

log = logging.getLogger(__name__)

# Initializers up to this many elements are kept in the shape-inference skeleton: shape
# targets and axes must keep their values, big weights only need their type.
_SKELETON_KEEP_ELEMENTS = 64

_FLOAT_TYPES = {
    onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE,
}  # fmt: skip


@dataclass(frozen=True)
class DimNames:
    batch: str = "batch"
    height: str = "height"
    width: str = "width"
    depth: str = "depth"
    length: str = "length"

    def spatial(self, rank: int) -> tuple[str, ...]:
        """Names of `rank` spatial dims, innermost last: L; H, W; D, H, W."""
        if rank == 1:
            return (self.length,)
        names = (self.depth, self.height, self.width)
        if rank <= 3:
            return names[3 - rank :]
        return tuple(f"spatial{i}" for i in range(rank))


@dataclass(frozen=True)
class RelaxedInput:
    """An input given symbolic dims: its shapes before and after, and which axes were relaxed."""

    name: str
    old_shape: tuple
    new_shape: tuple
    batch_axis: int | None = None  # None: the batch stays as exported
    spatial_axes: tuple[int, ...] = ()  # innermost last


# Names exporters make up for a dim no one named: onnx's inference and tf2onnx (`unk__24`),
# paddle2onnx (`DynamicDimension.0`), torch.onnx given a list of axes (`x_dynamic_axes_1`),
# torch.export's automatic dims (`s31`).
_PLACEHOLDER = re.compile(r"unk__\d+|DynamicDimension\.\d+|.+_dynamic_axes_\d+|s\d+")


def own_name(dim: object) -> str | None:
    """The original's own symbolic name for a dim (`N`, `batch_size`), or None for a fixed or
    unnamed dim or an exporter's placeholder."""
    return dim if isinstance(dim, str) and dim and not _PLACEHOLDER.fullmatch(dim) else None


def relaxed_names(old: list, configured: dict[int, str]) -> dict[int, str]:
    """The name each relaxed axis gets: the original's own symbol where it has one, else the
    configured name. An own name that would tie two relaxed axes together (`['S', 3, 'S', 'S']`,
    or `N` where `N` is configured for another axis) gives way to the configured names."""
    names = {axis: own_name(old[axis]) or name for axis, name in configured.items()}
    counts = Counter(names.values())
    return {axis: configured[axis] if counts[name] > 1 else name for axis, name in names.items()}


def _dims(vi: onnx.ValueInfoProto) -> list:
    return list(value_info_dims(vi) or ())


def input_spatial_axes(tensor: gs.Tensor) -> list[int]:
    """Spatial axes of an image input, by data flow (layout.py); positional when untraceable."""
    layout = trace_layout(tensor)
    return list(layout.spatial) if layout is not None else list(range(2, len(shape(tensor) or ())))


def relax_inputs(
    model: onnx.ModelProto, layouts: dict[str, InputLayout], names: DimNames, mlp_inputs: dict[str, int]
) -> list[RelaxedInput]:
    """Give image inputs (`layouts`) a symbolic batch and spatial dims; MLP inputs `[N, K]` become `[N, K, *S]`.

    A dim the original named itself keeps its name (relaxed_names); a fixed one gets `names`'.
    A symbolic channel dim becomes the count the first Convs take (the only one the model runs at).
    Image inputs exported at different sizes get different names (`height`, `height_2`): one name
    would declare them equal.
    A layout whose batch is None keeps its exported batch (something in the graph pins it).
    """
    relaxed: list[RelaxedInput] = []
    sizes: dict[tuple, int] = {}  # exported spatial dims -> group: images of another size get other names
    for vi in model.graph.input:
        if not vi.type.HasField("tensor_type"):
            continue
        old = _dims(vi)
        layout = layouts.get(vi.name)
        if vi.name in mlp_inputs and vi.type.tensor_type.elem_type in _FLOAT_TYPES:
            rank = mlp_inputs[vi.name]
            new = [relaxed_names(old, {0: names.batch})[0], old[1], *names.spatial(rank)]
            batch, spatial = 0, tuple(range(2, 2 + rank))
        elif layout is not None:
            batch, spatial = layout.batch, layout.spatial
            exported = tuple(old[a] for a in spatial)
            named = all(own_name(d) for d in exported)  # keeps its own names: takes no configured ones
            same_rank = [key for key in sizes if len(key) == len(exported)]
            group = 1 if named else sizes.setdefault(exported, len(same_rank) + 1)
            spatial_names = [n if group == 1 else f"{n}_{group}" for n in names.spatial(len(spatial))]
            configured = dict(zip(spatial, spatial_names, strict=True))
            if batch is not None:
                configured[batch] = names.batch
            new = list(old)
            for axis, dim_name in relaxed_names(old, configured).items():
                new[axis] = dim_name
            if not isinstance(old[layout.channel], int) and layout.channels is not None:
                new[layout.channel] = layout.channels  # a symbolic channel dim the kernels pin
        else:
            continue
        set_value_info_dims(vi, new)
        relaxed.append(RelaxedInput(vi.name, tuple(old), tuple(new), batch, tuple(spatial)))
    return relaxed


def skeleton(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model without its large weights (declared as inputs instead): cheap to shape-infer."""
    g = model.graph
    graph = helper.make_graph([], g.name, [], [])
    graph.node.extend(g.node)
    graph.input.extend(vi for vi in g.input)
    graph.output.extend(g.output)
    declared = {vi.name for vi in g.input}
    for t in g.initializer:
        count = 1
        for d in t.dims:
            count *= d
        if count <= _SKELETON_KEEP_ELEMENTS:
            graph.initializer.append(t)
        elif t.name not in declared:
            graph.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    out = helper.make_model(graph, opset_imports=model.opset_import, ir_version=max(model.ir_version, 4))
    out.functions.extend(model.functions)
    return out


def skeleton_at(model: onnx.ModelProto, dims: dict[str, list]) -> onnx.ModelProto:
    """The skeleton with the given inputs' dims replaced and every other shape forgotten."""
    skel = skeleton(model)
    for vi in skel.graph.input:
        if vi.name in dims:
            set_value_info_dims(vi, dims[vi.name])
    skel.graph.ClearField("value_info")
    for out in skel.graph.output:
        out.type.tensor_type.ClearField("shape")
    return skel


def check_graph(model: onnx.ModelProto) -> None:
    """`onnx.checker.check_model(full_check=True)` on the skeleton: every node, schema and inferred
    shape, without serializing the weights (whose sizes files.load_model checked). Raises on failure."""
    onnx.checker.check_model(skeleton(model), full_check=True)


def inferred_skeleton(model: onnx.ModelProto) -> onnx.ModelProto:
    """The skeleton with every inferable shape filled in; the model itself is not touched.

    onnxruntime's symbolic shape inference follows dims through Shape arithmetic, Split, Slice,
    Concat, Reshape and Pad (a `x.view(x.size(0), -1)` keeps its batch and feature count, a Pad
    computed from `Shape` keeps the spatial dims), where onnx's own inference loses them; onnx's is
    the fallback for graphs the symbolic one cannot handle (custom ops, say).
    """
    skel = skeleton(model)
    skel.graph.ClearField("value_info")
    return infer_skeleton(skel)


def infer_skeleton(skel: onnx.ModelProto) -> onnx.ModelProto:
    """`skel` (a skeleton without value_info) with every inferable shape filled in, as above."""
    inferred = symbolic_inference(skel) or onnx.shape_inference.infer_shapes(skel, strict_mode=False, data_prop=True)
    if _static_inputs(inferred) and not all_static(inferred):
        return _folded(skel) or inferred
    return inferred


_FOLD_ROUNDS = 8


def _static_inputs(model: onnx.ModelProto) -> bool:
    return all(all(isinstance(d, int) for d in value_info_dims(vi) or (None,)) for vi in model.graph.input)


def all_static(model: onnx.ModelProto) -> bool:
    dims = [value_info_dims(vi) for vi in [*model.graph.value_info, *model.graph.output]]
    return all(d is not None and all(isinstance(x, int) for x in d) for d in dims)


def _folded(skel: onnx.ModelProto) -> onnx.ModelProto | None:
    """Shapes where the model computes sizes from `Shape` (timm's TF-'same' Pad) and its input is
    static: the size arithmetic is folded into constants, a round per stage, on the weight-free
    copy only (the written model keeps computing them at run time)."""
    folded = fold_sizes(skel)
    if folded is None:
        return None
    inferred = onnx.shape_inference.infer_shapes(folded, strict_mode=False, data_prop=True)
    return inferred if all_static(inferred) else None


def fold_sizes(skel: onnx.ModelProto) -> onnx.ModelProto | None:
    """`skel` (static inputs) with its size arithmetic folded into constants, or None."""
    current = skel
    ort.set_default_logger_severity(4)  # folding runs onnxruntime; its warnings must not reach stderr
    try:
        for _ in range(_FOLD_ROUNDS):
            inferred = onnx.shape_inference.infer_shapes(current, strict_mode=False, data_prop=True)
            if all_static(inferred):
                return current
            graph = gs.import_onnx(inferred)
            before = len(graph.nodes)
            graph.fold_constants(fold_shapes=True).cleanup()
            if len(graph.nodes) == before:
                return current
            current = gs.export_onnx(graph, do_type_check=False)
            current.ir_version = skel.ir_version
            current.graph.ClearField("value_info")
    except Exception:  # folding evaluates subgraphs with onnxruntime; any failure: shapes stay unknown
        return None
    return current


def symbolic_inference(skel: onnx.ModelProto) -> onnx.ModelProto | None:
    """SymbolicShapeInference.infer_shapes' own loop: on an incomplete result that function saves
    the model into the working folder before raising; here an incomplete result is just None."""
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        if opset_version(skel) < 7:
            return None
        # its doubts are logged as warnings; with no handler set, Python would print them to stderr
        logging.getLogger("onnxruntime.tools.symbolic_shape_infer").setLevel(logging.ERROR)
        inference = SymbolicShapeInference(2**31 - 1, True, False, 0)
        inference._preprocess(skel)
        contrib_shapes.register(inference)
        complete = False
        while inference.run_:
            complete = inference._infer_impl()
        inference._update_output_from_vi()
    except Exception:  # any failure of the symbolic pass (or its absence) falls back to onnx's
        return None
    return inference.out_mp_ if complete else None


def infer_shapes(model: onnx.ModelProto, *, for_analysis: bool = True) -> None:
    """Replace value_info and output types with freshly inferred ones (weights never serialized).

    For analysis the symbolic inference (and folding) gives the most; the value_info written into
    a converted model comes from onnx's own inference, which leaves a dim unknown rather than
    guess it (onnxruntime plans its buffers with these dims).
    """
    if for_analysis:
        inferred = inferred_skeleton(model)
    else:
        skel = skeleton(model)
        skel.graph.ClearField("value_info")
        inferred = onnx.shape_inference.infer_shapes(skel, strict_mode=False, data_prop=True)
    model.graph.ClearField("value_info")
    model.graph.value_info.extend(inferred.graph.value_info)
    by_name = {o.name: o for o in inferred.graph.output}
    for out in model.graph.output:
        new = by_name.get(out.name)
        if new is not None and new.type.HasField("tensor_type") and new.type.tensor_type.HasField("shape"):
            out.type.CopyFrom(new.type)
    _fixed_dims_from_onnx(model)


def _fixed_dims_from_onnx(model: onnx.ModelProto) -> None:
    """Output dims the symbolic pass made up (after an op it does not know, such as QLinearConv)
    but onnx's own inference fixes: the fixed size is declared."""
    if all(all(isinstance(d, int) for d in value_info_dims(o) or ()) for o in model.graph.output):
        return
    skel = skeleton(model)
    skel.graph.ClearField("value_info")
    try:
        fixed = {
            o.name: value_info_dims(o) for o in onnx.shape_inference.infer_shapes(skel, strict_mode=False).graph.output
        }
    except Exception:  # onnx's inference is only a second opinion here
        return
    for out in model.graph.output:
        dims, known = value_info_dims(out), fixed.get(out.name)
        if dims is None or known is None or len(dims) != len(known):
            continue
        merged = [k if isinstance(k, int) and not isinstance(d, int) else d for d, k in zip(dims, known, strict=True)]
        if merged != list(dims):
            set_value_info_dims(out, merged)


def clear_output_shapes(model: onnx.ModelProto, outputs: set[str]) -> dict[str, tuple]:
    """Forget the outputs' (now stale) dims; returns each one's dims as they were (for
    `restore_output_ranks` and output_dims.name_outputs)."""
    before = {}
    for out in model.graph.output:
        if out.name in outputs and out.type.HasField("tensor_type"):
            if out.type.tensor_type.HasField("shape"):
                before[out.name] = tuple(value_info_dims(out) or ())
            out.type.tensor_type.ClearField("shape")
    return before


def restore_output_ranks(model: onnx.ModelProto, before: dict[str, tuple]) -> None:
    """Outputs onnx's inference could not reach (behind a contrib op) keep their rank, with unknown
    dims; output_dims.name_outputs then takes rank and dims from the symbolic inference."""
    for out in model.graph.output:
        tensor_type = out.type.tensor_type
        if out.name in before and out.type.HasField("tensor_type") and not tensor_type.HasField("shape"):
            for _ in before[out.name]:
                tensor_type.shape.dim.add()
