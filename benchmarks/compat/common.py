"""Shared by the exporter scripts (each in its framework's venv): arguments, seeded inputs, the window
reference and the files an export leaves behind. numpy only."""

from __future__ import annotations

import json
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
from catalog import Arch, find

SEED = 0


def parse_args() -> tuple[Arch, str, Path]:
    """`export_X.py FAMILY NAME EXPORTER OUTDIR`."""
    family, name, exporter, outdir = sys.argv[1:5]
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    return find(family, name), exporter, out


def inputs(arch: Arch, channels_last: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded N(0, 1) images: batch 1 for the export, batch 2 at the exported and at the larger size."""
    rng = np.random.default_rng(SEED)

    def image(batch: int, size: tuple[int, int]) -> np.ndarray:
        shape = (batch, *size, 3) if channels_last else (batch, 3, *size)
        return rng.standard_normal(shape).astype(np.float32)

    return image(1, arch.size), image(2, arch.size), image(2, arch.larger)


def window_map(
    features: np.ndarray, window: tuple[int, int], head: Callable[[np.ndarray], np.ndarray], channels_last: bool
) -> np.ndarray:
    """The head on every `window` of the feature map, as `[N, M, h, w]`: cell (i, j) is the head on
    features[..., i:i+kh, j:j+kw] (stride 1), the semantics of an FC rewritten as a convolution."""
    kh, kw = window
    hf, wf = features.shape[1:3] if channels_last else features.shape[2:4]
    cells = []
    for i in range(hf - kh + 1):
        for j in range(wf - kw + 1):
            part = features[:, i : i + kh, j : j + kw] if channels_last else features[:, :, i : i + kh, j : j + kw]
            cells.append(np.asarray(head(np.ascontiguousarray(part))))
    n, m = cells[0].shape
    out = np.stack(cells, axis=-1).reshape(n, m, hf - kh + 1, wf - kw + 1)
    return out.astype(np.float32)


def save_reference(out: Path, arrays: dict[str, np.ndarray]) -> None:
    np.savez(out / "reference.npz", **arrays)


def large_reference(arch: Arch, forward: Callable[[], list[np.ndarray]], windows: Callable[[], np.ndarray]) -> dict:
    """The framework's result at the larger size: its own forward pass (global heads) or the head on
    every window of its backbone's map (flattened heads); a framework that cannot run there says why."""
    try:
        if arch.head == "window":
            return {"y_large_0": windows()}
        return {f"y_large_{k}": y for k, y in enumerate(forward())}
    except Exception as exc:  # the framework itself refuses the size: recorded, not fatal
        return {"large_error": np.array(f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}")}


def run(main: Callable[[Arch, str, Path], dict]) -> None:
    """Call `main`, time it, write export.json; a failure prints one line and exits 1."""
    arch, exporter, out = parse_args()
    start = time.perf_counter()
    try:
        meta = main(arch, exporter, out)
    except Exception as exc:
        traceback.print_exc()
        print(f"EXPORT-ERROR: {type(exc).__name__}: {' '.join(str(exc).split())[:400]}", file=sys.stderr)
        sys.exit(1)
    meta["seconds"] = round(time.perf_counter() - start, 1)
    (out / "export.json").write_text(json.dumps(meta, indent=2))
