"""Denser maps (`--output-stride`): the stride-S/2 map against today's stride-S map and the shifted runs.

Run from the repository root:

    python benchmarks/bench_denser.py           # about two minutes on a 2-core machine
    python benchmarks/bench_denser.py --quick

At 451 x 451, for the AlexNet geometry (FC head) and the ResNet-style model (`--dense`): the
converted model (stride S), the a trous model (stride S/2), and the four runs of the stride-S
model on the image shifted by 0 or S/2 pixels per axis, which give the same cells away from the
border (where padding before L sits elsewhere on a shifted image). Every figure is
a median of interleaved runs; GMAC/s is set against the machine's MatMul ceiling (onnxruntime,
one 2048^3 MatMul, same session settings).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import alexnet, image, interleave, macs, med, resnet_light, session, table

from onnx_fc2conv import ConvertOptions, convert

SIZE = 451


def matmul_ceiling(reps: int) -> float:
    """GMAC/s of one 2048 x 2048 x 2048 float MatMul in onnxruntime."""
    n = 2048
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])],
        "mm",
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [n, n]) for x in ("a", "b")],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    sess = session(model)
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    times = interleave({"mm": lambda: sess.run(None, {"a": a, "b": a})}, reps)
    return n**3 / med(times["mm"]) / 1e9


def total_macs(model: onnx.ModelProto, shape: tuple[int, ...]) -> int:
    return sum(macs(model, shape))


def bench(label: str, build, dense: bool, reps: int, ceiling: float) -> list[list[str]]:
    original = build()
    today = convert(original, ConvertOptions(dense=dense, verify=False))
    stride = next(iter(today.geometry.values())).stride[0]
    denser = convert(original, ConvertOptions(dense=dense, output_stride=stride // 2, verify=False))
    x = image(1, SIZE, seed=1)
    name = today.model.graph.input[0].name
    s_today, s_denser = session(today.model), session(denser.model)
    half = stride // 2
    crops = [x[:, :, dy:, dx:] for dy in (0, half) for dx in (0, half)]
    dense_map = s_denser.run(None, {name: x})[0]
    for i, crop in enumerate(crops):  # the shifted runs give the denser map's cells, away from padded borders
        dy, dx = divmod(i, 2)
        part = s_today.run(None, {name: crop})[0]
        got = dense_map[..., dy::2, dx::2][..., : part.shape[-2], : part.shape[-1]]
        inner = (..., slice(2, -2), slice(2, -2))
        if not np.allclose(got[inner], part[inner], rtol=1e-4, atol=1e-4 * np.abs(part).max()):
            raise SystemExit(f"{label}: shifted run {i} differs from the denser map inside the border")
    times = interleave(
        {
            "today": lambda: s_today.run(None, {name: x}),
            "denser": lambda: s_denser.run(None, {name: x}),
            "shifted": lambda: [s_today.run(None, {name: c}) for c in crops],
        },
        reps,
    )
    m_today = total_macs(today.model, x.shape)
    m_denser = total_macs(denser.model, x.shape)
    m_shifted = sum(total_macs(today.model, c.shape) for c in crops)
    t_today, t_denser, t_shifted = (med(times[k]) for k in ("today", "denser", "shifted"))
    shape_today = list(s_today.run(None, {name: x})[0].shape[2:])
    rows = []
    for what, t, m, shape in (
        (f"stride {stride} (today)", t_today, m_today, shape_today),
        (f"stride {stride // 2} (a trous)", t_denser, m_denser, list(dense_map.shape[2:])),
        ("4 shifted stride-S runs", t_shifted, m_shifted, "4 maps"),
    ):
        rate = m / t / 1e9
        rows.append(
            [
                label,
                what,
                str(shape),
                f"{1e3 * t:.1f}",
                f"{t / t_denser:.2f}",
                f"{m / 1e9:.2f}",
                f"{rate:.0f}",
                f"{rate / ceiling:.0%}",
            ]
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    reps = 5 if args.quick else 15
    print(f"onnxruntime {ort.__version__}, numpy {np.__version__}; input 1 x 3 x {SIZE} x {SIZE}\n")
    ceiling = matmul_ceiling(reps)
    rows = bench("AlexNet geometry", alexnet, False, reps, ceiling)
    rows += bench("ResNet-style --dense", resnet_light, True, reps, ceiling)
    header = ["model", "run", "map", "median ms", "time / a trous", "GMAC", "GMAC/s", "of MatMul ceiling"]
    print(table(header, rows))
    print(f"\nMatMul ceiling (2048^3, onnxruntime): {ceiling:.0f} GMAC/s; {math.prod((1, 3, SIZE, SIZE))} inputs")


if __name__ == "__main__":
    main()
