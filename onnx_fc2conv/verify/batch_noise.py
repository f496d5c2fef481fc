"""The runtime's batch noise, told apart from the rewrite.

Where the original's batch is fixed (or it cannot run a batch at once), its reference for a batch
comes from running it in chunks, image by image, while the converted model runs the whole batch.
onnxruntime sums a batch of two in another order than one image (other blockings of the same
convolutions), and a deep network carries that rounding to its outputs: timm's Inception v4 with
random weights differs from itself by 1.5e-4 of its outputs' magnitude between batch 1 and batch 2,
1.1x the bound, with an exact rewrite (0 error image by image). That is the runtime, not the rewrite.

So a comparison that fails against a reference run in chunks is split in two rows:

- `same size`: the converted model run in the same chunks against the reference, at the usual
  bound (the rewrite, on the runtime's same path);
- `batch`: the converted model on the whole batch against itself run in chunks, at
  BATCH_NOISE_FACTOR times the bound. A model that mixes its images (a baked batch, a reshape
  across it) errs by the order of the outputs themselves, a thousand times that bound.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np

from .compare import Comparison, Tolerance, compare
from .sessions import RunError

BATCH_NOISE_FACTOR = 10.0


def needs_split(c: Comparison) -> bool:
    """A comparison with the original that failed on its numbers (not on a run, a shape or a NaN)."""
    return c.check in ("same size", "larger size") and not c.passed and math.isfinite(c.ratio) and not c.note


def split_batch_noise(
    found: list[Comparison],
    expected: Mapping[str, np.ndarray | str],
    actual: dict[str, np.ndarray],
    run_in_chunks: Callable[[], dict[str, np.ndarray]],
    chunk: int,
    tol: Tolerance,
    units: dict[str, float],
) -> tuple[list[Comparison], list[str]]:
    """`found` with each numeric failure replaced by two rows, the rewrite's and the batch's (see
    module docstring), and a note; unchanged, without notes, when nothing is split or the
    converted model cannot run in chunks (`run_in_chunks`)."""
    if not any(needs_split(c) for c in found):
        return found, []
    try:
        in_chunks = run_in_chunks()
    except RunError:
        return found, []
    noise = Tolerance(tol.rtol * BATCH_NOISE_FACTOR, tol.atol * BATCH_NOISE_FACTOR)
    comparisons: list[Comparison] = []
    for c in found:
        reference = expected.get(c.output)
        if not needs_split(c) or not isinstance(reference, np.ndarray):
            comparisons.append(c)
            continue
        unit, mine, whole = units.get(c.output, 0.0), in_chunks[c.output], actual[c.output]
        if mine.size == whole.size == reference.size:  # the rows show the original's shape
            mine, whole = mine.reshape(reference.shape), whole.reshape(reference.shape)
        where = {"output": c.output, "input_shape": c.input_shape, "unit": unit}
        comparisons += [
            compare(mine, reference, tol, check=c.check, **where),  # type: ignore[arg-type]
            compare(whole, mine, noise, check="batch", **where),  # type: ignore[arg-type]
        ]
    how = "image by image" if chunk == 1 else f"{chunk} images at a time"
    batch = found[0].input_shape[0]
    note = (
        f"at batch {batch} the converted model is compared with the original on the same runs ({how}), and with "
        f"itself on the whole batch within {BATCH_NOISE_FACTOR:g}x the bound: onnxruntime sums a batch in another "
        "order than one image"
    )
    return comparisons, [note]
