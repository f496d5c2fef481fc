"""Build a registered Keras golden model with seeded weights and export it through tf2onnx."""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import onnx
import tensorflow as tf
import tf2onnx
from keras import layers

from goldens import Golden

SEED = 0
MODULES = ("goldens.keras_models",)


def randomize(model: keras.Model) -> None:
    """Non-zero biases (zero ones get folded away by tf2onnx) and non-trivial BatchNorm statistics."""
    rng = np.random.default_rng(SEED)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights(
                [
                    (rng.random(n) + 0.5).astype(np.float32),  # gamma
                    (rng.standard_normal(n) * 0.2).astype(np.float32),  # beta
                    (rng.standard_normal(n) * 0.5).astype(np.float32),  # moving_mean
                    (rng.random(n) * 1.5 + 0.25).astype(np.float32),  # moving_variance
                ]
            )
        elif getattr(layer, "use_bias", False) and layer.weights:
            *kernels, bias = layer.get_weights()
            layer.set_weights([*kernels, (rng.standard_normal(bias.shape) * 0.1).astype(np.float32)])


def export(golden: Golden, path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """Seed, build, export ``golden`` to ``path``; return the model's forward pass on numpy arrays."""
    # layer names and tf2onnx's name counter restart, so a file's bytes do not depend on what ran before
    keras.backend.clear_session()
    tf2onnx.utils.INTERNAL_NAME = 1
    keras.utils.set_random_seed(SEED)  # seeds python, numpy and tensorflow
    tf.config.experimental.enable_op_determinism()
    batch = None if golden.dynamic_batch else golden.shape[0]
    model = golden.factory(keras.Input(golden.shape[1:], batch_size=batch, dtype=golden.dtype))
    randomize(model)
    model.trainable = False
    spec = (tf.TensorSpec((batch, *golden.shape[1:]), golden.dtype, name="input"),)

    @tf.function(input_signature=spec)
    def serve(x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"output": model(x, training=False)}

    with contextlib.redirect_stdout(io.StringIO()):
        # tf2onnx.convert.from_keras does not support Keras 3 (KeyError on keras_tensor_*); the
        # tf.function route works with Keras 2 and 3.
        tf2onnx.convert.from_function(
            serve, input_signature=spec, opset=golden.opset, output_path=str(path), **golden.options
        )
    _tidy(path)

    def forward(a: np.ndarray) -> np.ndarray:
        return np.asarray(model(a, training=False))

    return forward


def _tidy(path: Path) -> None:
    """Two exporter artefacts go. tf2onnx 1.16 turns tensors a Keras 2 layer computed eagerly
    (Normalization's mean and variance) into graph inputs although it folded them into constants and no
    node reads them; and it writes the traced function's name, which ends in a process-wide counter, into
    the graph's doc_string, so a file's bytes would depend on what ran before it."""
    model = onnx.load(str(path))
    read = {name for node in model.graph.node for name in node.input}
    for graph_input in [i for i in model.graph.input if i.name not in read]:
        model.graph.input.remove(graph_input)
    model.graph.doc_string = re.sub(r"__inference_(\w+?)_\d+", r"\1", model.graph.doc_string)
    onnx.save(model, str(path))
