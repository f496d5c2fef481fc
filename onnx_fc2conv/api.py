"""The Python API: convert(), verify(), inspect(); the CLI calls exactly these."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import onnx

from . import files
from .backbone import BackboneFix, fix_baked_sizes
from .errors import ModelLoadError, NotConvertibleError, UsageError, VerificationError, one_line, runtime_failure
from .geometry import Geometry, output_geometry
from .graph import GraphIndex
from .heads import Head, HeadSearch, Skipped, find_heads
from .options import options_problem
from .rewrite import LayerRewrite, remove_dead_nodes, rewrite_head
from .shapes import (
    DimNames,
    RelaxedInput,
    check_graph,
    clear_output_shapes,
    infer_shapes,
    name_output_dims,
    relax_inputs,
    restore_output_ranks,
)
from .verify import Tolerance, VerificationReport, VerifyOptions
from .verify import verify as _verify_models

log = logging.getLogger(__name__)

MODE_KEY = "onnx_fc2conv.mode"

ModelSource = onnx.ModelProto | str | os.PathLike[str]


@dataclass(frozen=True)
class ConvertOptions:
    """Everything a conversion can be told; the CLI fills one of these from its flags."""

    dense: bool = False  # global-pool heads: run the 1 x 1 head before the pool (a class map)
    verify: bool = True
    dim_names: DimNames = field(default_factory=DimNames)
    tolerance: Tolerance = field(default_factory=Tolerance)
    sizes: tuple[tuple[int, ...], ...] | None = None  # larger sizes for verification
    seed: int = 0
    mlp_spatial_rank: int = 2  # an MLP's [N, K] input becomes [N, K, *S] with this many S
    external_threshold: int = files.DEFAULT_EXTERNAL_THRESHOLD
    in_place: bool = False

    def __post_init__(self) -> None:
        problem = options_problem(self)
        if problem is not None:
            raise UsageError(f"ConvertOptions: {problem}")

    @property
    def verify_options(self) -> VerifyOptions:
        return VerifyOptions(tolerance=self.tolerance, sizes=self.sizes, seed=self.seed)


@dataclass(frozen=True)
class HeadRewrite:
    """One head and what each of its FC layers became."""

    head: Head
    layers: tuple[LayerRewrite, ...]


@dataclass
class ConversionResult:
    """A converted model and what was done to it: the rewrite of each head, the inputs relaxed, the
    backbone nodes fixed, notices, the verification report (None without verification), the window
    geometry of each output (or why it has none) and, from convert_file(), the files written."""

    model: onnx.ModelProto
    rewrites: list[HeadRewrite]
    relaxed_inputs: list[RelaxedInput]
    backbone_fixes: list[BackboneFix]
    notices: list[str] = field(default_factory=list)
    verification: VerificationReport | None = None
    removed_nodes: int = 0
    geometry: dict[str, Geometry | str] = field(default_factory=dict)  # per output: window geometry
    output: Path | None = None  # convert_file(): the model written
    data_file: Path | None = None  # convert_file(): its external data file, if one was written

    @property
    def heads(self) -> list[Head]:
        return [r.head for r in self.rewrites]


@dataclass
class Inspection:
    """What convert() would do, found without changing anything: the heads it would rewrite, the
    candidates it would refuse (with reasons), backbone fixes and refusals, the inputs' shapes, the
    opset and each output's window geometry (or why it has none)."""

    heads: list[Head]
    skipped: list[Skipped]
    candidates: int
    backbone_fixes: list[BackboneFix]
    backbone_refusals: list[str]
    input_shapes: dict[str, tuple]
    opset: int
    geometry: dict[str, Geometry | str] = field(default_factory=dict)


def _load(source: ModelSource, *, copy: bool) -> onnx.ModelProto:
    if isinstance(source, onnx.ModelProto):
        if not copy:
            return source
        model = onnx.ModelProto()
        model.CopyFrom(source)
        files.validate_model(model)
        return model
    return files.load_model(source)


def _unique_node_names(model: onnx.ModelProto) -> None:
    """Matching refers to nodes by name: give unnamed or clashing nodes a unique one."""
    seen: set[str] = set()
    for i, node in enumerate(model.graph.node):
        name = node.name
        if not name or name in seen:
            base = f"{node.op_type}_{i}"
            name = base
            k = 1
            while name in seen:
                name, k = f"{base}_{k}", k + 1
            node.name = name
        seen.add(name)


def _analyse(model: onnx.ModelProto, options: ConvertOptions) -> tuple[GraphIndex, HeadSearch]:
    _unique_node_names(model)
    try:
        infer_shapes(model)
    except Exception as exc:  # shape inference reports malformed graphs in its own exception types
        raise ModelLoadError(f"shape inference failed: {one_line(exc)}") from exc
    ix = GraphIndex(model)
    return ix, find_heads(model, dense=options.dense, mlp_rank=options.mlp_spatial_rank, ix=ix)


def inspect(source: ModelSource, options: ConvertOptions | None = None) -> Inspection:
    """What convert() would do, without changing anything."""
    options = options or ConvertOptions()
    model = _load(source, copy=True)
    ix, search = _analyse(model, options)
    fixes, refusals = fix_baked_sizes(model, ix, search.heads, dry_run=True)
    inputs = {name: ix.shapes.get(name, ()) for name in ix.graph_inputs}
    geometry: dict[str, Geometry | str] = {}
    if not search.skipped and not refusals:
        geometry = _convert_in_place(model, replace(options, verify=False)).geometry
    return Inspection(search.heads, search.skipped, search.candidates, fixes, refusals, inputs, ix.opset, geometry)


def window_geometry(source: ModelSource, options: ConvertOptions | None = None) -> dict[str, Geometry | str]:
    """Per output of the (converted) model: stride, receptive field and `box(cell)`, or why none.

    An unconverted model is converted in memory first (without verification).
    """
    options = replace(options or ConvertOptions(), verify=False)
    model = _load(source, copy=True)
    return _convert_in_place(model, options).geometry


def convert(source: ModelSource, options: ConvertOptions | None = None) -> ConversionResult:
    """Rewrite every FC head of a model into convolutions and relax its input to any size.

    `source` is a ModelProto (left untouched; a copy is converted) or a path. With
    `options.verify` (the default) the result is proven equal to the original and a
    VerificationError is raised when it is not. NotConvertibleError: the model has FC
    layers that cannot be rewritten exactly (nothing is returned then).
    """
    options = options or ConvertOptions()
    original = source if isinstance(source, onnx.ModelProto) else None
    model = _load(source, copy=True)
    if original is None and options.verify:
        original = onnx.ModelProto()
        original.CopyFrom(model)
    try:
        result = _convert_in_place(model, options)
    except NotConvertibleError:
        if options.verify and original is not None:
            _require_runtime(original)
        raise
    if options.verify:
        assert original is not None
        result.verification = verify_conversion(original, result, options)
    return result


def verify_conversion(
    original: onnx.ModelProto, result: ConversionResult, options: ConvertOptions
) -> VerificationReport:
    log.info("verifying with onnxruntime")
    try:
        report = _verify_models(original, result.model, result.heads, options.verify_options)
    except RuntimeError as exc:  # a model that does not run: ModelRunError or VerificationError
        raise runtime_failure(exc) from exc
    if not report.passed:
        raise VerificationError(_failure_line(report), report)
    return report


def _failure_line(report: VerificationReport) -> str:
    if not report.comparisons:
        return "verification compared nothing"
    if report.checker != "passed":
        return f"the converted model fails the ONNX checker: {report.checker.removeprefix('failed: ')}"
    worst = report.failures[0]
    detail = worst.note or f"max abs error {worst.max_abs:.3g}, max rel error {worst.max_rel:.3g}"
    return f"verification FAILED: output '{worst.output}' ({worst.check}, input {list(worst.input_shape)}): {detail}"


def _convert_in_place(model: onnx.ModelProto, options: ConvertOptions) -> ConversionResult:
    ix, search = _analyse(model, options)
    if search.skipped:
        reasons = [f"{s.node}: {s.reason}" for s in search.skipped]
        total = search.candidates
        what = "no FC head" if not search.heads else f"{len(search.skipped)} of {total} FC heads"
        # the candidate nearest the outputs (the classifier, in a transformer) leads the message
        raise NotConvertibleError(f"{what} can be rewritten exactly: {search.skipped[-1].reason}", reasons)
    fixes, refusals = fix_baked_sizes(model, ix, search.heads, dry_run=False)
    if refusals:
        raise NotConvertibleError(refusals[0], refusals)
    notices: list[str] = []
    rewrites = [HeadRewrite(head, tuple(rewrite_head(model, ix, head))) for head in search.heads]
    removed = remove_dead_nodes(model)
    mlp_inputs = {h.feature: options.mlp_spatial_rank for h in search.heads if h.kind == "mlp"}
    feeders = _image_inputs(ix, search.heads)
    relaxed = relax_inputs(model, GraphIndex(model), options.dim_names, mlp_inputs, feeders)
    if not search.heads:
        notices.append("no FC layer found: the model is already fully convolutional; only its input was relaxed")
    for head in search.heads:
        if options.dense and not head.dense:
            why = "it has no global pool" if head.pool is None else "ops sit between the pool and the FC layers"
            notices.append(f"head {head.layers[0].nodes[0]}: dense mode does not apply ({why}); rewritten as usual")
    head_outputs = {
        out: (options.mlp_spatial_rank if h.kind == "mlp" else h.spatial_rank)
        for h in search.heads
        for out in h.outputs
    }
    ranks = clear_output_shapes(model, set(ix.graph_outputs))  # every output may depend on the new dims
    infer_shapes(model)
    restore_output_ranks(model, ranks)
    name_output_dims(model, head_outputs, options.dim_names)
    _set_mode(model, options)
    for head in search.heads:
        log.info("head %s: %s -> Conv", head.layers[0].nodes[0], head.description)
    geometry = output_geometry(model)
    return ConversionResult(model, rewrites, relaxed, fixes, notices, removed_nodes=removed, geometry=geometry)


def _image_inputs(ix: GraphIndex, heads: list[Head]) -> set[str] | None:
    """Inputs the heads' feature maps depend on (None: relax every image input)."""
    if not heads:
        return None
    needed = {h.feature for h in heads}
    found = set()
    for node in ix.ancestors(needed):
        found.update(i for i in node.input if i in ix.graph_inputs)
    found.update(n for n in needed if n in ix.graph_inputs)
    return found


def _set_mode(model: onnx.ModelProto, options: ConvertOptions) -> None:
    for prop in list(model.metadata_props):
        if prop.key == MODE_KEY:
            model.metadata_props.remove(prop)
    entry = model.metadata_props.add()
    entry.key = MODE_KEY
    entry.value = "dense" if options.dense else "exact"


def model_mode(model: onnx.ModelProto) -> str:
    for prop in model.metadata_props:
        if prop.key == MODE_KEY:
            return prop.value
    return "exact"


def verify(original: ModelSource, converted: ModelSource, options: ConvertOptions | None = None) -> VerificationReport:
    """Check a converted model against its original; the heads are found again in the original."""
    options = options or ConvertOptions()
    orig = _load(original, copy=isinstance(original, onnx.ModelProto))  # ours: analysing may rename nodes
    conv = _load(converted, copy=False)
    dense = options.dense or model_mode(conv) == "dense"
    _, search = _analyse(orig, ConvertOptions(dense=dense))
    if search.skipped:
        raise NotConvertibleError(search.skipped[0].reason, [s.reason for s in search.skipped])
    try:
        return _verify_models(orig, conv, search.heads, options.verify_options)
    except RuntimeError as exc:  # a model that does not run: ModelRunError or VerificationError
        raise runtime_failure(exc) from exc


def convert_file(
    input_path: str | os.PathLike[str], output_path: str | os.PathLike[str], options: ConvertOptions | None = None
) -> ConversionResult:
    """Load, convert, verify and atomically write; nothing is written unless all of it succeeds.
    The result names the files written (`output`, `data_file`)."""
    options = options or ConvertOptions()
    files.check_output_path(input_path, output_path, options.in_place)
    log.info("loading %s", input_path)
    protected: set[Path] = set()
    model = files.load_model(input_path, protected)
    superseded: set[Path] = set()
    if options.in_place:  # the input's data files may be replaced; those left unused are removed
        protected, superseded = set(), protected
    try:
        result = _convert_in_place(model, options)
    except NotConvertibleError:
        if options.verify:
            _require_runtime(str(input_path))
        raise
    if options.verify:
        original = files.load_model(input_path)
        result.verification = verify_conversion(original, result, options)
        del original
    else:
        _check(result.model)  # verification runs the checker itself
    data = files.save_model(
        result.model,
        output_path,
        external_threshold=options.external_threshold,
        protected=protected,
        superseded=superseded,
    )
    result.output, result.data_file = Path(output_path), data
    return result


def _require_runtime(model: onnx.ModelProto | str) -> None:
    """A model onnxruntime cannot load (a custom op, an opset it lacks) is invalid for a verified
    conversion: that, not the head, is the first thing to report (ModelLoadError, exit 2)."""
    from .verify import session

    session(model)


def _check(model: onnx.ModelProto) -> None:
    """The ONNX checker (full check) on the converted graph, before anything is written."""
    try:
        check_graph(model)
    except Exception as exc:
        raise VerificationError(f"the converted model fails the ONNX checker: {one_line(exc)}") from exc


__all__ = [
    "ConversionResult",
    "ConvertOptions",
    "HeadRewrite",
    "Inspection",
    "convert",
    "convert_file",
    "inspect",
    "verify",
    "window_geometry",
]
