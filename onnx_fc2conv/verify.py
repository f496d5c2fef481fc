"""Prove a conversion exact with onnxruntime.

1. Same size: original and converted on seeded random inputs (batch 1, and 2 where the original
   allows it); every output equal within `|a - b| <= atol + rtol * |b|` once the converted
   output's `1 x 1` spatial dims are dropped.
2. Larger sizes, independent reference: the converted map at two larger, non-square sizes equals
   the *original* head (cut out of the original graph, original Gemm semantics) applied to every
   window of the feature map that the *original* backbone produces at that size.
3. Not vacuous: every comparison has matching, non-empty shapes and finite values.
4. `onnx.checker.check_model(full_check=True)`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort

from .errors import ModelLoadError, one_line
from .files import attribute_tensors, proto_size
from .graph import import_graph, value_info_dims
from .heads import Head
from .shapes import check_graph, inferred_skeleton, input_spatial_axes

log = logging.getLogger(__name__)

_NP_FLOAT = {
    onnx.TensorProto.FLOAT: np.float32,
    onnx.TensorProto.FLOAT16: np.float16,
    onnx.TensorProto.DOUBLE: np.float64,
}


@dataclass(frozen=True)
class Tolerance:
    """fp32 tolerances; fp16 and bf16 outputs are compared with these scaled up.

    Half precision rounds every partial sum, so its error follows the size of the values, not of
    each element: for fp16/bf16 the absolute tolerance is also multiplied by the output's largest
    magnitude (when above 1).
    """

    rtol: float = 1e-4
    atol: float = 1e-5

    def for_dtype(self, dtype: np.dtype, scale: float = 1.0) -> tuple[float, float]:
        if dtype == np.float16:
            return self.rtol * 100, self.atol * 100 * max(1.0, scale)
        if dtype.name == "bfloat16":
            return self.rtol * 500, self.atol * 1000 * max(1.0, scale)
        return self.rtol, self.atol


@dataclass(frozen=True)
class VerifyOptions:
    tolerance: Tolerance = field(default_factory=Tolerance)
    sizes: tuple[tuple[int, ...], ...] | None = None  # larger spatial sizes; default: two derived ones
    seed: int = 0


@dataclass(frozen=True)
class Comparison:
    check: str  # "same size" | "larger size" | "dense mean"
    output: str
    input_shape: tuple[int, ...]
    shape: tuple[int, ...]
    max_abs: float
    max_rel: float
    passed: bool
    note: str = ""


@dataclass
class VerificationReport:
    comparisons: list[Comparison] = field(default_factory=list)
    checker: str = "not run"
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.comparisons) and all(c.passed for c in self.comparisons) and self.checker == "passed"

    @property
    def failures(self) -> list[Comparison]:
        return [c for c in self.comparisons if not c.passed]


def compare(
    actual: np.ndarray, expected: np.ndarray, tol: Tolerance, *, check: str, output: str, input_shape: tuple
) -> Comparison:
    """Elementwise `|a - b| <= atol + rtol * |b|`; empty, mismatched or non-finite arrays fail."""

    def result(max_abs: float, max_rel: float, passed: bool, note: str = "") -> Comparison:
        return Comparison(check, output, tuple(input_shape), tuple(expected.shape), max_abs, max_rel, passed, note)

    if expected.size == 0 or actual.size == 0:
        return result(math.inf, math.inf, False, "empty output")
    if actual.shape != expected.shape:
        if actual.size == expected.size and _only_unit_dims_differ(actual.shape, expected.shape):
            actual = actual.reshape(expected.shape)
        else:
            return result(math.inf, math.inf, False, f"shape {list(actual.shape)} != {list(expected.shape)}")
    if not np.issubdtype(expected.dtype, np.floating):
        diff = np.abs(actual.astype(np.int64) - expected.astype(np.int64))
        worst = float(diff.max())
        return result(worst, worst, worst == 0, "" if worst == 0 else "indices differ")
    a = actual.astype(np.float64)
    b = expected.astype(np.float64)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return result(math.nan, math.nan, False, "non-finite values")
    rtol, atol = tol.for_dtype(expected.dtype, float(np.abs(b).max()))
    diff = np.abs(a - b)
    max_abs = float(diff.max())
    max_rel = float((diff / np.maximum(np.abs(b), np.finfo(np.float64).tiny)).max())
    return result(max_abs, max_rel, bool((diff <= atol + rtol * np.abs(b)).all()))


def _only_unit_dims_differ(a: tuple, b: tuple) -> bool:
    return [d for d in a if d != 1] == [d for d in b if d != 1]


def session(model: onnx.ModelProto | str) -> ort.InferenceSession:
    ort.set_default_logger_severity(4)  # failures are reported by us, in one line
    opts = ort.SessionOptions()
    # Fatal only: probing whether the original backbone or head runs at a larger size or batch
    # fails by design for size-baked models; at level 3 onnxruntime printed each such expected
    # failure to stderr, breaking the one-line-error contract of the CLI.
    opts.log_severity_level = 4
    try:
        with _session_source(model, opts) as source:
            return ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ModelLoadError(f"onnxruntime cannot load the model: {one_line(exc)}") from exc


# A ModelProto above this cannot be serialized (protobuf's 2 GB limit).
_SERIALIZE_LIMIT = 2**31 - (1 << 26)
_LARGE_TENSOR = 1 << 20
_SPILLED = "onnx_fc2conv.spilled_weights"  # metadata key of a cut whose weights were spilled to a folder
_ALIGN = 1 << 16  # external data offsets on a page-aligned boundary: onnxruntime can map them


@contextlib.contextmanager
def _session_source(model: onnx.ModelProto | str, opts: ort.SessionOptions) -> Iterator[str | bytes]:
    """What InferenceSession is given: a path, the serialized model or, over 2 GB, a spilled copy.

    A model over 2 GB is written to a temporary folder: its large initializers go, one at a
    time, to a data file that onnxruntime maps instead of copying (prepacking, which would copy
    each packed weight once more, is switched off, and so is the layout optimizer), the rest to a
    small model file. The caller's
    model is not modified; the folder is removed once the session is built (the mapping stays
    valid). Handing the weights over as OrtValues (`add_external_initializers`) was measured to
    cost three copies of each weight per session; this costs none that stays resident.
    """
    if isinstance(model, str):
        yield model
        return
    spilled = next((p.value for p in model.metadata_props if p.key == _SPILLED), None)
    if spilled is None and proto_size(model) < _SERIALIZE_LIMIT:
        yield model.SerializeToString()
        return
    opts.add_session_config_entry("session.disable_prepacking", "1")
    # The layout optimizer (ORT_ENABLE_ALL) reorders a Conv kernel into an embedded NCHWc copy,
    # which onnxruntime itself refuses above 2 GB ("exceeds the 2147483648 byte limit").
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    if spilled is not None:  # a cut of a large model (see _cut): its weights are already on disk
        opts.add_session_config_entry("session.model_external_initializers_file_folder_path", spilled)
        try:
            yield model.SerializeToString()
        finally:
            shutil.rmtree(spilled, ignore_errors=True)
        return
    folder = tempfile.mkdtemp(prefix="onnx_fc2conv_session_")
    try:
        stub = _spill_weights(model, os.path.join(folder, "weights.bin"))
        path = os.path.join(folder, "model.onnx")
        with open(path, "wb") as f:
            f.write(stub.SerializeToString())
        yield path
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _spill_weights(model: onnx.ModelProto, data_path: str) -> onnx.ModelProto:
    """A copy of `model` whose large initializers point into `data_path` (written here)."""
    stub = onnx.ModelProto()
    for fd, value in model.ListFields():
        if fd.name != "graph":
            _copy_field(stub, fd.name, value)
    for fd, value in model.graph.ListFields():
        if fd.name != "initializer":
            _copy_field(stub.graph, fd.name, value)
    with open(data_path, "wb") as f:
        for t in model.graph.initializer:
            if t.data_location != onnx.TensorProto.DEFAULT or not t.HasField("raw_data"):
                stub.graph.initializer.append(t)
                continue
            data = t.raw_data  # one tensor's bytes at a time
            if len(data) < _LARGE_TENSOR:
                stub.graph.initializer.append(t)
                continue
            offset = f.seek(0, os.SEEK_END)
            offset += -offset % _ALIGN
            f.seek(offset)
            f.write(data)
            ext = stub.graph.initializer.add()
            ext.name, ext.data_type = t.name, t.data_type
            ext.dims.extend(t.dims)
            ext.data_location = onnx.TensorProto.EXTERNAL
            for key, value in (("location", os.path.basename(data_path)), ("offset", offset), ("length", len(data))):
                entry = ext.external_data.add()
                entry.key, entry.value = key, str(value)
            del data
    return stub


def _copy_field(target: object, name: str, value: object) -> None:
    field = getattr(target, name)
    if hasattr(field, "extend") and not isinstance(field, (str, bytes)):
        field.extend(value)  # type: ignore[arg-type]
    elif hasattr(field, "CopyFrom"):
        field.CopyFrom(value)
    else:
        setattr(target, name, value)


def _run(sess: ort.InferenceSession, feeds: dict[str, np.ndarray], what: str) -> dict[str, np.ndarray]:
    try:
        outs = sess.run(None, feeds)
    except Exception as exc:
        raise RuntimeError(f"{what} failed to run: {one_line(exc)}") from exc
    return {o.name: v for o, v in zip(sess.get_outputs(), outs, strict=True)}


def _random(shape: tuple[int, ...], elem_type: int, rng: np.random.Generator) -> np.ndarray:
    dtype = _NP_FLOAT.get(elem_type)
    if dtype is None:
        return np.zeros(shape, dtype=onnx.helper.tensor_dtype_to_np_dtype(elem_type))
    return rng.standard_normal(shape).astype(dtype)


class GraphIndex:
    """Shapes and types of a model's inputs, outputs and value_info, by name."""

    def __init__(self, model: onnx.ModelProto) -> None:
        g = model.graph
        inits = {t.name for t in g.initializer}
        self.model = model
        self.graph_inputs = [i.name for i in g.input if i.name not in inits]
        self.shapes: dict[str, tuple] = {}
        self.elem_types: dict[str, int] = {}
        for vi in [*g.input, *g.value_info, *g.output]:
            dims = value_info_dims(vi)
            if dims is not None:
                self.shapes[vi.name] = dims
            if vi.type.HasField("tensor_type"):
                self.elem_types[vi.name] = vi.type.tensor_type.elem_type
        for t in g.initializer:
            self.shapes[t.name] = tuple(int(d) for d in t.dims)
            self.elem_types[t.name] = t.data_type

    def shape(self, name: str) -> tuple | None:
        return self.shapes.get(name)

    def elem_type(self, name: str) -> int | None:
        return self.elem_types.get(name)


@dataclass(frozen=True)
class _Input:
    name: str
    elem_type: int
    shape: tuple  # original dims
    spatial_axes: tuple[int, ...]


def _inputs(original: onnx.ModelProto, relaxed: dict[str, tuple]) -> list[_Input]:
    """The original's inputs; spatial axes are those the conversion made symbolic (`relaxed`:
    the converted model's shapes)."""
    ix = GraphIndex(original)
    out = []
    for vi in original.graph.input:
        if vi.name not in ix.graph_inputs:
            continue
        shape = ix.shapes.get(vi.name, ())
        new = relaxed.get(vi.name, shape)
        if len(new) == len(shape):
            axes = tuple(a for a in range(1, len(new)) if not isinstance(new[a], int) and isinstance(shape[a], int))
        else:
            axes = ()
        if not axes and len(shape) >= 3:
            axes = tuple(input_spatial_axes(import_graph(original).tensors()[vi.name]))
        out.append(_Input(vi.name, vi.type.tensor_type.elem_type, shape, axes))
    return out


# The size an input that accepts any size is compared at (per spatial rank): a usual classifier size.
_BASE_SIZE = {1: 224, 2: 224, 3: 32}


def _with_base_size(inp: _Input, report: VerificationReport) -> _Input:
    """An input whose spatial dims are already symbolic is checked at a usual classifier size."""
    free = [a for a in inp.spatial_axes if not isinstance(inp.shape[a], int)]
    if not free:
        return inp
    base = _BASE_SIZE.get(len(inp.spatial_axes), 32)
    shape = tuple(base if a in free else d for a, d in enumerate(inp.shape))
    report.notes.append(
        f"input '{inp.name}' accepts any size {list(inp.shape)}: the original size is taken as {list(shape[1:])}"
    )
    return _Input(inp.name, inp.elem_type, shape, inp.spatial_axes)


def _concrete(shape: tuple, batch: int) -> tuple[int, ...] | None:
    # A fixed batch dim is kept: a model exported for batch 2 (a Reshape baking [2, K]) cannot run at 1.
    dims = [shape[0] if isinstance(shape[0], int) else batch, *shape[1:]] if shape else []
    if not all(isinstance(d, int) and d > 0 for d in dims):
        return None
    return tuple(dims)


def default_sizes(spatial: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    """Two larger, non-square sizes: grow each axis by a different factor."""
    if all(s == 1 for s in spatial):  # an MLP input [N, K] relaxed to [N, K, *S]: any sizes, one per axis
        return ((3, 5, 4)[: len(spatial)] or (3, 5), (6, 4, 3)[: len(spatial)] or (6, 4))
    first = tuple(int(round(s * f)) + i for i, (s, f) in enumerate(zip(spatial, (1.5, 1.25, 1.25), strict=False)))
    second = tuple(int(round(s * f)) + 1 for s, f in zip(spatial, (1.25, 1.75, 1.5), strict=False))
    return first, second


def verify(
    original: onnx.ModelProto,
    converted: onnx.ModelProto,
    heads: list[Head],
    options: VerifyOptions | None = None,
) -> VerificationReport:
    """Check `converted` against `original` (see module docstring). Never raises on a mismatch."""
    options = options or VerifyOptions()
    report = VerificationReport()
    rng = np.random.default_rng(options.seed)
    orig_sess = session(original)
    conv_sess = session(converted)
    conv_input_shapes = GraphIndex(converted).shapes
    inputs = [_with_base_size(i, report) for i in _inputs(original, conv_input_shapes)]
    dense_outputs = {o for h in heads if h.dense for o in h.outputs}
    linear_dense = {o for h in heads if h.dense and h.linear for o in h.outputs}
    mlp_inputs = {h.feature for h in heads if h.reads_input}

    # 1. same size
    batches = [1] + ([2] if all(not isinstance(i.shape[0], int) for i in inputs if i.shape) else [])
    for batch in batches:
        feeds = {}
        for inp in inputs:
            shape = _concrete(inp.shape, batch)
            if shape is None:
                report.notes.append(f"input '{inp.name}' has unknown dims {list(inp.shape)}; same-size check skipped")
                feeds = {}
                break
            feeds[inp.name] = _random(shape, inp.elem_type, rng)
        if not feeds:
            continue
        log.info("verify: same size, batch %d", batch)
        expected = _run(orig_sess, feeds, "the original model")
        conv_feeds = {
            k: (v.reshape(*v.shape, *([1] * (len(conv_input_shapes[k]) - v.ndim))) if k in mlp_inputs else v)
            for k, v in feeds.items()
        }
        actual = _run(conv_sess, conv_feeds, "the converted model")
        shape = next(iter(feeds.values())).shape
        for name, exp in expected.items():
            if name in dense_outputs:
                if name in linear_dense:
                    got = actual[name]
                    mean = got.mean(axis=tuple(range(exp.ndim, got.ndim)), dtype=np.float64).astype(exp.dtype)
                    report.comparisons.append(
                        compare(mean, exp, options.tolerance, check="dense mean", output=name, input_shape=shape)
                    )
                continue
            report.comparisons.append(
                compare(actual[name], exp, options.tolerance, check="same size", output=name, input_shape=shape)
            )
    if dense_outputs - linear_dense:
        report.notes.append(
            "dense mode with a nonlinear head: the map is the head at every location and is, by design, "
            "not equal to the original's pooled output"
        )

    # 2. larger sizes against the independent reference
    del orig_sess  # its weights are not needed any more: the cut sessions below hold their own
    if heads:
        _verify_larger(original, converted, conv_sess, heads, inputs, options, rng, report)

    # 4. checker
    try:
        check_graph(converted)
        report.checker = "passed"
    except Exception as exc:  # ValidationError, or shape inference's own errors
        report.checker = f"failed: {one_line(exc)}"
    if converted.ir_version != original.ir_version:
        report.notes.append(f"IR version {original.ir_version} -> {converted.ir_version}")
    return report


def _verify_larger(
    original: onnx.ModelProto,
    converted: onnx.ModelProto,
    conv_sess: ort.InferenceSession,
    heads: list[Head],
    inputs: list[_Input],
    options: VerifyOptions,
    rng: np.random.Generator,
    report: VerificationReport,
) -> None:
    image = [i for i in inputs if i.spatial_axes or any(h.kind == "mlp" and h.feature == i.name for h in heads)]
    if len(image) != 1 or len(inputs) != 1:
        report.notes.append("larger-size check needs exactly one image input; skipped")
        return
    inp = image[0]
    mlp = any(h.kind == "mlp" for h in heads)
    batch = int(inp.shape[0]) if isinstance(inp.shape[0], int) else 2  # a fixed batch stays fixed
    # An MLP's spatial rank is the option it was converted with (mlp_spatial_rank), not always 2.
    mlp_rank = next((h.spatial_rank for h in heads if h.kind == "mlp"), 2)
    spatial = tuple(int(inp.shape[a]) for a in inp.spatial_axes) if not mlp else (1,) * mlp_rank
    sizes = options.sizes or default_sizes(spatial)
    exported = {h.feature: h.feature_shape for h in heads}  # each feature map's (C, *S) at the exported size
    ix = GraphIndex(inferred_skeleton(original))
    backbone = None if mlp else _Backbone(original, converted, ix, inp.name, exported, report)
    head_sessions = [session(_cut(original, ix, inputs=[h.ref_input], outputs=list(h.outputs))) for h in heads]
    for size in sizes:
        if mlp:
            shape = [batch, int(inp.shape[1]), *size]
        else:
            shape = [batch if a == 0 else int(inp.shape[a]) for a in range(len(inp.shape))]
            if len(size) != len(inp.spatial_axes):
                report.notes.append(
                    f"size {list(size)} does not match the input's {len(inp.spatial_axes)} spatial axes"
                )
                continue
            for axis, s in zip(inp.spatial_axes, size, strict=True):
                shape[axis] = s
        x = _random(tuple(shape), inp.elem_type, rng)
        log.info("verify: larger size %s", "x".join(map(str, size)))
        try:
            actual = _run(conv_sess, {inp.name: x}, f"the converted model at {list(shape)}")
            features = {inp.name: x} if backbone is None else backbone.maps(x)
        except RuntimeError as exc:
            report.comparisons.append(
                Comparison("larger size", inp.name, tuple(shape), (), math.inf, math.inf, False, str(exc))
            )
            continue
        for head, head_sess in zip(heads, head_sessions, strict=True):
            try:
                expected = _reference(head, head_sess, features[head.feature])
            except RuntimeError as exc:
                report.comparisons.append(
                    Comparison("larger size", head.outputs[0], tuple(shape), (), math.inf, math.inf, False, str(exc))
                )
                continue
            for name in head.outputs:
                report.comparisons.append(
                    compare(
                        actual[name],
                        expected[name],
                        options.tolerance,
                        check="larger size",
                        output=name,
                        input_shape=tuple(shape),
                    )
                )


class _Backbone:
    """The heads' feature maps at a larger size, from the original backbone.

    When the original backbone cannot run at that size (it baked the size into a constant that
    the conversion made size-agnostic), the converted backbone is used and the report says so.
    The same holds when it runs but pins the map to its exported size (a Resize to fixed
    `sizes`, which the conversion turned into `scales`): the window grid of a pinned map is
    1 x 1 and could never match the converted model's larger map. The fallback session is built
    once, on first need.
    """

    def __init__(
        self,
        original: onnx.ModelProto,
        converted: onnx.ModelProto,
        ix: GraphIndex,
        input_name: str,
        exported: dict[str, tuple[int, ...]],
        report: VerificationReport,
    ) -> None:
        self.sources = list(exported)
        self.exported = exported
        self.input_name = input_name
        self.converted = converted
        self.report = report
        self.original = session(_cut(original, ix, inputs=[input_name], outputs=self.sources, size_free=True))
        self.fallback: ort.InferenceSession | None = None

    def maps(self, x: np.ndarray) -> dict[str, np.ndarray]:
        if self.fallback is None:
            try:
                maps = dict(zip(self.sources, self.original.run(self.sources, {self.input_name: x}), strict=True))
                pinned = [
                    s
                    for s in self.sources
                    if any(d > 1 for d in self.exported[s][1:]) and maps[s].shape[2:] == self.exported[s][1:]
                ]
                if not pinned:
                    return maps
                why = f"pins '{pinned[0]}' to its exported size {list(self.exported[pinned[0]][1:])} at larger inputs"
            except Exception as exc:
                why = f"cannot run at larger sizes ({one_line(exc)[:120]})"
            self.report.notes.append(
                f"the original backbone {why}; its size-agnostic rewrite was used as the reference backbone"
            )
            ix = GraphIndex(inferred_skeleton(self.converted))
            cut = _cut(self.converted, ix, inputs=[self.input_name], outputs=self.sources, size_free=True)
            self.fallback = session(cut)
        maps = _run(self.fallback, {self.input_name: x}, "the size-agnostic backbone")
        return dict(zip(self.sources, maps.values(), strict=True))


def _reference(head: Head, head_sess: ort.InferenceSession, feature: np.ndarray) -> dict[str, np.ndarray]:
    """The original head on every window of `feature`, assembled as `[N, *out, *map]`."""
    window = head.window
    spatial_rank = head.spatial_rank
    if feature.ndim == 2:  # a keepdims=0 pool: one window, shaped as the head expects
        feature = feature.reshape(*feature.shape, *([1] * spatial_rank))
    n = feature.shape[0]
    grid = tuple(f - k + 1 for f, k in zip(feature.shape[2:], window, strict=True))
    if any(g < 1 for g in grid):
        raise RuntimeError(f"feature map {list(feature.shape)} is smaller than the head's window {list(window)}")
    ref_input = head_sess.get_inputs()[0]
    ref_shape = [d if isinstance(d, int) else -1 for d in ref_input.shape]
    crops = []
    for index in np.ndindex(*grid):
        crop = feature[(slice(None), slice(None), *(slice(i, i + k) for i, k in zip(index, window, strict=True)))]
        crops.append(crop.reshape([n, *ref_shape[1:]]))
    names = [o.name for o in head_sess.get_outputs()]
    try:
        stacked = head_sess.run(names, {ref_input.name: np.concatenate(crops, axis=0)})
        per_window = [[out[i * n : (i + 1) * n] for out in stacked] for i in range(len(crops))]
    except Exception:  # the head bakes its batch size: run one window at a time
        per_window = []
        for crop in crops:
            try:
                per_window.append(head_sess.run(names, {ref_input.name: crop}))
            except Exception as exc:
                raise RuntimeError(f"the original head failed to run on a window: {one_line(exc)}") from exc
    result = {}
    for j, name in enumerate(names):
        stacked = np.stack([w[j] for w in per_window], axis=-1)
        result[name] = stacked.reshape(*stacked.shape[:-1], *grid)
    return result


def _cut(
    model: onnx.ModelProto, ix: GraphIndex, *, inputs: list[str], outputs: list[str], size_free: bool = False
) -> onnx.ModelProto:
    """The part of `model` between `inputs` and `outputs` (original nodes and weights).

    The new inputs get a free batch dim; with `size_free` every dim is free (a backbone fed at
    a larger size than it was exported at).
    """
    if proto_size(model) >= _SERIALIZE_LIMIT:  # protobuf cannot copy a tensor over 2 GB: cut a stub
        folder = tempfile.mkdtemp(prefix="onnx_fc2conv_cut_")
        try:
            stub = _spill_weights(model, os.path.join(folder, "weights.bin"))
            cut = _cut_graph(stub, ix, inputs=inputs, outputs=outputs, size_free=size_free)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        entry = cut.metadata_props.add()
        entry.key, entry.value = _SPILLED, folder  # session() maps the weights from here, then removes it
        return cut
    with _tensor_names_kept(model):
        return _cut_graph(model, ix, inputs=inputs, outputs=outputs, size_free=size_free)


@contextlib.contextmanager
def _tensor_names_kept(model: onnx.ModelProto) -> Iterator[None]:
    """onnx-graphsurgeon's exporter writes `name` into the TensorProtos it was imported from
    (weights are shared, not copied), so cutting `model` would rename the caller's Constant
    attribute tensors: convert() and verify() promise to leave their inputs untouched."""
    saved = []
    for tensor in attribute_tensors(model.graph):
        saved.append((tensor, tensor.name if tensor.HasField("name") else None))
    saved += [(t, t.name) for t in model.graph.initializer]
    try:
        yield
    finally:
        for tensor, name in saved:
            if name is None:
                tensor.ClearField("name")
            else:
                tensor.name = name


def _cut_graph(
    model: onnx.ModelProto, ix: GraphIndex, *, inputs: list[str], outputs: list[str], size_free: bool
) -> onnx.ModelProto:
    graph = gs.import_onnx(model)
    tensors = graph.tensors()
    new_inputs = []
    for name in inputs:
        t = tensors[name]
        shape = ix.shape(name)
        t.dtype = onnx.helper.tensor_dtype_to_np_dtype(ix.elem_type(name))  # type: ignore[arg-type]
        if shape is not None:
            t.shape = [
                d if isinstance(d, int) and i > 0 and not size_free else f"{name}_d{i}" for i, d in enumerate(shape)
            ]
        new_inputs.append(t)
    new_outputs = []
    for name in outputs:
        t = tensors[name]
        if t.dtype is None and ix.elem_type(name) is not None:
            t.dtype = onnx.helper.tensor_dtype_to_np_dtype(ix.elem_type(name))  # type: ignore[arg-type]
        t.shape = None
        new_outputs.append(t)
    graph.inputs = new_inputs
    graph.outputs = new_outputs
    graph.cleanup(remove_unused_graph_inputs=False).toposort()
    cut = gs.export_onnx(graph, do_type_check=False)
    cut.ir_version = model.ir_version
    del cut.opset_import[:]
    cut.opset_import.extend(model.opset_import)
    cut.graph.ClearField("value_info")
    return cut
