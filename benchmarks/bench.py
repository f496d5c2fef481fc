"""Benchmarks for onnx-fc2conv: speed of the converted graph and cost of the rewrite.

Run from the repository root:

    python benchmarks/bench.py            # full run (a few minutes)
    python benchmarks/bench.py --quick    # smoke run (< 1 minute)

Every model is built here with onnx.helper and seeded numpy weights (no downloads); onnxruntime
runs on the CPU. Runs that are compared are interleaved (A, B, A, B, ... with the order rotated
each round) and reported as medians. Sessions that alternate have intra-op spinning turned off:
with it on, the idle session's spinning threads steal the cores from the busy one.

1. Same work, same speed: the converted model against the original at the original size
   (AlexNet, VGG-16 and ResNet-style heads), batch 1 and batch 8.
2. The reason to exist: the AlexNet-geometry model at 451 x 451 (an 8 x 8 map) against one
   original pass at 227, against the original on the 64 crops, and against their MAC ratio.
3. The rewrite itself: convert_file() on a VGG-16-sized model (528 MB of fp32 weights) against
   onnx.load + onnx.save, each in a fresh subprocess (wall time, peak RSS), plus a stage trace.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import itertools
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8
TOTAL_START = time.perf_counter()


# --------------------------------------------------------------------------------------------
# models


class _Builder:
    """A sequential CNN with an FC head, torch-export style (Flatten(axis=1) -> Gemm(transB=1))."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def weight(self, name: str, shape: tuple[int, ...], fan_in: int) -> str:
        value = self.rng.standard_normal(shape, dtype=np.float32)
        value *= np.float32(math.sqrt(2.0 / fan_in))
        self.inits.append(numpy_helper.from_array(value, name))
        return name

    def conv(self, x: str, cin: int, cout: int, k: int, stride: int = 1, pad: int = 0) -> str:
        self.count += 1
        i = self.count
        w = self.weight(f"conv{i}.weight", (cout, cin, k, k), cin * k * k)
        b = self.weight(f"conv{i}.bias", (cout,), cin * k * k)
        self.nodes.append(
            helper.make_node(
                "Conv", [x, w, b], [f"conv{i}"], name=f"Conv_{i}", kernel_shape=[k, k], strides=[stride] * 2,
                pads=[pad] * 4,
            )
        )  # fmt: skip
        self.nodes.append(helper.make_node("Relu", [f"conv{i}"], [f"relu{i}"], name=f"Relu_{i}"))
        return f"relu{i}"

    def maxpool(self, x: str, k: int, stride: int, ceil: int = 0) -> str:
        self.count += 1
        y = f"pool{self.count}"
        self.nodes.append(
            helper.make_node("MaxPool", [x], [y], name=f"MaxPool_{self.count}", kernel_shape=[k, k],
                             strides=[stride] * 2, ceil_mode=ceil)
        )  # fmt: skip
        return y

    def global_pool(self, x: str) -> str:
        self.nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"], name="GlobalAveragePool_0"))
        return "gap"

    def head(self, x: str, widths: list[int]) -> str:
        self.nodes.append(helper.make_node("Flatten", [x], ["flat"], name="Flatten_0", axis=1))
        x = "flat"
        for j, (k, m) in enumerate(itertools.pairwise(widths)):
            w = self.weight(f"fc{j}.weight", (m, k), k)
            b = self.weight(f"fc{j}.bias", (m,), k)
            self.nodes.append(helper.make_node("Gemm", [x, w, b], [f"fc{j}"], name=f"Gemm_{j}", transB=1))
            x = f"fc{j}"
            if j < len(widths) - 2:
                self.nodes.append(helper.make_node("Relu", [x], [f"fc{j}_relu"], name=f"FcRelu_{j}"))
                x = f"fc{j}_relu"
        return x

    def model(self, size: int, output: str, classes: int) -> onnx.ModelProto:
        inp = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, size, size])
        out = helper.make_tensor_value_info(output, TensorProto.FLOAT, ["N", classes])
        graph = helper.make_graph(self.nodes, "bench", [inp], [out], self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
        model.ir_version = IR_VERSION
        return model


def alexnet() -> onnx.ModelProto:
    """Caffe AlexNet geometry (no groups, ceil-mode pools): 227 -> 256 x 6 x 6 -> 9216-4096-4096-1000."""
    b = _Builder(1)
    x = b.conv("image", 3, 96, 11, 4)
    x = b.maxpool(x, 3, 2, ceil=1)
    x = b.conv(x, 96, 256, 5, 1, 2)
    x = b.maxpool(x, 3, 2, ceil=1)
    x = b.conv(x, 256, 384, 3, 1, 1)
    x = b.conv(x, 384, 384, 3, 1, 1)
    x = b.conv(x, 384, 256, 3, 1, 1)
    x = b.maxpool(x, 3, 2, ceil=1)
    return b.model(227, b.head(x, [9216, 4096, 4096, 1000]), 1000)


def vgg16_light() -> onnx.ModelProto:
    """A light backbone with VGG-16's 512 x 7 x 7 map at 224 and the full 25088-4096-4096-1000 head."""
    b = _Builder(2)
    x = b.conv("image", 3, 64, 4, 4)
    x = b.conv(x, 64, 128, 2, 2)
    x = b.conv(x, 128, 256, 2, 2)
    x = b.conv(x, 256, 512, 2, 2)
    return b.model(224, b.head(x, [25088, 4096, 4096, 1000]), 1000)


def vgg16_full() -> onnx.ModelProto:
    """VGG-16: 13 3 x 3 convs, 5 pools, 25088-4096-4096-1000 (138 M parameters, 528 MiB fp32)."""
    b = _Builder(4)
    x, c = "image", 3
    for width, repeat in ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)):
        for _ in range(repeat):
            x, c = b.conv(x, c, width, 3, 1, 1), width
        x = b.maxpool(x, 2, 2)
    return b.model(224, b.head(x, [25088, 4096, 4096, 1000]), 1000)


def resnet_light() -> onnx.ModelProto:
    """ResNet-style head: a light backbone to 2048 x 7 x 7, global average pool, 2048 -> 1000."""
    b = _Builder(3)
    x = b.conv("image", 3, 64, 4, 4)
    x = b.conv(x, 64, 256, 2, 2)
    x = b.conv(x, 256, 512, 2, 2)
    x = b.conv(x, 512, 2048, 2, 2)
    return b.model(224, b.head(b.global_pool(x), [2048, 1000]), 1000)


def converted(model: onnx.ModelProto):
    from onnx_fc2conv import ConvertOptions, convert

    return convert(model, ConvertOptions(verify=False))


def copy_model(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


# --------------------------------------------------------------------------------------------
# prototype (measured here, not part of the package): the head with the batch folded into depth


def fold_batch_into_depth(model: onnx.ModelProto, result) -> onnx.ModelProto:
    """The head's Conv chain as 3-D convs over `[1, C, N, H, W]` (batch as depth, kernel depth 1).

    Exact: a 3-D conv whose kernel has depth 1, no depth padding and depth stride 1 applies the
    same 2-D conv to every depth slice, i.e. to every image. The weights only get a unit dim
    (`[M, C, kh, kw] -> [M, C, 1, kh, kw]`, in place, zero-copy). onnxruntime then runs each layer
    as ONE GEMM over all N * h * w windows instead of N per-image GEMVs that each stream the weights.
    Assumes only elementwise unary ops between the head's Convs (true for the models built here).
    """
    g = model.graph
    by_name = {n.name: n for n in g.node}
    inits = {t.name: t for t in g.initializer}
    g.initializer.append(helper.make_tensor("fold_axis0", TensorProto.INT64, [1], [0]))
    for rewrite in result.rewrites:
        convs = [by_name[layer.nodes[0]] for layer in rewrite.layers]
        first, last = convs[0], convs[-1]
        src, out = first.input[0], last.output[0]
        for conv in convs:
            w = inits[conv.input[1]]
            dims = list(w.dims)
            del w.dims[:]
            w.dims.extend([dims[0], dims[1], 1, *dims[2:]])
            del conv.attribute[:]
            conv.attribute.extend(
                [helper.make_attribute("kernel_shape", [1, *dims[2:]]), helper.make_attribute("strides", [1, 1, 1]),
                 helper.make_attribute("pads", [0] * 6)]
            )  # fmt: skip
        first.input[0] = f"{src}_fold5d"
        last.output[0] = f"{out}_fold5d"
        before = [
            helper.make_node("Transpose", [src], [f"{src}_cnhw"], perm=[1, 0, 2, 3], name=f"{src}_fold_t"),
            helper.make_node("Unsqueeze", [f"{src}_cnhw", "fold_axis0"], [f"{src}_fold5d"], name=f"{src}_fold_u"),
        ]
        after = [
            helper.make_node("Squeeze", [f"{out}_fold5d", "fold_axis0"], [f"{out}_mnhw"], name=f"{out}_fold_s"),
            helper.make_node("Transpose", [f"{out}_mnhw"], [out], perm=[1, 0, 2, 3], name=f"{out}_fold_t2"),
        ]
        index = list(g.node).index(last)
        for node in reversed(after):
            g.node.insert(index + 1, node)
        index = list(g.node).index(first)
        for node in reversed(before):
            g.node.insert(index, node)
    g.ClearField("value_info")
    return model


# --------------------------------------------------------------------------------------------
# timing


LEVELS = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL, "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED}


def session(model: onnx.ModelProto, level: str = "all", profile: str | None = None) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.graph_optimization_level = LEVELS[level]
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3
    if profile:
        so.enable_profiling = True
        so.profile_file_prefix = profile
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def runner(sess: ort.InferenceSession, x: np.ndarray) -> Callable[[], None]:
    name = sess.get_inputs()[0].name
    return lambda: sess.run(None, {name: x})


def interleave(fns: dict[str, Callable[[], object]], reps: int, warmup: int = 2) -> dict[str, list[float]]:
    """Run the callables in turn, `reps` rounds, the order rotated every round; seconds per call."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(reps):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            t = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t)
    return times


def med(values: list[float]) -> float:
    return statistics.median(values)


def spread(values: list[float]) -> str:
    """The interquartile range as a percentage of the median."""
    q = statistics.quantiles(values, n=4) if len(values) >= 2 else [values[0]] * 3
    return f"{100 * (q[2] - q[0]) / q[1]:.0f}%"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def verdict(ok: bool) -> str:
    return "yes" if ok else "**no**"


def image(batch: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, 3, size, size), dtype=np.float32)


def check_close(a: np.ndarray, b: np.ndarray, what: str) -> None:
    b = b.reshape(a.shape)
    if not np.allclose(b, a, rtol=1e-4, atol=1e-4):
        raise SystemExit(f"{what}: outputs differ (max abs {np.abs(a - b).max():.3g})")


# --------------------------------------------------------------------------------------------
# 1. same work, same speed


def bench_same_size(quick: bool) -> None:
    print("\n## 1. Same work, same speed (original size; target converted/original <= 1.02)\n")
    cases = [("AlexNet", alexnet, 227), ("VGG-16 head", vgg16_light, 224), ("ResNet-style", resnet_light, 224)]
    batches = (1, 8)
    reps = {1: 6, 8: 3} if quick else {1: 40, 8: 25}
    rows = []
    larger: list[list[str]] = []
    profiles: dict[str, tuple] = {}
    for label, build, size in cases:
        model = build()
        result = converted(model)
        folded = fold_batch_into_depth(copy_model(result.model), result)
        sessions = {
            "original": session(model),
            "converted": session(result.model),
            "converted, extended": session(result.model, "extended"),
            "converted + fold": session(folded),
        }
        if not quick and label != "ResNet-style":
            larger.append(fold_at_larger(label, sessions["converted"], sessions["converted + fold"], size + 224))
        for batch in batches:
            x = image(batch, size)
            ref = sessions["original"].run(None, {"image": x})[0]
            for name, sess in sessions.items():
                check_close(ref, sess.run(None, {"image": x})[0], f"{label} {name} batch {batch}")
            fns = {name: runner(sess, x) for name, sess in sessions.items()}
            times = interleave(fns, reps[batch])
            base = med(times["original"])
            ratio = med(times["converted"]) / base
            paired = med([c / o for c, o in zip(times["converted"], times["original"], strict=True)])
            target = verdict(ratio <= 1.02)
            rows.append(
                [label, str(batch), f"{1e3 * base:.1f}", f"{1e3 * med(times['converted']):.1f}", f"{ratio:.2f}",
                 f"{paired:.2f}", target,
                 f"{med(times['converted, extended']) / base:.2f}", f"{med(times['converted + fold']) / base:.2f}",
                 spread(times["converted"])]
            )  # fmt: skip
            if batch == 8 and label == "VGG-16 head":
                profiles[label] = (model, result.model, folded, x)
        del sessions
    print(
        table(
            ["model", "batch", "original ms", "converted ms", "converted/original", "paired", "<= 1.02",
             "ORT_ENABLE_EXTENDED / orig", "fold prototype / orig", "IQR (conv)"],
            rows,
        )
    )  # fmt: skip
    print(
        "\n`ORT_ENABLE_EXTENDED`: the converted model without onnxruntime's NCHWc layout transformer. "
        "`fold prototype`: the head's Convs as 3-D convs with the batch as depth (one GEMM per layer "
        "for the whole batch; see fold_batch_into_depth). `paired`: the median of the per-round ratios "
        "(each round runs every session once, back to back). The `<= 1.02` verdict uses the ratio of medians."
    )
    if larger:
        print("\nThe fold prototype on a larger image (batch 1), where the converted model earns its keep:\n")
        print(table(["model", "input", "converted ms", "fold prototype ms", "fold / converted"], larger))
    if not quick:
        for label, (model, conv, folded, x) in profiles.items():
            profile_heads(label, model, conv, folded, x, reps=8)


def fold_at_larger(label: str, conv: ort.InferenceSession, folded: ort.InferenceSession, size: int) -> list[str]:
    x = image(1, size)
    check_close(conv.run(None, {"image": x})[0], folded.run(None, {"image": x})[0], f"{label} fold at {size}")
    times = interleave({"converted": runner(conv, x), "fold": runner(folded, x)}, 10)
    a, b = med(times["converted"]), med(times["fold"])
    return [label, f"{size} x {size}", f"{1e3 * a:.1f}", f"{1e3 * b:.1f}", f"{b / a:.2f}"]


def profile_heads(label: str, model, conv, folded, x: np.ndarray, reps: int) -> None:
    """Per-node kernel times from onnxruntime's profiler, the three sessions interleaved."""
    tmp = tempfile.mkdtemp(prefix="fc2conv_prof_")
    try:
        sessions = {
            "original": session(model, profile=f"{tmp}/orig"),
            "converted": session(conv, profile=f"{tmp}/conv"),
            "fold": session(folded, profile=f"{tmp}/fold"),
        }
        interleave({k: runner(s, x) for k, s in sessions.items()}, reps)
        per: dict[str, dict[str, float]] = {}
        for name, sess in sessions.items():
            with open(sess.end_profiling()) as f:
                events = json.load(f)
            durations: dict[str, list[float]] = defaultdict(list)
            for e in events:
                if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
                    durations[f"{e['args'].get('op_name')} `{e['name'][: -len('_kernel_time')]}`"].append(e["dur"])
            per[name] = {k: med(v) / 1e3 for k, v in durations.items()}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nonnxruntime profile, {label}, batch {x.shape[0]}: head nodes, median kernel ms (ORT_ENABLE_ALL)\n")
    rows = []
    for name, nodes in per.items():
        head = {k: v for k, v in nodes.items() if "Gemm" in k or "fold" in k or "fc" in k}
        rows.append([name, "; ".join(f"{k} {v:.2f}" for k, v in head.items()), f"{sum(head.values()):.1f}",
                     f"{sum(nodes.values()):.1f}"])  # fmt: skip
    print(table(["session", "head nodes (op `node` ms)", "head ms", "all nodes ms"], rows))


# --------------------------------------------------------------------------------------------
# 2. the reason to exist: one pass on a larger image


def macs(model: onnx.ModelProto, shape: tuple[int, ...], head_prefix: str = "Gemm_") -> tuple[int, int]:
    """Multiply-adds (backbone, head) of Conv, Gemm and MatMul nodes at an input shape.

    Shapes come from onnx shape inference; head nodes are those named `head_prefix*` (the
    converter keeps the Gemm's name on the Conv that replaces it).
    """
    skeleton = copy_model(model)
    g = skeleton.graph
    weights = {t.name: list(t.dims) for t in g.initializer}
    dims = {}
    for t in g.initializer:
        dims[t.name] = list(t.dims)
        g.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    g.ClearField("initializer")
    g.ClearField("value_info")
    inp = g.input[0].type.tensor_type.shape
    inp.ClearField("dim")
    for d in shape:
        inp.dim.add().dim_value = d
    for out in g.output:
        out.type.tensor_type.ClearField("shape")
    inferred = onnx.shape_inference.infer_shapes(skeleton, strict_mode=True)
    for vi in [*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input]:
        dims[vi.name] = [d.dim_value for d in vi.type.tensor_type.shape.dim]
    parts = [0, 0]
    for node in inferred.graph.node:
        n = 0
        if node.op_type == "Conv":
            w = weights[node.input[1]]
            n = math.prod(dims[node.output[0]]) * math.prod(w[1:])
        elif node.op_type == "Gemm":
            w = weights[node.input[1]]
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            n = math.prod(dims[node.output[0]]) * (w[1] if trans_b else w[0])
        elif node.op_type == "MatMul":
            n = math.prod(dims[node.output[0]]) * dims[node.input[0]][-1]
        parts[node.name.startswith(head_prefix)] += n
    return parts[0], parts[1]


def bench_larger(quick: bool) -> None:
    print("\n## 2. One pass on a larger image: AlexNet geometry, 451 x 451 -> 8 x 8 map\n")
    model = alexnet()
    conv = converted(model).model
    s_orig, s_conv = session(model), session(conv)
    big = image(1, 451, seed=1)
    small = np.ascontiguousarray(big[:, :, :227, :227])
    crops = [np.ascontiguousarray(big[:, :, 32 * i : 32 * i + 227, 32 * j : 32 * j + 227])
             for i in range(8) for j in range(8)]  # fmt: skip
    batch64 = np.concatenate(crops, axis=0)
    out = s_conv.run(None, {"image": big})[0]
    if out.shape != (1, 1000, 8, 8):
        raise SystemExit(f"the converted AlexNet gives {out.shape} at 451, expected (1, 1000, 8, 8)")
    # The top-left window has no padding influence from outside the crop only for unpadded
    # backbones; this one pads conv2..5, so only the shapes are checked here (verify/reference.py has the
    # independent reference).

    def loop() -> None:
        for crop in crops:
            s_orig.run(None, {"image": crop})

    fns = {
        "converted @451": runner(s_conv, big),
        "original @227": runner(s_orig, small),
        "original, 64 crops, loop": loop,
        "original, 64 crops, batch 64": runner(s_orig, batch64),
    }
    times = interleave(fns, 1 if quick else 7, warmup=1)
    split_conv = macs(conv, (1, 3, 451, 451))
    split_orig = macs(model, (1, 3, 227, 227))
    m_conv, m_orig = sum(split_conv), sum(split_orig)
    t_conv = med(times["converted @451"])
    rows = [
        ["converted @451 (8 x 8 map)", f"{1e3 * t_conv:.1f}", "1.00", f"{m_conv / 1e9:.2f}", "1.00", ""],
    ]
    for name in ("original @227", "original, 64 crops, loop", "original, 64 crops, batch 64"):
        t = med(times[name])
        mac = m_orig * (64 if "crops" in name else 1)
        if name == "original @227":
            ok = t_conv / t <= 3
            note = f"converted/original = {t_conv / t:.2f} (MACs {m_conv / m_orig:.2f}); <= 3: {verdict(ok)}"
        else:
            ok = t / t_conv >= 20
            note = f"{t / t_conv:.1f}x faster (MAC bound {mac / m_conv:.1f}x); >= 20x: {verdict(ok)}"
        rows.append([name, f"{1e3 * t:.1f}", f"{t / t_conv:.2f}", f"{mac / 1e9:.2f}", f"{mac / m_conv:.2f}", note])
    print(table(["run", "median ms", "time / converted", "GMACs", "MACs / converted", "target"], rows))
    print(f"\n64x the outputs for {t_conv / med(times['original @227']):.2f}x the time of one 227 pass.")
    print(
        f"MACs, backbone + head: one pass at 451 {split_conv[0] / 1e9:.2f} + {split_conv[1] / 1e9:.2f} G; "
        f"one original pass at 227 {split_orig[0] / 1e9:.2f} + {split_orig[1] / 1e9:.2f} G "
        f"(64 crops: {64 * split_orig[0] / 1e9:.2f} + {64 * split_orig[1] / 1e9:.2f} G). "
        "Sharing the backbone saves only backbone work: the head runs on the same 64 windows either way."
    )


# --------------------------------------------------------------------------------------------
# 3. the rewrite itself (each variant in a fresh subprocess)


def _status(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)


def _trace_stages(verify: bool) -> list[str]:
    """Wrap convert_file's stages to record time and peak RSS of each (child process only)."""
    # import_module: the package's `verify` function shadows the `verify` subpackage attribute
    api = importlib.import_module("onnx_fc2conv.api")
    fio = importlib.import_module("onnx_fc2conv.files")
    phases = importlib.import_module("onnx_fc2conv.verify.phases")
    reference = importlib.import_module("onnx_fc2conv.verify.reference")

    lines: list[str] = []
    depth = [0]

    def wrap(owner, name: str, label: str) -> None:
        fn = getattr(owner, name, None)
        if fn is None:  # a renamed stage must not drop out of the trace unnoticed
            raise SystemExit(f"stage trace: {owner.__name__}.{name} does not exist; update _trace_stages")

        @functools.wraps(fn)
        def traced(*args, **kwargs):
            rss, t = _status("VmRSS"), time.perf_counter()
            _reset_peak()
            depth[0] += 1
            try:
                return fn(*args, **kwargs)
            finally:
                depth[0] -= 1
                lines.append(f"{'  ' * depth[0]}{label}|{time.perf_counter() - t:.2f}|{rss:.0f}|{_status('VmHWM'):.0f}")

        setattr(owner, name, traced)

    wrap(fio, "load_model", "files.load_model")
    if verify:
        wrap(api, "verify_conversion", "api.verify_conversion")
        wrap(phases, "session", "verify.session (the original's or the converted's session)")
        wrap(phases, "larger_sizes", "verify.larger_sizes")
        wrap(reference, "session", "verify.session (a reference cut's session)")
        wrap(onnx.checker, "check_model", "onnx.checker.check_model")
        return lines
    wrap(onnx, "load_model", "onnx.load_model (read + parse)")
    wrap(fio, "_check_tensor_sizes", "files._check_tensor_sizes (sizes from the wire scan)")
    wrap(api, "_analyse", "api._analyse (shape inference, graph import, head search)")
    wrap(api, "write_back", "api.write_back (graph back to the model)")
    wrap(api, "rewrite_head", "rewrite_head")
    wrap(api, "infer_shapes", "api.infer_shapes (skeleton)")
    wrap(fio, "save_model", "files.save_model")
    wrap(onnx.ModelProto, "ByteSize", "ModelProto.ByteSize")
    wrap(onnx, "save_model", "onnx.save_model (serialize + write)")
    wrap(api, "_check", "api._check (checker before writing)")
    return lines


def child(mode: str, src: str, dst: str) -> None:
    """One measured operation in a fresh process; prints a JSON line."""
    base = _status("VmRSS")
    from onnx_fc2conv import ConvertOptions, convert_file

    lines: list[str] = []
    if mode in ("trace", "trace-verify"):
        lines = _trace_stages(verify=mode == "trace-verify")
    imported = _status("VmRSS")
    t = time.perf_counter()
    if mode == "roundtrip":
        onnx.save(onnx.load(src), dst)
    elif mode in ("convert", "trace"):
        convert_file(src, dst, ConvertOptions(verify=False))
    elif mode in ("verify", "trace-verify"):
        convert_file(src, dst, ConvertOptions(verify=True))
    else:
        raise SystemExit(f"unknown child mode {mode}")
    seconds = time.perf_counter() - t
    report = {"seconds": seconds, "base_mb": base, "imported_mb": imported, "hwm_mb": _status("VmHWM"),
              "trace": lines}  # fmt: skip
    print(json.dumps(report))


def run_child(mode: str, src: Path, dst: Path) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", mode, str(src), str(dst)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"child {mode} failed:\n{proc.stderr[-2000:]}")
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    dst.unlink(missing_ok=True)
    Path(str(dst) + ".data").unlink(missing_ok=True)
    return report


def bench_rewrite(quick: bool) -> None:
    build, label = (resnet_light, "ResNet-style (smoke)") if quick else (vgg16_full, "VGG-16-sized")
    tmp = Path(tempfile.mkdtemp(prefix="fc2conv_bench_"))
    try:
        model = build()
        params = sum(math.prod(t.dims) for t in model.graph.initializer)
        src = tmp / "model.onnx"
        onnx.save(model, str(src))
        del model
        size_mb = src.stat().st_size / 2**20
        print(f"\n## 3. The rewrite: {label} model, {params / 1e6:.1f} M parameters, {size_mb:.0f} MiB file\n")
        modes = ["roundtrip", "convert"]
        reps = 2 if quick else 5
        results: dict[str, list[dict]] = {m: [] for m in modes}
        for r in range(reps):
            k = r % len(modes)
            for mode in modes[k:] + modes[:k]:
                results[mode].append(run_child(mode, src, tmp / f"out_{mode}.onnx"))
        verify_reps = 0 if quick else 2
        for _ in range(verify_reps):
            results.setdefault("verify", []).append(run_child("verify", src, tmp / "out_verify.onnx"))
            results.setdefault("convert", []).append(run_child("convert", src, tmp / "out_convert.onnx"))
        trace = run_child("trace", src, tmp / "out_trace.onnx")
        trace_verify = None if quick else run_child("trace-verify", src, tmp / "out_trace.onnx")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    base_t = med([r["seconds"] for r in results["roundtrip"]])
    base_m = med([r["hwm_mb"] for r in results["roundtrip"]])
    base_i = med([r["imported_mb"] for r in results["roundtrip"]])
    names = {
        "roundtrip": "onnx.load + onnx.save",
        "convert": "convert_file(verify=False)",
        "verify": "convert_file(verify=True)",
    }
    rows = []
    for mode, reports in results.items():
        t = med([r["seconds"] for r in reports])
        hwm = med([r["hwm_mb"] for r in reports])
        imported = med([r["imported_mb"] for r in reports])
        t_ok = verdict(t / base_t <= 1.3) if mode == "convert" else ""
        m_ok = verdict(hwm / base_m <= 1.2) if mode == "convert" else ""
        rows.append(
            [names[mode], str(len(reports)), f"{t:.2f}", f"{t / base_t:.2f}", t_ok, f"{hwm:.0f}", f"{hwm / base_m:.2f}",
             m_ok, f"{(hwm - imported) / size_mb:.2f}"]
        )  # fmt: skip
    print(
        table(
            ["variant", "runs", "median s", "time / round trip", "<= 1.3", "peak RSS MB", "peak / round trip",
             "<= 1.2", "(peak - RSS after imports) / model size"],
            rows,
        )
    )  # fmt: skip
    print(f"\nRSS after imports: {base_i:.0f} MB (round trip child).")
    if "verify" in results:
        v = med([r["seconds"] for r in results["verify"]]) - med([r["seconds"] for r in results["convert"]])
        print(f"Verification time (verify=True minus verify=False, medians): {v:.1f} s.")
    print_trace("convert_file(verify=False)", trace)
    if trace_verify is not None:
        print_trace("convert_file(verify=True), verification stages", trace_verify)


def print_trace(what: str, report: dict) -> None:
    print(f"\nStage trace of one {what} (peak: VmHWM, reset at each stage's start):\n")
    rows = []
    for line in report["trace"]:
        name, seconds, rss, peak = line.split("|")
        rows.append([name.replace(" ", "&nbsp;", len(name) - len(name.lstrip())), seconds, rss, peak])
    print(table(["stage (nested stages indented, listed as they end)", "s", "RSS at start MB", "peak MB"], rows))
    peak = max([report["hwm_mb"], *(float(line.split("|")[3]) for line in report["trace"])])
    print(f"\nWhole child: {report['seconds']:.2f} s, peak RSS {peak:.0f} MB.")


# --------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run (< 1 minute)")
    parser.add_argument("--only", choices=["same-size", "larger", "rewrite"], action="append")
    parser.add_argument("--child", nargs=3, metavar=("MODE", "SRC", "DST"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    only = set(args.only or ["same-size", "larger", "rewrite"])
    print("# onnx-fc2conv benchmarks\n")
    print(f"- command: `{' '.join(['python', *sys.argv])}`")
    print(f"- onnxruntime {ort.__version__}, onnx {onnx.__version__}, numpy {np.__version__}, "
          f"Python {platform.python_version()}")  # fmt: skip
    print(f"- CPUs: {os.cpu_count()} ({platform.machine()}); intra-op threads: onnxruntime default; spinning off")
    if "same-size" in only:
        bench_same_size(args.quick)
    if "larger" in only:
        bench_larger(args.quick)
    if "rewrite" in only:
        bench_rewrite(args.quick)
    print(f"\nTotal time: {time.perf_counter() - TOTAL_START:.0f} s")


if __name__ == "__main__":
    main()
