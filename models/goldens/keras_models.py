"""Keras goldens (NHWC input, exported through tf2onnx): one factory per model.

Each factory receives the model's ``keras.Input`` (shape, batch and type come from the registry).
"""

from __future__ import annotations

import keras
from keras import layers

from goldens import tf2onnx

NUM_CLASSES = 10


@tf2onnx("keras_flatten.onnx", (1, 32, 32, 3), 13, "Keras Flatten flattens in HWC order; Gemm weights stored [K, N]")
def keras_flatten(inputs: keras.KerasTensor) -> keras.Model:
    return keras.Sequential(
        [
            inputs,
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


@tf2onnx("keras_dense_bn.onnx", (1, 28, 24, 1), 15, "Keras BatchNormalization after Dense, lowered to Mul/Add")
def keras_dense_bn(inputs: keras.KerasTensor) -> keras.Model:
    return keras.Sequential(
        [
            inputs,
            layers.Conv2D(8, 3, strides=2, padding="same", activation="relu"),  # 14x12
            layers.MaxPooling2D(),  # 7x6
            layers.Flatten(),  # 7*6*8 = 336 features
            layers.Dense(32),
            layers.BatchNormalization(),
            layers.ReLU(),
            layers.Dense(NUM_CLASSES, activation="softmax"),
        ]
    )


@tf2onnx("keras_gap.onnx", (1, 32, 32, 3), 17, "Keras GlobalAveragePooling2D: GlobalAveragePool -> Squeeze")
def keras_gap(inputs: keras.KerasTensor) -> keras.Model:
    return keras.Sequential(
        [
            inputs,
            layers.Conv2D(8, 3, strides=2, padding="same", activation="relu"),
            layers.Conv2D(16, 3, strides=2, padding="same", activation="relu"),
            layers.GlobalAveragePooling2D(),
            layers.Dense(NUM_CLASSES),
        ]
    )
