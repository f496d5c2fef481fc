"""The phases of verification; each returns what it found (a PhaseResult), verify() composes them.

1. Same size: original and converted on the same seeded inputs at the original size, batch 1
   (or the converted model's fixed batch); every output compared (compare.py) once the converted
   output's `1 x 1` spatial dims are dropped.
2. Batch: where the converted model's batch is symbolic, the same at batch 2, whatever the
   original's batch. Where the original's batch is fixed (or it cannot run two images at once),
   its reference is the original run image by image, concatenated; a failure there is split into
   the rewrite, the images' independence and the runtime's batch noise (batch_noise.py; at the
   larger sizes too). A converted model that keeps a
   fixed batch is verified at that batch only, and a note says so.
3. Dense mean: in dense mode, a linear head's map averaged over its cells equals the original's
   pooled output (at every batch above); a nonlinear one cannot, and a note says so.
4. Larger sizes: at two larger, non-square sizes, batch 2 (or the fixed batch), the converted
   model against an independent reference built from the original (reference.py): its backbone
   and each head on every window; without FC heads, the original graph itself run at that size.
5. Checker: `onnx.checker.check_model(full_check=True)` on the converted graph.

Every run of the converted model also holds its outputs to their declared shapes (declared.py).

Not vacuous: every comparison needs matching, non-empty, finite arrays; a run that compared
nothing fails (VerificationReport.passed).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

import numpy as np
import onnx
import onnxruntime as ort

from ..errors import one_line
from ..heads import Head
from ..shapes import check_graph
from .batch_noise import cell_mean, split_batch_noise
from .compare import Comparison, PhaseResult, Tolerance, VerificationReport, compare, failed
from .declared import Declared
from .inputs import Inputs, ModelInput, default_sizes, model_inputs, random_value
from .model_types import half_precision
from .quantized_units import output_units, unit_notes
from .reference import HeadsReference, WholeModelReference, run_original
from .sessions import RunError, mapped, run, session

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VerifyOptions:
    tolerance: Tolerance = field(default_factory=Tolerance)
    sizes: tuple[tuple[int, ...], ...] | None = None  # larger spatial sizes; default: two derived ones
    seed: int = 0


@dataclass
class Setup:
    """What every phase reads: the two models, their heads, the inputs and the options."""

    original: onnx.ModelProto
    converted: onnx.ModelProto
    heads: list[Head]
    options: VerifyOptions
    plan: Inputs
    rng: np.random.Generator
    declared: Declared

    @classmethod
    def of(
        cls, original: onnx.ModelProto, converted: onnx.ModelProto, heads: list[Head], options: VerifyOptions
    ) -> Setup:
        plan = model_inputs(original, converted, {h.feature for h in heads if h.reads_input})
        rng = np.random.default_rng(options.seed)
        if not options.tolerance.compute:  # float32 outputs of half-precision arithmetic
            options = replace(options, tolerance=replace(options.tolerance, compute=half_precision(original)))
        return cls(original, converted, heads, options, plan, rng, Declared(converted))

    @property
    def units(self) -> dict[str, float]:
        """One unit of each quantized output (quantized_units.py)."""
        return output_units(self.original)

    @property
    def outputs(self) -> list[str]:
        return [o.name for o in self.original.graph.output]

    @property
    def dense_outputs(self) -> set[str]:
        return {o for h in self.heads if h.dense for o in h.outputs}

    @property
    def dense_mean_outputs(self) -> set[str]:
        """Outputs of linear dense heads: their map's mean is the original's output."""
        return {o for h in self.heads if h.dense and h.linear for o in h.outputs}


@dataclass
class BatchRun:
    """Both models on the same inputs at the original size: their outputs, or why not."""

    batch: int
    input_shape: tuple[int, ...]
    feeds: dict[str, np.ndarray] = field(default_factory=dict)  # until the converted model has run
    expected: dict[str, np.ndarray] = field(default_factory=dict)
    actual: dict[str, np.ndarray] = field(default_factory=dict)
    failure: str = ""  # one line: a model could not run
    notes: list[str] = field(default_factory=list)
    skipped: bool = False  # an input has unknown dims: nothing was run
    chunk: int | None = None  # the original ran this many images at a time, not the whole batch


def run_original_at(setup: Setup, orig_sess: ort.InferenceSession, batch: int) -> BatchRun:
    """The original on seeded inputs at the original size; the converted model runs them later."""
    feeds: dict[str, np.ndarray] = {}
    for inp in setup.plan.inputs:
        shape = inp.at_batch(batch)
        if shape is None:
            note = f"input '{inp.name}' has unknown dims {list(inp.shape)}; same-size check skipped"
            return BatchRun(batch, (), notes=[note], skipped=True)
        feeds[inp.name] = random_value(shape, inp.elem_type, setup.rng)
    input_shape = next(iter(feeds.values())).shape if feeds else ()
    result = BatchRun(batch, input_shape, feeds)
    log.info("verify: same size, batch %d", batch)
    try:
        result.expected, note, result.chunk = run_original(orig_sess, feeds, setup.plan.original_batch)
        result.notes += [note] if note else []
    except RunError as exc:
        result.failure = str(exc)
    return result


def run_converted_at(setup: Setup, conv_sess: ort.InferenceSession, batch_run: BatchRun) -> None:
    """The converted model on the inputs the original ran on (unless it could not). The inputs are
    kept where the original ran in chunks: batch_noise.py may run the converted model so too."""
    feeds = batch_run.feeds
    batch_run.feeds = feeds if batch_run.chunk else {}
    if batch_run.skipped or batch_run.failure:
        return
    try:
        batch_run.actual = run(conv_sess, _converted_feeds(setup.plan.inputs, feeds), "the converted model")
    except RunError as exc:
        batch_run.failure = str(exc)


def _converted_feeds(inputs: list[ModelInput], feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """An MLP's input `[N, K]` is fed to the converted model as `[N, K, 1, ..]`."""
    unit = {i.name: i.unit_axes for i in inputs}
    return {k: v.reshape(*v.shape, *([1] * unit[k])) for k, v in feeds.items()}


def same_size(setup: Setup, batch_run: BatchRun) -> PhaseResult:
    """Every output that is not a dense map, converted against original."""
    result = PhaseResult(notes=list(batch_run.notes))
    if batch_run.skipped:
        return result
    claims = {} if batch_run.failure else setup.declared.problems(batch_run.actual, batch_run.input_shape)
    for name in setup.outputs:
        if name in setup.dense_outputs:
            continue
        if batch_run.failure:
            result.comparisons.append(failed("same size", name, batch_run.input_shape, batch_run.failure))
            continue
        claim = claims.get(name, "")
        if claim:
            result.comparisons.append(failed("declared shape", name, batch_run.input_shape, claim))
            continue
        result.comparisons.append(
            compare(
                batch_run.actual[name],
                batch_run.expected[name],
                setup.options.tolerance,
                check="same size",
                output=name,
                input_shape=batch_run.input_shape,
                unit=setup.units.get(name, 0.0),
            )
        )
    return result


def same_size_split(setup: Setup, conv_sess: ort.InferenceSession, batch_run: BatchRun) -> PhaseResult:
    """same_size(); where it fails against an original run in chunks, the failures are split into
    the rewrite, the images' independence and the runtime's batch noise (batch_noise.py)."""
    found = same_size(setup, batch_run)
    found.comparisons, notes = _split_in_chunks(setup, conv_sess, batch_run, found.comparisons)
    found.notes += notes
    return found


def _split_in_chunks(
    setup: Setup, conv_sess: ort.InferenceSession, batch_run: BatchRun, found: list[Comparison], view=None
) -> tuple[list[Comparison], list[str]]:
    if not (batch_run.chunk and batch_run.feeds):  # the original ran the whole batch: nothing to tell apart
        return found, []
    runs = (conv_sess, _converted_feeds(setup.plan.inputs, batch_run.feeds), batch_run.chunk)
    return split_batch_noise(
        found, batch_run.expected, batch_run.actual, runs, setup.options.tolerance, setup.units, view
    )


def larger_batch(setup: Setup, conv_sess: ort.InferenceSession, later_runs: list[BatchRun]) -> PhaseResult:
    """The same-size comparisons at batch 2; a note when the converted model's batch is fixed."""
    fixed = setup.plan.fixed_batch
    if fixed is not None:
        note = f"the converted model keeps a fixed batch of {fixed}: verified at batch {fixed} only"
        return PhaseResult(notes=[note])
    result = PhaseResult()
    for batch_run in later_runs:
        found = same_size_split(setup, conv_sess, batch_run)
        result.comparisons += found.comparisons
        result.notes += found.notes
    return result


def dense_mean(setup: Setup, conv_sess: ort.InferenceSession, runs: list[BatchRun]) -> PhaseResult:
    """Dense mode: a linear head's map, averaged over its cells, against the original's output;
    split as same_size_split() where the original ran in chunks."""
    result = PhaseResult()
    if setup.dense_outputs - setup.dense_mean_outputs:
        result.notes.append(
            "dense mode with a nonlinear head: the map is the head at every location and is, by design, "
            "not equal to the original's pooled output"
        )
    tol = setup.options.tolerance
    for batch_run in runs:
        found: list[Comparison] = []
        for name in [o for o in setup.outputs if o in setup.dense_mean_outputs]:
            if batch_run.skipped:
                continue
            if batch_run.failure:
                found.append(failed("dense mean", name, batch_run.input_shape, batch_run.failure))
                continue
            exp = batch_run.expected[name]
            mean = cell_mean(batch_run.actual[name], exp)
            found.append(compare(mean, exp, tol, check="dense mean", output=name, input_shape=batch_run.input_shape))
        found, notes = _split_in_chunks(setup, conv_sess, batch_run, found, cell_mean)
        result.comparisons += found
        result.notes += notes
    return result


@dataclass
class LargerSizes:
    """The larger-size inputs and their references, computed before the converted model runs."""

    input_name: str = ""
    shapes: list[tuple[int, ...]] = field(default_factory=list)
    images: list[np.ndarray] = field(default_factory=list)
    expected: list[dict[str, np.ndarray | str]] = field(default_factory=list)
    reference: HeadsReference | WholeModelReference | None = None
    notes: list[str] = field(default_factory=list)


def larger_references(setup: Setup, exported: dict[str, tuple]) -> LargerSizes:
    """Inputs at larger sizes and the independent reference's outputs (reference.py) for each.

    `exported`: each output's shape at the original size, batch aside (from the same-size run).
    The reference's sessions are freed before this returns.
    """
    inputs = setup.plan.inputs
    image = [i for i in inputs if i.spatial_axes or i.unit_axes]
    if not image:
        return LargerSizes(notes=["no input accepts other sizes; larger-size check not applicable"])
    if len(image) != 1 or len(inputs) != 1:
        return LargerSizes(notes=["larger-size check needs exactly one image input; skipped"])
    inp = image[0]
    if inp.at_batch(1) is None:
        return LargerSizes(notes=[f"input '{inp.name}' has unknown dims {list(inp.shape)}; larger-size check skipped"])
    spatial = (1,) * inp.unit_axes if inp.unit_axes else tuple(int(inp.shape[a]) for a in inp.spatial_axes)  # type: ignore[arg-type]
    sizes = setup.options.sizes or default_sizes(spatial)
    batch_size = setup.plan.batches[-1]  # 2, or the converted model's fixed batch
    larger = LargerSizes(input_name=inp.name)
    for size in sizes:
        if len(size) != len(spatial):
            larger.notes.append(f"size {list(size)} does not match the input's {len(spatial)} spatial axes")
            continue
        shape = _larger_shape(inp, batch_size, size)
        larger.shapes.append(shape)
        larger.images.append(random_value(shape, inp.elem_type, setup.rng))
    if not larger.shapes:
        return larger
    if setup.heads:
        reference: HeadsReference | WholeModelReference = HeadsReference(
            setup.original, setup.converted, setup.heads, inp.name, setup.plan.original_batch
        )
    else:
        reference = WholeModelReference(setup.original, inp.name, exported, setup.plan.original_batch)
    for shape, x in zip(larger.shapes, larger.images, strict=True):
        log.info("verify: reference at %s", list(shape))
        larger.expected.append(reference.expected(x))
    reference.close()
    larger.reference = reference
    return larger


def larger_sizes(setup: Setup, conv_sess: ort.InferenceSession, larger: LargerSizes) -> PhaseResult:
    """The converted model at the larger sizes against the references computed before."""
    result = PhaseResult(notes=list(larger.notes))
    reference = larger.reference
    if reference is None:
        return result
    tol, units = setup.options.tolerance, setup.units
    for shape, x, expected in zip(larger.shapes, larger.images, larger.expected, strict=True):
        log.info("verify: larger size %s", list(shape))
        try:
            actual = run(conv_sess, {larger.input_name: x}, f"the converted model at {list(shape)}")
        except RunError as exc:
            result.comparisons += [failed("larger size", name, shape, str(exc)) for name in reference.outputs]
            continue
        claims = setup.declared.problems(actual, shape)
        found: list[Comparison] = []
        for name, claim in claims.items():  # outputs without a reference hold to their declaration too
            if claim and name not in expected:
                found.append(failed("declared shape", name, shape, claim))
        for name, exp in expected.items():
            claim = claims.get(name, "")
            if isinstance(exp, str) or claim:
                found.append(failed("declared shape" if claim else "larger size", name, shape, claim or exp))
            elif reference.keep(name, exp, actual[name]):
                unit = units.get(name, 0.0)
                found.append(
                    compare(actual[name], exp, tol, check="larger size", output=name, input_shape=shape, unit=unit)
                )
        chunk = reference.chunk(x)
        if chunk:  # the original ran in chunks: the runtime's batch noise is told apart
            runs = (conv_sess, {larger.input_name: x}, chunk)
            found, notes = split_batch_noise(found, expected, actual, runs, tol, units)
            result.notes += notes
        result.comparisons += found
    result.notes += reference.notes
    return result


def _larger_shape(inp: ModelInput, batch_size: int, size: tuple[int, ...]) -> tuple[int, ...]:
    if inp.unit_axes:  # an MLP: [N, K] -> [N, K, *size]
        return (batch_size, int(inp.shape[1]), *size)  # type: ignore[arg-type]
    shape = [batch_size, *(int(d) for d in inp.shape[1:])]  # type: ignore[arg-type]
    for axis, s in zip(inp.spatial_axes, size, strict=True):
        shape[axis] = s
    return tuple(shape)


def checker(original: onnx.ModelProto, converted: onnx.ModelProto) -> tuple[str, PhaseResult]:
    """The ONNX checker's verdict on the converted graph ("passed" or "failed: why")."""
    notes = []
    if converted.ir_version != original.ir_version:
        notes.append(f"IR version {original.ir_version} -> {converted.ir_version}")
    try:
        check_graph(converted)
    except Exception as exc:  # ValidationError, or shape inference's own errors
        return f"failed: {one_line(exc)}", PhaseResult(notes=notes)
    return "passed", PhaseResult(notes=notes)


def original_runs(setup: Setup, orig_model: onnx.ModelProto) -> list[BatchRun]:
    """The original at every verified batch; its session is freed on return."""
    orig_sess = session(orig_model)
    return [run_original_at(setup, orig_sess, b) for b in setup.plan.batches]


def converted_phases(
    setup: Setup, conv_model: onnx.ModelProto, runs: list[BatchRun], larger: LargerSizes
) -> list[PhaseResult]:
    """The converted model on the same inputs and at the larger sizes, against what was computed."""
    conv_sess = session(conv_model)
    for batch_run in runs:
        run_converted_at(setup, conv_sess, batch_run)
    first = same_size_split(setup, conv_sess, runs[0])
    phases = [first, larger_batch(setup, conv_sess, runs[1:]), dense_mean(setup, conv_sess, runs)]
    runs.clear()  # the outputs are compared; a dense map can be large
    return [*phases, larger_sizes(setup, conv_sess, larger)]


def verify(
    original: onnx.ModelProto,
    converted: onnx.ModelProto,
    heads: list[Head],
    options: VerifyOptions | None = None,
) -> VerificationReport:
    """Check `converted` against `original` (see module docstring). Never raises on a mismatch.

    One large session at a time, each mapping its weights from a file (sessions.map_weights):
    the original's runs, then the reference's at the larger sizes, then the converted model's,
    each session freed as its phase ends.
    """
    options = options or VerifyOptions()
    with mapped(original, "original") as orig_model, mapped(converted, "converted") as conv_model:
        setup = Setup.of(orig_model, conv_model, heads, options)
        runs = original_runs(setup, orig_model)
        exported = {name: tuple(v.shape[1:]) for name, v in runs[0].expected.items()}
        larger = larger_references(setup, exported)
        phases = [
            PhaseResult(notes=[*setup.plan.notes, *unit_notes(setup.units)]),
            *converted_phases(setup, conv_model, runs, larger),
        ]
        del larger
    verdict, checked = checker(original, converted)
    return VerificationReport.of([*phases, checked], verdict)
