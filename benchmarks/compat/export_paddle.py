"""Build a paddle.vision model (pretrained=False, random BatchNorm statistics), record its outputs
and export it with paddle2onnx (opset 13, symbolic batch).

Run in the paddle venv: `python export_paddle.py paddle NAME paddle2onnx OUTDIR`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import paddle
import paddle.nn.functional as F
from catalog import CLASSES, Arch
from common import inputs, large_reference, run, save_reference, window_map
from paddle.static import InputSpec

OPSET = 13


def build(arch: Arch) -> paddle.nn.Layer:
    paddle.seed(0)
    model = getattr(paddle.vision.models, arch.factory)(num_classes=CLASSES, **arch.kwargs)
    randomize_norms(model, arch)
    return model


def randomize_norms(model: paddle.nn.Layer, arch: Arch) -> None:
    """Random BatchNorm affine parameters, statistics measured on a batch of random images (momentum
    0: one batch gives its own statistics), then perturbed; see export_torch.randomize_norms."""
    rng = np.random.default_rng(1)
    norms = [layer for layer in model.sublayers() if isinstance(layer, paddle.nn.layer.norm._BatchNormBase)]
    for layer in norms:
        c = layer._mean.shape[0]
        if layer.weight is not None:
            layer.weight.set_value((0.2 + 0.3 * rng.random(c)).astype(np.float32))
            layer.bias.set_value((0.1 * rng.standard_normal(c)).astype(np.float32))
        layer._momentum = 0.0
    if norms:
        model.train()
        with paddle.no_grad():
            model(paddle.to_tensor(rng.standard_normal((8, 3, *arch.size)).astype(np.float32)))
    for layer in norms:
        c = layer._mean.shape[0]
        var = layer._variance.numpy()
        layer._mean.set_value((layer._mean.numpy() + 0.05 * np.sqrt(var) * rng.standard_normal(c)).astype(np.float32))
        layer._variance.set_value((var * (0.9 + 0.2 * rng.random(c))).astype(np.float32))
    model.eval()


def split(arch: Arch, model: paddle.nn.Layer):
    """Backbone and flattened head, written out as the model's own forward does (AlexNet, VGG)."""
    if arch.name == "alexnet":

        def backbone(x):
            x = model._conv2(model._conv1(x))
            x = F.relu(model._conv4(F.relu(model._conv3(x))))
            return model._conv5(x)

        def head(f):  # inference Dropout ("downscale_in_infer") scales by 1 - p: part of the head
            x = F.relu(model._fc6(model._drop1(paddle.flatten(f, 1))))
            return model._fc8(F.relu(model._fc7(model._drop2(x))))

        return backbone, head
    return model.features, lambda f: model.classifier(paddle.flatten(f, 1))


def outputs(result) -> list[np.ndarray]:
    items = result if isinstance(result, (tuple, list)) else [result]
    return [t.numpy().astype(np.float32) for t in items]


def export(arch: Arch, exporter: str, out: Path) -> dict:
    import paddle2onnx

    model = build(arch)
    x1, x2, xl = inputs(arch, channels_last=False)
    arrays = {"x_one": x1, "x_small": x2, "x_large": xl}
    with paddle.no_grad():
        arrays.update({f"y_small_{k}": y for k, y in enumerate(outputs(model(paddle.to_tensor(x2))))})
        arrays.update({f"y_one_{k}": y for k, y in enumerate(outputs(model(paddle.to_tensor(x1))))})

        def windows() -> np.ndarray:
            backbone, head = split(arch, model)
            window = tuple(backbone(paddle.to_tensor(x1)).shape[2:4])
            feats = backbone(paddle.to_tensor(xl)).numpy()
            return window_map(feats, window, lambda f: head(paddle.to_tensor(f)).numpy(), False)

        arrays.update(large_reference(arch, lambda: outputs(model(paddle.to_tensor(xl))), windows))
    save_reference(out, arrays)
    spec = [InputSpec([None, 3, *arch.size], "float32", "x")]
    paddle.onnx.export(model, str(out / "model"), input_spec=spec, opset_version=OPSET)
    return {"versions": {"paddle": paddle.__version__, "paddle2onnx": paddle2onnx.__version__}, "layout": "NCHW"}


if __name__ == "__main__":
    run(export)
