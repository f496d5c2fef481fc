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
    """Exporter artefacts that make no difference to the graph go, so that a file's bytes depend on its
    factory alone: graph inputs no node reads (tf2onnx 1.16 leaves them for tensors a Keras 2 layer
    computed eagerly, such as Normalization's mean and variance), the process-wide counter in the traced
    function's name (the graph's doc_string) and in tf2onnx's generated names (``new_shape__25``), whose
    values vary with the order in which its optimizers happen to visit nodes."""
    model = onnx.load(str(path))
    graph = model.graph
    read = {name for node in graph.node for name in node.input}
    for graph_input in [i for i in graph.input if i.name not in read]:
        graph.input.remove(graph_input)
    graph.doc_string = re.sub(r"__inference_(\w+?)_\d+", r"\1", graph.doc_string)
    _renumber_generated_names(graph)
    onnx.save(model, str(path))


GENERATED = re.compile(r"^(.*)__(\d+)(:\d+)?$")


def _renumber_generated_names(graph: onnx.GraphProto) -> None:
    """Number tf2onnx's generated names (``<stem>__<n>``) in order of first appearance in the graph, and
    order the initializers by first use."""
    numbers: dict[str, str] = {}

    def renamed(name: str) -> str:
        match = GENERATED.match(name)
        if not match:
            return name
        stem, number, port = match.groups()
        new = numbers.setdefault(number, str(len(numbers) + 1))
        return f"{stem}__{new}{port or ''}"

    for node in graph.node:
        node.input[:] = [renamed(n) for n in node.input]
        node.output[:] = [renamed(n) for n in node.output]
        node.name = renamed(node.name)
    for tensor in graph.initializer:
        tensor.name = renamed(tensor.name)
    for value in [*graph.input, *graph.output, *graph.value_info]:
        value.name = renamed(value.name)
    # the initializers' order varies too: put them in order of first use
    first_use: dict[str, int] = {}
    for index, node in enumerate(graph.node):
        for name in node.input:
            first_use.setdefault(name, index)
    ordered = sorted(graph.initializer, key=lambda tensor: first_use.get(tensor.name, len(graph.node)))
    graph.ClearField("initializer")
    graph.initializer.extend(ordered)
