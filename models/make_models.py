"""Regenerate the golden ONNX test models for ``onnx_fc2conv``.

PyTorch and TensorFlow usually live in different virtual environments, so the generators are split by
backend (torch needs ``torch==2.13.0 onnxscript``; keras needs ``tensorflow-cpu tf2onnx``)::

    <torch-env>/bin/python models/make_models.py torch   # TorchScript-based + dynamo exports
    <tf-env>/bin/python models/make_models.py keras      # Keras 3 models through tf2onnx
    python models/make_models.py all                     # both, via the interpreters below

``all`` re-invokes this script once per backend with the interpreters named by the environment variables
``FC2CONV_TORCH_PYTHON`` and ``FC2CONV_TF_PYTHON`` (default: the current interpreter), e.g.::

    FC2CONV_TORCH_PYTHON=<torch-env>/bin/python FC2CONV_TF_PYTHON=<tf-env>/bin/python \\
        python models/make_models.py all

Every model is built from seeded weights, put in eval mode, exported, then loaded back in onnxruntime, run
on a seeded random input and compared with the framework output. Each backend rewrites its own records in
``models/manifest.json`` and leaves the other backend's records alone. One line is printed per model written.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import subprocess
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MODELS_DIR = Path(__file__).resolve().parent
MANIFEST = MODELS_DIR / "manifest.json"
SEED = 0
NUM_CLASSES = 10
EXPORTER_ORDER = {"torchscript": 0, "dynamo": 1, "tf2onnx": 2}
BACKEND_EXPORTERS = {"torch": {"torchscript", "dynamo"}, "keras": {"tf2onnx"}}
FEATURE_OPS = {"Conv", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool"}
POOL_OPS = FEATURE_OPS - {"Conv"}
CONV_TAIL_OPS = {"Relu", "HardSwish", "Clip", "Sigmoid", "Mul", "Add", "BatchNormalization", "LeakyRelu"}


# --------------------------------------------------------------------------------------------------------
# Framework-independent helpers (onnx / onnxruntime / numpy only)
# --------------------------------------------------------------------------------------------------------


def _quiet() -> None:
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def head_summary(model: Any) -> str:
    """Op types from the last Conv/pool to the outputs, in graph order.

    A trailing pool is included; a trailing Conv is not, nor are the element-wise ops that directly follow it
    (activation, residual Add), nor Constant nodes.
    """
    nodes = list(model.graph.node)
    last = max((i for i, n in enumerate(nodes) if n.op_type in FEATURE_OPS), default=-1)
    start = last if last >= 0 and nodes[last].op_type in POOL_OPS else last + 1
    if last >= 0 and nodes[last].op_type == "Conv":
        while start < len(nodes) and nodes[start].op_type in CONV_TAIL_OPS:
            start += 1
    return " -> ".join(n.op_type for n in nodes[start:] if n.op_type != "Constant")


def _dims(value_info: Any) -> list[int | str]:
    return [d.dim_param if d.HasField("dim_param") else d.dim_value for d in value_info.type.tensor_type.shape.dim]


def verify_and_describe(
    path: Path, exporter: str, reference: Callable[[np.ndarray], np.ndarray], atol: float = 1e-4
) -> dict[str, Any]:
    """Run ``path`` in onnxruntime on a seeded input, compare with ``reference`` and build its manifest record."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path), load_external_data=False)
    (graph_input,) = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    shape = _dims(graph_input)
    concrete = [d if isinstance(d, int) and d > 0 else 2 for d in shape]  # dynamic batch: run with 2
    x = np.random.default_rng(SEED).standard_normal(concrete).astype(np.float32)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outputs = sess.run(None, {graph_input.name: x})
    assert all(np.all(np.isfinite(o)) for o in outputs), f"{path.name}: non-finite output"
    np.testing.assert_allclose(outputs[0], reference(x), rtol=1e-3, atol=atol, err_msg=path.name)
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    external = any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    return {
        "file": path.name,
        "exporter": exporter,
        "opset": opset,
        "input_name": graph_input.name,
        "input_shape": shape,
        "output_names": [o.name for o in model.graph.output],
        "head": head_summary(model),
        "external_data": external,
    }


def update_manifest(backend: str, records: Sequence[dict[str, Any]]) -> None:
    """Replace this backend's records in the manifest, keeping the other backend's ones."""
    mine = BACKEND_EXPORTERS[backend]
    kept = json.loads(MANIFEST.read_text()) if MANIFEST.exists() else []
    merged = [r for r in kept if r["exporter"] not in mine] + list(records)
    merged.sort(key=lambda r: (EXPORTER_ORDER[r["exporter"]], r["file"]))
    MANIFEST.write_text(json.dumps(merged, indent=2) + "\n")


def _written(record: dict[str, Any]) -> None:
    shape = "x".join(str(d) for d in record["input_shape"])
    ext = " +external data" if record["external_data"] else ""
    print(f"wrote {record['file']:<34} opset {record['opset']:<2} [{shape}] {record['head']}{ext}")


# --------------------------------------------------------------------------------------------------------
# PyTorch models
# --------------------------------------------------------------------------------------------------------


def build_torch() -> None:
    import torch
    from torch import nn

    def randomize_bn(module: nn.Module) -> None:
        """Give every BatchNorm / LayerNorm non-trivial statistics and affine parameters."""
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n) * 0.5)
                m.running_var.copy_(torch.rand(n) * 1.5 + 0.25)
                m.weight.data.copy_(torch.rand(n) + 0.5)
                m.bias.data.copy_(torch.randn(n) * 0.2)
            elif isinstance(m, nn.LayerNorm):
                m.weight.data.copy_(torch.rand(m.weight.shape) + 0.5)
                m.bias.data.copy_(torch.randn(m.bias.shape) * 0.2)

    def conv_bn(cin: int, cout: int, k: int = 3, s: int = 1, act: type[nn.Module] = nn.ReLU) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, k, s, k // 2, bias=False), nn.BatchNorm2d(cout), act())

    class QuestionMLP(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 2)
            with torch.no_grad():
                self.fc.weight.copy_(torch.tensor([[0.0, 1.0, 1.0], [2.0, 3.0, 5.0]]))
                self.fc.bias.copy_(torch.tensor([8.0, 13.0]))
            self.relu = nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.relu(self.fc(x))

    class LeNet5(nn.Module):
        def __init__(self, hidden: tuple[int, int] = (120, 84), softmax: bool = False) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(1, 6, 5)
            self.conv2 = nn.Conv2d(6, 16, 5)
            self.pool = nn.MaxPool2d(2)
            self.fc1 = nn.Linear(16 * 5 * 5, hidden[0])
            self.fc2 = nn.Linear(hidden[0], hidden[1])
            self.fc3 = nn.Linear(hidden[1], NUM_CLASSES)
            self.softmax = softmax

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.pool(torch.relu(self.conv1(x)))
            x = self.pool(torch.relu(self.conv2(x)))
            x = torch.flatten(x, 1)
            x = torch.relu(self.fc1(x))
            x = torch.relu(self.fc2(x))
            x = self.fc3(x)
            return torch.softmax(x, dim=1) if self.softmax else x

    class VGGSmall(nn.Module):
        def __init__(self) -> None:
            super().__init__()

            def block(cin: int, cout: int) -> list[nn.Module]:
                return [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2)]

            # 64 -> 32 -> 16 -> 8 -> 4
            self.features = nn.Sequential(*block(3, 8), *block(8, 8), *block(8, 16), *block(16, 16))
            self.classifier = nn.Sequential(
                nn.Linear(16 * 4 * 4, 64), nn.ReLU(inplace=True), nn.Dropout(0.5),
                nn.Linear(64, 64), nn.ReLU(inplace=True), nn.Dropout(0.5),
                nn.Linear(64, NUM_CLASSES),
            )  # fmt: skip

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.classifier(torch.flatten(self.features(x), 1))

    class BasicBlock(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.downsample: nn.Module = nn.Identity()
            if stride != 1 or cin != cout:
                self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.relu(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            return torch.relu(y + self.downsample(x))

    class ResNetGAP(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = conv_bn(3, 8, 3, 2)
            self.layer1 = BasicBlock(8, 8)
            self.layer2 = BasicBlock(8, 16, stride=2)
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(16, NUM_CLASSES)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.layer2(self.layer1(self.stem(x)))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    class LayerNorm2d(nn.LayerNorm):
        """timm/ConvNeXt style: channels-last LayerNorm on an NCHW map."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x.permute(0, 2, 3, 1)
            x = super().forward(x)
            return x.permute(0, 3, 1, 2)

    class ConvNeXtHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 16, 4, 4), nn.GELU(), nn.Conv2d(16, 16, 3, padding=1))
            self.global_pool = nn.AdaptiveAvgPool2d(1)
            self.norm = LayerNorm2d(16, eps=1e-6)
            self.fc = nn.Linear(16, NUM_CLASSES)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.norm(self.global_pool(self.stem(x)))
            return self.fc(torch.flatten(x, 1))

    class MobileNetV3Head(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(conv_bn(3, 8, 3, 2, nn.Hardswish), conv_bn(8, 24, 1, 1, nn.Hardswish))
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Sequential(
                nn.Linear(24, 32), nn.Hardswish(inplace=True), nn.Dropout(0.2, inplace=True),
                nn.Linear(32, NUM_CLASSES),
            )  # fmt: skip

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))

    class MeanHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(conv_bn(3, 8, 3, 2), conv_bn(8, 16, 3, 2))
            self.fc = nn.Linear(16, NUM_CLASSES)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.features(x).mean([2, 3]))

    class ViewHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            # 48x40 -> 24x20 -> pool 12x10 -> 6x5: 8*6*5 = 240 features
            self.features = nn.Sequential(conv_bn(3, 8, 3, 2), nn.MaxPool2d(2), conv_bn(8, 8, 3, 2))
            self.fc1 = nn.Linear(8 * 6 * 5, 32)
            self.fc2 = nn.Linear(32, NUM_CLASSES)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.features(x)
            x = x.view(x.size(0), -1)
            return self.fc2(torch.relu(self.fc1(x)))

    class ShuffleNetSmall(nn.Module):
        def __init__(self, groups: int = 3) -> None:
            super().__init__()
            self.groups = groups
            self.stem = conv_bn(3, 12, 3, 2)  # 32 -> 16
            self.gconv1 = nn.Sequential(nn.Conv2d(12, 12, 1, groups=groups, bias=False), nn.BatchNorm2d(12), nn.ReLU())
            self.dwconv = nn.Sequential(nn.Conv2d(12, 12, 3, 1, 1, groups=12, bias=False), nn.BatchNorm2d(12))
            self.gconv2 = nn.Sequential(nn.Conv2d(12, 12, 1, groups=groups, bias=False), nn.BatchNorm2d(12))
            self.pool = nn.MaxPool2d(4)  # 16 -> 4
            self.fc = nn.Linear(12 * 4 * 4, NUM_CLASSES)

        def channel_shuffle(self, x: torch.Tensor) -> torch.Tensor:
            b, c, h, w = (int(s) for s in x.size())  # literal ints: the exporter bakes the shapes
            g = self.groups
            return x.view(b, g, c // g, h, w).transpose(1, 2).contiguous().view(b, c, h, w)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.stem(x)
            y = self.gconv2(self.dwconv(self.channel_shuffle(self.gconv1(x))))
            x = self.pool(torch.relu(x + y))
            return self.fc(torch.flatten(x, 1))

    class BN1dHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            # 32 -> 16 -> 8 -> pool 4: 8*4*4 = 128 features
            self.features = nn.Sequential(conv_bn(3, 8, 3, 2), conv_bn(8, 8, 3, 2), nn.MaxPool2d(2))
            self.fc1 = nn.Linear(8 * 4 * 4, 32)
            self.bn = nn.BatchNorm1d(32)
            self.fc2 = nn.Linear(32, NUM_CLASSES)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = torch.flatten(self.features(x), 1)
            x = torch.relu(self.bn(self.fc1(x)))
            return torch.softmax(self.fc2(x), dim=1)

    class ColourDemo(nn.Module):
        """Hand-set weights, no training: classes 0 yellow, 1 green, 2 red by how much of each colour a
        32 x 32 window holds. It reads ImageNet-normalised input (the heatmap command's default) and
        undoes that normalisation in its first 1 x 1 conv, so its class map on models/example.png
        lights up where the shapes are."""

        def __init__(self) -> None:
            super().__init__()
            self.colour = nn.Conv2d(3, 3, 1)
            self.pool = nn.AvgPool2d(4)
            self.fc = nn.Linear(3 * 8 * 8, 3)
            mean = torch.tensor([0.485, 0.456, 0.406])
            std = torch.tensor([0.229, 0.224, 0.225])
            # on 0..1 pixels: yellow R+G-2B-1.2, green G-R-B-0.1, red R-G-B-0.3
            w = torch.tensor([[1.0, 1.0, -2.0], [-1.0, 1.0, -1.0], [1.0, -1.0, -1.0]])
            b = torch.tensor([-1.2, -0.1, -0.3])
            with torch.no_grad():
                self.colour.weight.copy_((w * std).reshape(3, 3, 1, 1))
                self.colour.bias.copy_(b + w @ mean)
                per_class = torch.zeros(3, 3, 8, 8)
                for c in range(3):
                    per_class[c, c] = 1.0 / 4.0  # a window full of the colour scores about 16
                self.fc.weight.copy_(per_class.reshape(3, -1))
                self.fc.bias.zero_()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(torch.flatten(self.pool(torch.relu(self.colour(x))), 1))

    @dataclass
    class Job:
        file: str
        factory: Callable[[], nn.Module]
        shape: tuple[int, ...]
        exporter: str  # "torchscript" | "dynamo"
        opset: int
        dynamic_batch: bool = False

    def pair(stem: str, factory: Callable[[], nn.Module], shape: tuple[int, ...]) -> list[Job]:
        return [
            Job(f"ts_{stem}.onnx", factory, shape, "torchscript", 17),
            Job(f"dynamo_{stem}.onnx", factory, shape, "dynamo", 18),
        ]

    jobs = [
        Job("question_mlp.onnx", QuestionMLP, (1, 3), "torchscript", 17, dynamic_batch=True),
        Job("ts_lenet5.onnx", LeNet5, (1, 1, 32, 32), "torchscript", 17),
        Job("ts_vgg_small.onnx", VGGSmall, (1, 3, 64, 64), "torchscript", 17),
        Job("ts_vgg_small_dynbatch.onnx", VGGSmall, (1, 3, 64, 64), "torchscript", 17, dynamic_batch=True),
        *pair("resnet_gap", ResNetGAP, (1, 3, 32, 32)),
        *pair("convnext_head", ConvNeXtHead, (1, 3, 32, 32)),
        *pair("mobilenetv3_head", MobileNetV3Head, (1, 3, 48, 40)),
        *pair("mean_head", MeanHead, (1, 3, 48, 40)),
        *pair("view_head", ViewHead, (1, 3, 48, 40)),
        *pair("shufflenet", ShuffleNetSmall, (1, 3, 32, 32)),
        *pair("bn1d_head", BN1dHead, (1, 3, 32, 32)),
        Job("ts_view_head_dynbatch.onnx", ViewHead, (1, 3, 48, 40), "torchscript", 17, dynamic_batch=True),
        Job("dynamo_view_head_dynbatch.onnx", ViewHead, (1, 3, 48, 40), "dynamo", 18, dynamic_batch=True),
        Job("ts_lenet_softmax_op11.onnx", lambda: LeNet5(hidden=(32, 16), softmax=True), (1, 1, 32, 32),
            "torchscript", 11),
        Job("ts_colour_demo.onnx", ColourDemo, (1, 3, 32, 32), "torchscript", 17),
    ]  # fmt: skip

    torch.use_deterministic_algorithms(True)
    records = []
    for job in jobs:
        torch.manual_seed(SEED)
        model = job.factory()
        with torch.no_grad():
            randomize_bn(model)
        model.eval()
        path = MODELS_DIR / job.file
        for stale in (path, path.with_name(path.name + ".data")):
            stale.unlink(missing_ok=True)
        x = torch.randn(job.shape)
        common: dict[str, Any] = {"input_names": ["input"], "output_names": ["output"], "opset_version": job.opset}
        with contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
            if job.exporter == "torchscript":
                axes = {"input": {0: "batch"}, "output": {0: "batch"}} if job.dynamic_batch else None
                torch.onnx.export(model, (x,), str(path), dynamo=False, dynamic_axes=axes, **common)
            else:
                dyn = ({0: torch.export.Dim("batch", min=1, max=1024)},) if job.dynamic_batch else None
                torch.onnx.export(model, (x,), str(path), dynamo=True, dynamic_shapes=dyn, verbose=False, **common)
                _strip_stack_traces(path)

        def reference(a: np.ndarray, model: nn.Module = model) -> np.ndarray:
            with torch.no_grad():
                return model(torch.from_numpy(a)).numpy()

        record = verify_and_describe(path, job.exporter, reference)
        records.append(record)
        _written(record)
    update_manifest("torch", records)


def _strip_stack_traces(path: Path) -> None:
    """Drop the per-node Python stack traces the dynamo exporter records: they hold this machine's
    absolute paths and make the files change whenever this script is edited. Graph and weights stay."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    for node in model.graph.node:
        keep = [p for p in node.metadata_props if "stack_trace" not in p.key]
        del node.metadata_props[:]
        node.metadata_props.extend(keep)
    onnx.save(model, str(path))


# --------------------------------------------------------------------------------------------------------
# Keras models (tf2onnx)
# --------------------------------------------------------------------------------------------------------


def build_keras() -> None:
    import keras
    import tensorflow as tf
    import tf2onnx
    from keras import layers

    def randomize(model: keras.Model) -> None:
        """Non-zero biases (zero ones get folded away by tf2onnx) and non-trivial BatchNorm statistics."""
        rng = np.random.default_rng(SEED)
        for layer in model.layers:
            if isinstance(layer, (layers.Dense, layers.Conv2D)) and layer.use_bias:
                kernel, bias = layer.get_weights()
                layer.set_weights([kernel, (rng.standard_normal(bias.shape) * 0.1).astype(np.float32)])
            elif isinstance(layer, layers.BatchNormalization):
                n = layer.gamma.shape[0]
                layer.set_weights(
                    [
                        (rng.random(n) + 0.5).astype(np.float32),  # gamma
                        (rng.standard_normal(n) * 0.2).astype(np.float32),  # beta
                        (rng.standard_normal(n) * 0.5).astype(np.float32),  # moving_mean
                        (rng.random(n) * 1.5 + 0.25).astype(np.float32),  # moving_variance
                    ]
                )

    def keras_flatten() -> keras.Model:
        return keras.Sequential(
            [
                keras.Input((32, 32, 3), batch_size=1),
                layers.Conv2D(8, 3, activation="relu"),  # 30
                layers.MaxPooling2D(),  # 15
                layers.Conv2D(8, 3, activation="relu"),  # 13
                layers.MaxPooling2D(),  # 6
                layers.Flatten(),  # 6*6*8 = 288 features, HWC order
                layers.Dense(32),
                layers.ReLU(),
                layers.Dense(NUM_CLASSES),
            ]
        )

    def keras_dense_bn() -> keras.Model:
        return keras.Sequential(
            [
                keras.Input((28, 24, 1), batch_size=1),
                layers.Conv2D(8, 3, strides=2, padding="same", activation="relu"),  # 14x12
                layers.MaxPooling2D(),  # 7x6
                layers.Flatten(),  # 7*6*8 = 336 features
                layers.Dense(32),
                layers.BatchNormalization(),
                layers.ReLU(),
                layers.Dense(NUM_CLASSES, activation="softmax"),
            ]
        )

    def keras_gap() -> keras.Model:
        return keras.Sequential(
            [
                keras.Input((32, 32, 3), batch_size=1),
                layers.Conv2D(8, 3, strides=2, padding="same", activation="relu"),
                layers.Conv2D(16, 3, strides=2, padding="same", activation="relu"),
                layers.GlobalAveragePooling2D(),
                layers.Dense(NUM_CLASSES),
            ]
        )

    jobs: list[tuple[str, Callable[[], keras.Model], int]] = [
        ("keras_flatten.onnx", keras_flatten, 13),
        ("keras_dense_bn.onnx", keras_dense_bn, 15),
        ("keras_gap.onnx", keras_gap, 17),
    ]
    records = []
    for file, factory, opset in jobs:
        keras.utils.set_random_seed(SEED)  # seeds python, numpy and tensorflow
        tf.config.experimental.enable_op_determinism()
        model = factory()
        randomize(model)
        model.trainable = False
        spec = (tf.TensorSpec(model.inputs[0].shape, tf.float32, name="input"),)

        @tf.function(input_signature=spec)
        def serve(x: tf.Tensor, model: keras.Model = model) -> dict[str, tf.Tensor]:
            return {"output": model(x, training=False)}

        path = MODELS_DIR / file
        with contextlib.redirect_stdout(io.StringIO()):
            # tf2onnx.convert.from_keras does not support Keras 3 (KeyError on keras_tensor_*); the
            # tf.function route works.
            tf2onnx.convert.from_function(serve, input_signature=spec, opset=opset, output_path=str(path))

        def reference(a: np.ndarray, model: keras.Model = model) -> np.ndarray:
            return np.asarray(model(a, training=False))

        record = verify_and_describe(path, "tf2onnx", reference)
        records.append(record)
        _written(record)
    update_manifest("keras", records)


# --------------------------------------------------------------------------------------------------------


def main(argv: Sequence[str]) -> int:
    target = argv[0] if argv else "all"
    if target == "torch":
        _quiet()
        build_torch()
    elif target == "keras":
        _quiet()
        build_keras()
    elif target == "all":
        for backend, var in (("torch", "FC2CONV_TORCH_PYTHON"), ("keras", "FC2CONV_TF_PYTHON")):
            python = os.environ.get(var, sys.executable)
            subprocess.run([python, str(Path(__file__).resolve()), backend], check=True)
    else:
        print(f"usage: {Path(__file__).name} [torch|keras|all]", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
