"""The runtime's batch noise, told apart from the rewrite.

Where the original's batch is fixed (or it cannot run a batch at once), its reference for a batch
comes from running it in chunks, image by image, while the converted model runs the whole batch.
onnxruntime sums a batch of two in another order than one image (other blockings of the same
convolutions), and a deep network carries that rounding to its outputs: timm's Inception v4 with
random weights differs from itself by 1.5e-4 of its outputs' magnitude between batch 1 and batch 2,
1.1x the bound, with an exact rewrite (0 error image by image). That is the runtime, not the rewrite.

So a comparison that fails against a reference run in chunks is split into three rows, each of
which must pass:

- the rewrite (the row keeps its check, `same size` or `larger size`): the converted model run in
  the same chunks as the reference, against it, at the usual bound (the runtime's same path);
- `independence`: the converted model on the batch with every image replaced by the first, against
  the whole batch, on the first image, at the usual bound. The two runs have the same shapes, so
  the runtime sums them alike (bit for bit, as measured); a model that mixes its images, however
  little, changes the first image's outputs when the others change;
- `batch`: the converted model on the whole batch against itself run in chunks, at
  BATCH_NOISE_FACTOR times the bound: what the batch size alone changes (the runtime's noise; a
  model whose output follows the batch size by more than a percent of its magnitude fails here).
  The noise is the network's, not the rewrite's: timm's EfficientNet-B2 with random weights, as
  a dense map at 96 x 81, differs from itself by 3e-3 of its magnitude between batch 1 and 2
  (27x the usual bound), with 0 difference in the other two rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np
import onnxruntime as ort

from .compare import Comparison, Tolerance, compare
from .sessions import RunError, run, run_in_chunks

BATCH_NOISE_FACTOR = 100.0


def cell_mean(output: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """A dense map averaged over its cells (the axes beyond the reference's): what a linear dense
    head's map is compared by."""
    axes = tuple(range(reference.ndim, output.ndim))
    return output.mean(axis=axes, dtype=np.float64).astype(reference.dtype)


def needs_split(c: Comparison) -> bool:
    """A comparison with the original that failed on its numbers (not on a run, a shape or a NaN)."""
    checks = ("same size", "larger size", "dense mean")
    return c.check in checks and not c.passed and math.isfinite(c.ratio) and not c.note


def split_batch_noise(
    found: list[Comparison],
    expected: Mapping[str, np.ndarray | str],
    actual: dict[str, np.ndarray],
    runs: tuple[ort.InferenceSession, dict[str, np.ndarray], int],
    tol: Tolerance,
    units: dict[str, float],
    view: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
) -> tuple[list[Comparison], list[str]]:
    """`found` with each numeric failure replaced by its three rows (see module docstring), and a
    note; unchanged, without notes, when nothing is split or the converted model cannot run so.
    `runs`: the converted model's session, the feeds of the whole batch and the reference's chunk;
    `view`: what of a converted output is compared with the reference (a dense map's mean)."""
    split = [c for c in found if needs_split(c) and isinstance(expected.get(c.output), np.ndarray)]
    if not split:
        return found, []
    sess, feeds, chunk = runs
    n = split[0].input_shape[0]
    alike = {k: np.repeat(v[:1], n, axis=0) if v.ndim and v.shape[0] == n else v for k, v in feeds.items()}
    try:
        in_chunks = run_in_chunks(sess, feeds, "the converted model", chunk)
        first_alone = run(sess, alike, "the converted model")
    except RunError:
        return found, []
    noise = Tolerance(tol.rtol * BATCH_NOISE_FACTOR, tol.atol * BATCH_NOISE_FACTOR)
    comparisons: list[Comparison] = []
    for c in found:
        if c not in split:
            comparisons.append(c)
            continue
        reference = expected[c.output]
        assert isinstance(reference, np.ndarray)
        seen = (a[c.output] for a in (actual, in_chunks, first_alone))
        whole, mine, alone = (view(a, reference) for a in seen) if view else seen
        if mine.size == whole.size == reference.size:  # the rows show the original's shape
            mine, whole, alone = (a.reshape(reference.shape) for a in (mine, whole, alone))
        where = {"output": c.output, "input_shape": c.input_shape, "unit": units.get(c.output, 0.0)}
        comparisons += [
            compare(mine, reference, tol, check=c.check, **where),  # type: ignore[arg-type]
            compare(alone[:1], whole[:1], tol, check="independence", **where),  # type: ignore[arg-type]
            compare(whole, mine, noise, check="batch", **where),  # type: ignore[arg-type]
        ]
    how = "image by image" if chunk == 1 else f"{chunk} images at a time"
    note = (
        f"at batch {n} the converted model is compared with the original on the same runs ({how}), with itself on "
        f"the batch made of its first image (independence), and with itself on the whole batch within "
        f"{BATCH_NOISE_FACTOR:g}x the bound: onnxruntime sums a batch in another order than one image"
    )
    return comparisons, [note]
