r"""Export options probe: small classifiers exported with the options users pass (dynamic axes, opsets,
no constant folding, initializers kept as graph inputs, dynamo dynamic shapes, tf2onnx's NCHW inputs,
paddle's InputSpec), each converted by `onnx-fc2conv convert` and checked against the framework itself.

Run by hand from the repository root, with the tool installed in the running interpreter's environment:

    nice -n 10 python benchmarks/probe_export_options.py                  # export (cached), convert, check
    nice -n 10 python benchmarks/probe_export_options.py --only lenet     # cases whose id contains 'lenet'

Exports run in the frameworks' own environments under `--venvs` (as benchmarks/compat.py documents),
one subprocess per framework (`--export FRAMEWORK`), with seeded weights and randomized BatchNorm
statistics (the compat exporters' helpers). Each case folder under `--workdir` holds model.onnx and
reference.npz: the framework's outputs at batch 2 at the exported size and at a larger non-square
size (global-pool heads), or the expected map shape there (flattened heads: only the shape is checked).
The table shows the exit code, the first stderr line and the independent check of the written model.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "compat"))
CLASSES = 10


@dataclass(frozen=True)
class Case:
    framework: str  # torch | tf | paddle (the venv's name)
    model: str
    size: int  # exported (and reference) height = width
    head: str = "global"  # global: the framework runs at the larger size; window: flattened head
    opts: dict = field(default_factory=dict)

    @property
    def id(self) -> str:
        parts = [f"{k}{'' if v is True else '=' + str(v)}" for k, v in sorted(self.opts.items())]
        return "-".join([self.framework, self.model, *parts]) or self.model

    @property
    def larger(self) -> tuple[int, int]:
        return (self.size + 32, self.size + 16)


def _torch(model: str, size: int, head: str, *variants: dict) -> list[Case]:
    return [Case("torch", model, size, head, v) for v in variants]


BATCH, HW = {"dyn": "batch"}, {"dyn": "hw"}
NOFOLD, KIAI = {"nofold": True}, {"kiai": True}
OPSETS = ({"opset": 11}, {"opset": 13}, {"opset": 17})
SIZED = {"sized": True}  # convert with --exported-size (the exported size)
CASES = [
    *_torch("resnet18", 64, "global", {}, BATCH, HW, *OPSETS, NOFOLD, KIAI, {**KIAI, **BATCH, "opset": 11}),
    *_torch("resnet18", 64, "global", {**KIAI, **HW, **NOFOLD}),
    *_torch("mobilenet_v2", 64, "global", BATCH, HW, {"opset": 11}, NOFOLD, {**KIAI, **BATCH}),
    *_torch("squeezenet1_1", 64, "global", BATCH, HW, {"opset": 11}, {**KIAI, **BATCH}),
    *_torch("googlenet", 64, "global", BATCH, HW, NOFOLD, {**KIAI, **HW}),
    *_torch("vgg11_bn", 224, "window", {**KIAI, **BATCH}, {**NOFOLD, "opset": 13}),
    *_torch("lenet_view", 32, "window", {}, BATCH, HW, {"opset": 11}, NOFOLD, KIAI, {**KIAI, **NOFOLD, "opset": 11}),
    *_torch("lenet_view", 32, "window", {**KIAI, **HW, "opset": 13}, {"noparams": True}),
    *_torch("lenet_flatten", 32, "window", BATCH, HW, {"opset": 11}, NOFOLD, {**KIAI, **BATCH}),
    *_torch("resnet18", 64, "global", {"dynamo": "batch"}, {"dynamo": "hw"}),
    *_torch("lenet_view", 32, "window", {"dynamo": "batch"}, {"dynamo": "hw"}),
    # symbolic H/W before a flattened head: refused without the size it was exported at, converted with it
    *_torch("lenet_view", 32, "window", {**HW, **SIZED}, {"dynamo": "hw", **SIZED}, {**KIAI, **HW, **SIZED}),
    *_torch("lenet_flatten", 32, "window", {**HW, **SIZED}),
    *_torch("lenet_batch", 32, "window", {}, BATCH, {"dynamo": "batch"}),
    *_torch("lenet_view", 32, "window", {"functions": True}, {"dynamo": "batch", "noopt": True}),
    *_torch("resnet18", 64, "global", {"functions": True, **BATCH}, {"dynamo": "hw", "noopt": True}),
    *_torch("gap_view", 64, "global", HW, {"dynamo": "hw"}, {**KIAI, **BATCH, "opset": 11}),
    *[
        Case("tf", m, 64, "global", {"opset": o, **n})
        for m in ("mnv2_gap", "cnn_gap")
        for o in (13, 17)
        for n in ({}, {"nchw": True})
    ],
    *[Case("tf", "seq_flatten", 32, "window", {"opset": o, **n}) for o in (13, 17) for n in ({}, {"nchw": True})],
    *[
        Case("paddle", m, 64, "global", {"opset": o, "spec": s})
        for m in ("resnet18", "mobilenet_v2")
        for o in (11, 13)
        for s in ("dyn", "fixed")
    ],
    *[Case("paddle", "LeNet", 28, "window", {"opset": 13, **o}) for o in ({"spec": "fixed"}, {"spec": "dyn"})],
    Case("paddle", "LeNet", 28, "window", {"opset": 13, "spec": "dyn", **SIZED}),
]


# ---------------------------------------------------------------- exporters (framework venvs)


def _inputs(case: Case, channels_last: bool):
    import numpy as np

    rng = np.random.default_rng(0)
    c = 1 if case.model == "LeNet" else 3  # paddle's LeNet reads one channel
    shape = (lambda b, hw: (b, *hw, c)) if channels_last else (lambda b, hw: (b, c, *hw))
    one = rng.standard_normal(shape(1, (case.size, case.size))).astype(np.float32)
    small = rng.standard_normal(shape(2, (case.size, case.size))).astype(np.float32)
    large = rng.standard_normal(shape(2, case.larger)).astype(np.float32)
    return one, small, large


class _Size:  # what the compat helpers read of an Arch
    def __init__(self, case: Case) -> None:
        self.size = (case.size, case.size)


def _torch_model(case: Case):
    import torch
    import torchvision
    from export_torch import randomize_norms
    from torch import nn

    class LeNet(nn.Module):
        def __init__(self, view: str) -> None:
            super().__init__()
            # view: x.view(x.size(0), -1); flatten: torch.flatten; batch: n = x.size(0) first, then
            # torch.flatten and reshape(n, -1)
            self.view = view
            self.features = nn.Sequential(
                nn.Conv2d(3, 6, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2)
            )
            self.fc = nn.Sequential(nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))

        def forward(self, x):
            n = x.size(0)
            x = self.features(x)
            x = x.view(x.size(0), -1) if self.view == "view" else torch.flatten(x, 1)
            return self.fc(x.reshape(n, -1) if self.view == "batch" else x)

    class GapView(nn.Module):  # a global pool flattened by view(x.size(0), -1), two FC layers
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU()
            )
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Sequential(nn.Linear(32, 24), nn.ReLU(), nn.Linear(24, 10))

        def forward(self, x):
            x = self.pool(self.features(x))
            return self.fc(x.view(x.size(0), -1))

    torch.manual_seed(0)
    if case.model.startswith("lenet"):
        model = LeNet(case.model.removeprefix("lenet_"))
    elif case.model == "gap_view":
        model = GapView()
    else:
        kwargs = {"aux_logits": False, "init_weights": True} if case.model == "googlenet" else {}
        model = getattr(torchvision.models, case.model)(weights=None, num_classes=CLASSES, **kwargs)
    randomize_norms(model, _Size(case))
    return model.eval()


def export_torch(case: Case, out: Path) -> dict:
    import torch
    from torch import nn

    model = _torch_model(case)
    one, small, large = (torch.from_numpy(a) for a in _inputs(case, channels_last=False))
    ref = {"x_small": small.numpy(), "x_large": large.numpy()}
    with torch.no_grad():
        ref["y_small"] = model(small).numpy()
        if case.head == "global":
            ref["y_large"] = model(large).numpy()
        else:
            at = [model.features(x).shape[2:] for x in (one, large)]
            ref["map_hw"] = [int(b - a + 1) for a, b in zip(*at, strict=True)]
    opts, path = case.opts, out / "model.onnx"
    if "dynamo" in opts:
        dim = torch.export.Dim
        shapes = {0: dim("batch", min=1, max=64)}
        if opts["dynamo"] == "hw":
            shapes.update({2: dim("height", min=case.size, max=1024), 3: dim("width", min=case.size, max=1024)})
        optimize = not opts.get("noopt")
        torch.onnx.export(model, (small,), str(path), dynamo=True, dynamic_shapes=(shapes,), optimize=optimize)
    else:
        axes = None
        if "dyn" in opts:
            spatial = {2: "height", 3: "width"} if opts["dyn"] == "hw" else {}
            axes = {"input": {0: "batch", **spatial}, "logits": {0: "batch"}}
        torch.onnx.export(
            model,
            (one,),
            str(path),
            dynamo=False,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes=axes,
            opset_version=opts.get("opset"),
            do_constant_folding=not opts.get("nofold"),
            keep_initializers_as_inputs=bool(opts.get("kiai")),
            export_params=not opts.get("noparams"),
            export_modules_as_functions={nn.Linear, nn.Conv2d} if opts.get("functions") else False,
        )
    return ref


def export_tf(case: Case, out: Path) -> dict:
    import tensorflow as tf
    import tf2onnx
    from export_tf import randomize

    tf.keras.utils.set_random_seed(0)
    layers = tf.keras.layers
    if case.model == "mnv2_gap":
        base = tf.keras.applications.MobileNetV2(
            weights=None, include_top=False, pooling="avg", input_shape=(None, None, 3), alpha=0.35
        )
        model = tf.keras.Model(base.input, layers.Dense(CLASSES)(base.output))
    elif case.model == "cnn_gap":
        x = inp = tf.keras.Input((None, None, 3))
        for filters in (16, 32):
            x = layers.ReLU()(layers.BatchNormalization()(layers.Conv2D(filters, 3, 2, padding="same")(x)))
        x = layers.Dense(32, activation="relu")(layers.GlobalAveragePooling2D()(x))
        model = tf.keras.Model(inp, layers.Dense(CLASSES)(x))
    else:
        model = tf.keras.Sequential(
            [
                tf.keras.Input((case.size, case.size, 3)),
                layers.Conv2D(8, 3, activation="relu"),
                layers.MaxPool2D(),
                layers.Conv2D(16, 3, activation="relu"),
                layers.MaxPool2D(),
                layers.Flatten(),
                layers.Dense(32, activation="relu"),
                layers.Dense(CLASSES),
            ]
        )
    randomize(model, _Size(case))
    one, small, large = _inputs(case, channels_last=True)
    nchw = bool(case.opts.get("nchw"))
    layout = (lambda a: a.transpose(0, 3, 1, 2)) if nchw else (lambda a: a)
    ref = {"x_small": layout(small), "x_large": layout(large), "y_small": model(small, training=False).numpy()}
    if case.head == "global":
        ref["y_large"] = model(large, training=False).numpy()
    else:
        backbone = tf.keras.Sequential(model.layers[:4])
        big = tf.keras.models.clone_model(backbone, input_tensors=tf.keras.Input((*case.larger, 3)))
        at = [tuple(m(x).shape[1:3]) for m, x in ((backbone, one), (big, large))]
        ref["map_hw"] = [int(b - a + 1) for a, b in zip(*at, strict=True)]
    spatial = (None, None) if case.head == "global" else (case.size, case.size)
    spec = (tf.TensorSpec((None, *spatial, 3), tf.float32, name="input"),)
    tf2onnx.convert.from_keras(
        model,
        input_signature=spec,
        opset=case.opts["opset"],
        output_path=str(out / "model.onnx"),
        inputs_as_nchw=["input"] if nchw else None,
    )
    return ref


def export_paddle(case: Case, out: Path) -> dict:
    import paddle
    from export_paddle import randomize_norms
    from paddle.static import InputSpec

    paddle.seed(0)
    kwargs = {"scale": 0.5} if case.model == "mobilenet_v2" else {}
    model = getattr(paddle.vision.models, case.model)(num_classes=CLASSES, **kwargs)
    randomize_norms(model, _Size(case))
    one, small, large = _inputs(case, channels_last=False)
    with paddle.no_grad():
        ref = {"x_small": small, "x_large": large, "y_small": model(paddle.to_tensor(small)).numpy()}
        if case.head == "global":
            ref["y_large"] = model(paddle.to_tensor(large)).numpy()
        else:
            at = [model.features(paddle.to_tensor(x)).shape[2:] for x in (one, large)]
            ref["map_hw"] = [int(b - a + 1) for a, b in zip(*at, strict=True)]
    hw = [None, None] if case.opts["spec"] == "dyn" else [case.size, case.size]
    spec = [InputSpec([None, small.shape[1], *hw], "float32", "x")]
    paddle.onnx.export(model, str(out / "model"), input_spec=spec, opset_version=case.opts["opset"])
    return ref


def export_all(framework: str, root: Path, only: str) -> None:
    """Every missing export of one framework; a failure is recorded in its folder, not fatal."""
    import numpy as np

    exporter = {"torch": export_torch, "tf": export_tf, "paddle": export_paddle}[framework]
    for case in CASES:
        out = root / case.id
        if case.framework != framework or only not in case.id or (out / "reference.npz").exists():
            continue
        out.mkdir(parents=True, exist_ok=True)
        try:
            ref = exporter(case, out)
            np.savez(out / "reference.npz", **{k: np.asarray(v) for k, v in ref.items()})
            (out / "export_error.txt").unlink(missing_ok=True)
        except Exception as exc:
            (out / "export_error.txt").write_text(f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}")
        print(f"exported {case.id}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- convert and check (tool venv)


def check(case: Case, out: Path) -> str:
    """The written model against the framework: batch 2 at the exported size, then the larger size
    (values for global heads, the map's shape for flattened heads)."""
    import numpy as np
    import onnxruntime as ort
    from check import compare

    ref = np.load(out / "reference.npz")
    quiet = ort.SessionOptions()
    quiet.log_severity_level = 3  # initializers kept as inputs: one warning each
    session = ort.InferenceSession(str(out / "converted.onnx"), quiet, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    notes = []
    for phase, x in (("b2", ref["x_small"]), ("large", ref["x_large"])):
        try:
            y = session.run(None, {name: x})[0]
        except Exception as exc:
            return f"{phase}: ort {' '.join(str(exc).split())[:120]}"
        if phase == "large" and "map_hw" in ref:
            want = [2, CLASSES, *ref["map_hw"].tolist()]
            if list(y.shape) != want:
                return f"large: map {list(y.shape)} != {want}"
            notes.append(f"large map {list(y.shape)}")
            continue
        result = compare(y, ref["y_small" if phase == "b2" else "y_large"])
        if not result["passed"]:
            error = result.get("error") or f"{result['of_allowed']:.3g}x allowed"
            return f"{phase}: FAIL {error}"
        notes.append(f"{phase} {result['of_allowed']:.2g}")
    return "ok: " + ", ".join(notes)


def convert(case: Case, out: Path) -> tuple[str, str, str, float]:
    if (out / "export_error.txt").exists():
        return "-", "export: " + (out / "export_error.txt").read_text()[:150], "", 0.0
    if not (out / "model.onnx").exists():
        return "-", "export: no model written (the exporter died; its log has why)", "", 0.0
    (out / "converted.onnx").unlink(missing_ok=True)
    start = time.perf_counter()
    sized = ["--exported-size", f"{case.size}x{case.size}"] if case.opts.get("sized") else []
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "onnx_fc2conv",
            "convert",
            "-q",
            str(out / "model.onnx"),
            str(out / "converted.onnx"),
            *sized,
        ],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    seconds = time.perf_counter() - start
    (out / "stderr.txt").write_text(proc.stderr)
    first = next((line for line in proc.stderr.splitlines() if line.strip()), "")
    verdict = check(case, out) if proc.returncode == 0 else ""
    return str(proc.returncode), first, verdict, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/options-probe"))
    parser.add_argument("--venvs", type=Path, default=Path("/work/venvs"))
    parser.add_argument("--only", default="", help="cases whose id contains this")
    parser.add_argument("--export", metavar="FRAMEWORK", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.export:
        return export_all(args.export, args.workdir, args.only)
    cases = [c for c in CASES if args.only in c.id]
    for framework in sorted({c.framework for c in cases}):
        if any(not (args.workdir / c.id / "reference.npz").exists() for c in cases if c.framework == framework):
            python = args.venvs / framework / "bin" / "python"
            env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
            cmd = [str(python), __file__, "--export", framework, "--workdir", str(args.workdir), "--only", args.only]
            subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, check=False)
    rows = []
    for case in cases:
        code, first, verdict, seconds = convert(case, args.workdir / case.id)
        rows.append({"case": case.id, "exit": code, "stderr": first, "check": verdict, "seconds": round(seconds, 1)})
        print(f"{case.id:44} {code:>2} {seconds:6.1f}s  {verdict or first[:110]}", flush=True)
    (args.workdir / "results.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
