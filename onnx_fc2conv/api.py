"""The Python API: convert(), verify(), inspect(); the CLI calls exactly these."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import onnx
import onnx_graphsurgeon as gs

from . import dilate, files, static_size, tokens
from .backbone import BackboneFix, plan_backbone
from .batch import plan_batch
from .batch_head import route_batches
from .dense_prefix import dense_notices
from .errors import ModelLoadError, ModelRunError, NotConvertibleError, UsageError, VerificationError, one_line
from .geometry import Geometry, output_geometry
from .graph import Edit, import_graph, opset_version, shape, value_info_dims, write_back
from .heads import Head, HeadSearch, Skipped, find_heads
from .layout import image_layouts
from .options import options_problem
from .ort_fused import unfuse
from .output_dims import name_outputs
from .pinned_backbone import head_refusal
from .prepare import needs_preparing, prepare, prepared
from .rewrite import LayerRewrite, rewrite_head
from .runtime_weights import runs_as_is
from .shapes import (
    DimNames,
    RelaxedInput,
    check_graph,
    clear_output_shapes,
    infer_shapes,
    relax_inputs,
    restore_output_ranks,
)
from .sizes import ValidSizes, claimed_sizes, sizes_to_verify
from .sizes import record as record_claims
from .verify import Tolerance, VerificationReport, VerifyOptions
from .verify import verify as _verify_models
from .verify.dilated import verify_dilated
from .verify.sessions import mapped_load
from .verify.variants import verify_result

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
    batch_head: bool = False  # head layers also take a Gemm route for a batch at the original size
    output_stride: int | None = None  # a denser map by the a trous rewrite (dilate.py): S / 2 or S / 4
    input_size: tuple[int, ...] | None = None  # static shapes at this size (static_size.py), and batch
    batch: int | None = None
    exported_size: tuple[int, ...] | None = None  # symbolic spatial dims read at this size (exported_size.py)

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
    geometry of each output (or why it has none), the sizes it runs at and, from convert_file(), the
    files written."""

    model: onnx.ModelProto
    rewrites: list[HeadRewrite]
    relaxed_inputs: list[RelaxedInput]
    backbone_fixes: list[BackboneFix]
    notices: list[str] = field(default_factory=list)
    verification: VerificationReport | None = None
    removed_nodes: int = 0
    geometry: dict[str, Geometry | str] = field(default_factory=dict)  # per output: window geometry
    valid_sizes: ValidSizes | None = None  # the input sizes the model runs at
    output: Path | None = None  # convert_file(): the model written
    data_file: Path | None = None  # convert_file(): its external data file, if one was written
    dilation: dilate.Dilation | None = None  # the a trous rewrite, with --output-stride
    static: static_size.StaticSize | None = None  # with --input-size

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
    backbone_refusals: list[Skipped]
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


def _analyse(model: onnx.ModelProto, options: ConvertOptions) -> tuple[gs.Graph, HeadSearch, list[str]]:
    """The heads of `model`, prepared first in place (prepare.py); the notices of that."""
    notices = prepare(model, options.exported_size)
    notices += unfuse(model, opset_version(model))  # onnxruntime's FusedConv/FusedGemm as standard ops
    try:
        infer_shapes(model)
    except Exception as exc:  # shape inference reports malformed graphs in its own exception types
        raise ModelLoadError(f"shape inference failed: {one_line(exc)}") from exc
    graph = import_graph(model)
    search = find_heads(graph, opset_version(model), dense=options.dense, mlp_rank=options.mlp_spatial_rank)
    return graph, tokens.summarize_token_heads(graph, search), notices


def inspect(source: ModelSource, options: ConvertOptions | None = None) -> Inspection:
    """What convert() would do, without changing anything."""
    options = options or ConvertOptions()
    model = _load(source, copy=True)
    graph, search, _ = _analyse(model, options)
    plan = plan_backbone(model, graph, search.heads)
    inputs = {t.name: shape(t) or () for t in graph.inputs}
    geometry: dict[str, Geometry | str] = {}
    if not search.skipped and not plan.refusals:
        geometry = _convert_in_place(model, replace(options, verify=False)).geometry
    found = (search.heads, search.skipped, search.candidates, plan.fixes, plan.refusals, inputs)
    return Inspection(*found, opset_version(model), geometry)


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
    if options.verify and (original is None or needs_preparing(original, options.exported_size)):  # theirs stays
        original = prepared(_load(model if original is None else original, copy=True), options.exported_size)
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
    verify_options = options.verify_options
    if result.valid_sizes is not None:
        verify_options = replace(verify_options, sizes=sizes_to_verify(options.sizes, result.valid_sizes))
    report = verify_result(original, result, verify_options, _verify_models)  # plain, denser or static
    cannot_run = "the original model cannot run: "
    broken = next((c.note for c in report.failures if c.note.startswith(cannot_run)), None)
    if broken is not None:  # the original's own failure is the input's problem, not the conversion's
        raise ModelRunError(f"onnxruntime cannot run the original model: {broken.removeprefix(cannot_run)}")
    if not report.passed:
        raise VerificationError(report.failure_line(), report)
    return report


def _convert_in_place(model: onnx.ModelProto, options: ConvertOptions) -> ConversionResult:
    graph, search, notices = _analyse(model, options)
    kept, kept_notices = runs_as_is(graph, search, options.dense)
    refused = [s for s in search.skipped if s not in kept]
    if refused:
        raise head_refusal(model, graph, search, refused)
    plan = plan_backbone(model, graph, search.heads)
    if plan.refusals:
        raise NotConvertibleError(plan.refusals[0].reason, [r.reason for r in plan.refusals])
    notices += kept_notices
    output_names = [t.name for t in graph.outputs]
    edit = Edit(graph)
    for fix in plan.fixes:
        fix.apply(edit)
    original_nodes = {id(n) for n in graph.nodes}
    rewrites = [HeadRewrite(head, tuple(rewrite_head(edit, head))) for head in search.heads]
    graph.cleanup(remove_unused_graph_inputs=False)
    layouts = image_layouts(graph, search.heads)  # after the rewrite: a head's Conv gives meaning too
    batch = plan_batch(graph, layouts)
    for fix in batch.fixes:
        fix.apply(edit)
    if batch.pins:
        layouts = {name: replace(layout, batch=None) for name, layout in layouts.items()}
        notices.append(f"the batch stays as exported: {batch.pins[0].reason}")
    write_back(graph, model)
    replaced = sum(len(layer.nodes) for head in search.heads for layer in head.layers)
    removed = len(original_nodes - {id(n) for n in graph.nodes}) - replaced
    mlp_inputs = {h.feature: options.mlp_spatial_rank for h in search.heads if h.reads_input}
    relaxed = relax_inputs(model, layouts, options.dim_names, mlp_inputs)
    dilation = dilate.apply(model, options.output_stride) if options.output_stride else None
    notices += [dilation.describe()] if dilation else []
    if not search.heads and not kept:
        notices.append("no FC layer found: the model is already fully convolutional; only its input was relaxed")
    notices += dense_notices(search.heads, options.dense)
    head_outputs = {
        out: (options.mlp_spatial_rank if h.reads_input else h.spatial_rank) for h in search.heads for out in h.outputs
    }
    before = clear_output_shapes(model, set(output_names))  # every output may depend on the new dims
    infer_shapes(model, for_analysis=False)
    restore_output_ranks(model, before)
    name_outputs(model, relaxed, options.dim_names, before, head_outputs)
    _set_mode(model, options)
    for head in search.heads:
        log.info("head %s: %s -> Conv", head.name, head.description)
    geometry = output_geometry(model)
    maps = [h.pool.source_shape[1:] if h.pool else h.feature_shape[1:] for h in search.heads if not h.reads_input]
    valid = claimed_sizes(model, layouts, relaxed, geometry, maps[0] if maps else None)
    notices += [valid.note] if valid is not None and valid.note else []
    record_claims(model, valid, next((g for g in geometry.values() if isinstance(g, Geometry)), None))
    if options.batch_head:  # after the claims: the routes change no size the model accepts
        notices += route_batches(
            model, [n.outputs[0].name for n in graph.nodes if id(n) not in original_nodes and n.op == "Conv"]
        )[1]
    fixes = plan.fixes + batch.fixes
    result = ConversionResult(
        model, rewrites, relaxed, fixes, notices, removed_nodes=removed, geometry=geometry, valid_sizes=valid
    )
    result.dilation = dilation
    return static_size.apply(result, layouts, options.input_size, options.batch)  # with --input-size


def _set_mode(model: onnx.ModelProto, options: ConvertOptions) -> None:
    for prop in [p for p in model.metadata_props if p.key == MODE_KEY]:
        model.metadata_props.remove(prop)
    model.metadata_props.add(key=MODE_KEY, value="dense" if options.dense else "exact")


def model_mode(model: onnx.ModelProto) -> str:
    return next((p.value for p in model.metadata_props if p.key == MODE_KEY), "exact")


def verify(original: ModelSource, converted: ModelSource, options: ConvertOptions | None = None) -> VerificationReport:
    """Check a converted model against its original; the heads are found again in the original."""
    options = options or ConvertOptions()
    orig = _load(original, copy=isinstance(original, onnx.ModelProto))  # ours: analysis re-infers its shapes
    conv = _load(converted, copy=False)
    _require_a_conversion_of(orig, conv)
    dense = options.dense or model_mode(conv) == "dense"
    _, search, _ = _analyse(orig, ConvertOptions(dense=dense, exported_size=options.exported_size))
    if search.skipped:
        raise NotConvertibleError(search.skipped[0].reason, [s.reason for s in search.skipped])
    dilation = dilate.recorded(conv)  # a denser map is checked against shifted runs of the original
    if dilation is not None:
        return verify_dilated(orig, conv, search.heads, dilation, options.verify_options)
    return _verify_models(orig, conv, search.heads, options.verify_options)


def _require_a_conversion_of(original: onnx.ModelProto, converted: onnx.ModelProto) -> None:
    """`converted` has the original's inputs (names and ranks) and at least one of them became symbolic."""
    inits = {t.name for g in (original.graph, converted.graph) for t in g.initializer}
    ours = {vi.name: value_info_dims(vi) or () for vi in original.graph.input if vi.name not in inits}
    theirs = {vi.name: value_info_dims(vi) or () for vi in converted.graph.input if vi.name not in inits}
    if set(ours) != set(theirs) or any(len(ours[n]) > len(theirs[n]) for n in ours):
        first, second = ("; ".join(f"'{n}' {list(d)}" for n, d in x.items()) for x in (ours, theirs))
        raise UsageError(
            f"the models' inputs differ ({first} and {second}): the second is not a conversion of the first"
        )
    claims = {p.key: p.value for p in converted.metadata_props}
    if claims.get("onnx_fc2conv.valid_sizes", "").endswith("(static shapes)"):
        raise UsageError(
            "the second model was written with static shapes (--input-size) and verified then; "
            "verify the dynamic conversion instead"
        )
    if MODE_KEY not in claims and all(ours[n] == theirs[n] for n in ours):  # a conversion keeps free dims as they are
        shapes = "; ".join(f"'{n}' {list(d)}" for n, d in theirs.items())
        raise UsageError(f"the second model has the original's fixed input shape ({shapes}): convert it first")


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
    files.check_free_space(result.model, output_path)
    if options.verify:  # the original's weights are mapped from a temporary file, not held twice
        with mapped_load(lambda: prepared(files.load_model(input_path), options.exported_size), "original") as original:
            result.verification = verify_conversion(original, result, options)
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
