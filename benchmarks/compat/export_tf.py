"""Build a keras.applications model (weights=None, include_top=True, random BatchNorm statistics and
biases), record its outputs and export it with tf2onnx (default opset, NHWC input, symbolic batch).

Run in the tf venv: `python export_tf.py keras NAME tf2onnx OUTDIR`.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf
from catalog import CLASSES, Arch
from common import inputs, large_reference, run, save_reference, window_map


def build(arch: Arch) -> tf.keras.Model:
    """The application with its own top, or (`include_top=False` with a `pooling`) its pooled
    backbone under a Dense head of our own."""
    factory = getattr(tf.keras.applications, arch.factory)
    if arch.kwargs.get("include_top", True):
        top = {"include_top": True, "classes": CLASSES, "classifier_activation": None}
        return factory(weights=None, input_shape=(*arch.size, 3), **top, **arch.kwargs)
    base = factory(weights=None, input_shape=(*arch.size, 3), **arch.kwargs)
    return tf.keras.Model(base.input, tf.keras.layers.Dense(CLASSES, name="head")(base.output))


def randomize(model: tf.keras.Model, arch: Arch) -> None:
    """He-scaled kernels (Keras' Glorot default shrinks a deep random ReLU network to a constant),
    non-zero biases (tf2onnx drops an all-zero bias), random BatchNorm affine parameters and
    statistics measured on a batch of random images (momentum 0), then perturbed."""
    rng = np.random.default_rng(1)
    norms = []
    for layer in model.layers:
        for var in layer.weights:
            shape, name = tuple(var.shape), var.name.split("/")[-1]
            if name.startswith("depthwise_kernel"):
                var.assign(rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[:2])))
            elif name.startswith("kernel"):
                var.assign(rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[:-1])))
            elif name.startswith("bias") or name.startswith("beta"):
                var.assign(0.1 * rng.standard_normal(shape))
            elif name.startswith("gamma"):
                var.assign(0.2 + 0.3 * rng.random(shape))
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            layer.momentum = 0.0
            norms.append(layer)
    if norms:
        model(rng.standard_normal((8, *arch.size, 3)).astype(np.float32), training=True)
    for layer in norms:
        var = layer.moving_variance.numpy()
        layer.moving_mean.assign(layer.moving_mean.numpy() + 0.05 * np.sqrt(var) * rng.standard_normal(var.shape))
        layer.moving_variance.assign(var * (0.9 + 0.2 * rng.random(var.shape)))


def at_size(model: tf.keras.Model, size: tuple[int, int]) -> tf.keras.Model:
    """The same layers and weights on another input size (Keras pins the input shape it was built at)."""
    clone = tf.keras.models.clone_model(model, input_tensors=tf.keras.Input((*size, 3)))
    clone.set_weights(model.get_weights())
    return clone


def rebuilt_at(model: tf.keras.Model, arch: Arch, size: tuple[int, int]) -> tf.keras.Model:
    """The application built again at another size with the same weights: cloning keeps the input
    shape of a nested model (ConvNeXt's stem), building again does not."""
    clone = build(replace(arch, size=size))
    clone.set_weights(model.get_weights())
    return clone


def plain_grouped_convs(model: tf.keras.Model) -> int:
    """Keras runs a grouped convolution (`groups > 1`: ConvNeXt's depthwise 7x7, RegNet) through an
    XLA-compiled function, since TensorFlow has no CPU kernel for it; tf2onnx keeps that call as a
    PartitionedCall that no runtime loads. The layer's plain `convolution_op` traces to one Conv2D
    that tf2onnx exports as a Conv with `group`. Only the traced graph changes; the framework's
    reference outputs are computed before. Returns how many layers were switched."""
    convs = [m for m in model.submodules if getattr(m, "groups", 1) > 1 and hasattr(m, "convolution_op")]
    for layer in convs:
        layer._jit_compiled_convolution_op = layer.convolution_op
    return len(convs)


def split(model: tf.keras.Model) -> tuple[tf.keras.Model, list]:
    """Backbone up to the layer feeding the Flatten, and the layers from the Flatten on (VGG16)."""
    names = [layer.name for layer in model.layers]
    at = names.index("flatten")
    backbone = tf.keras.Model(model.input, model.layers[at - 1].output)
    return backbone, model.layers[at:]


def export(arch: Arch, exporter: str, out: Path) -> dict:
    import tf2onnx

    tf.keras.utils.set_random_seed(0)
    model = build(arch)
    randomize(model, arch)
    x1, x2, xl = inputs(arch, channels_last=True)
    arrays = {"x_one": x1, "x_small": x2, "x_large": xl}
    arrays["y_small_0"] = model(x2, training=False).numpy()
    arrays["y_one_0"] = model(x1, training=False).numpy()

    def head_of(layers: list):
        def apply(window: np.ndarray) -> np.ndarray:
            y = tf.constant(window)
            for layer in layers:
                y = layer(y, training=False)
            return y.numpy()

        return apply

    def windows() -> np.ndarray:
        backbone, head = split(model)
        window = tuple(backbone(x1, training=False).shape[1:3])
        feats = at_size(backbone, arch.larger)(xl, training=False).numpy()
        return window_map(feats, window, head_of(head), True)

    def forward() -> list[np.ndarray]:
        return [rebuilt_at(model, arch, arch.larger)(xl, training=False).numpy()]

    arrays.update(large_reference(arch, forward, windows))
    save_reference(out, arrays)
    grouped = plain_grouped_convs(model)
    spec = (tf.TensorSpec((None, *arch.size, 3), tf.float32, name="input"),)
    tf2onnx.convert.from_keras(model, input_signature=spec, output_path=str(out / "model.onnx"))
    return {
        "versions": {"tensorflow": tf.__version__, "tf2onnx": tf2onnx.__version__},
        "layout": "NHWC",
        "grouped_convs_traced_plain": grouped,
    }


if __name__ == "__main__":
    run(export)
