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


@tf2onnx(
    "keras_preprocessing.onnx",
    (1, 32, 32, 3),
    17,
    "Rescaling and Normalization layers: Mul -> Add -> Mul between the NHWC input and its Transpose",
    issue=10,
)
def keras_preprocessing(inputs: keras.KerasTensor) -> keras.Model:
    return keras.Sequential(
        [
            inputs,
            layers.Rescaling(1 / 127.5, offset=-1),
            layers.Normalization(mean=[0.1, -0.2, 0.3], variance=[1.5, 0.5, 2.0]),
            layers.Conv2D(8, 3, strides=2, activation="relu"),
            layers.Conv2D(16, 3, strides=2, activation="relu"),
            layers.GlobalAveragePooling2D(),
            layers.Dense(NUM_CLASSES),
        ]
    )


@tf2onnx(
    "keras_uint8_input.onnx",
    (1, 32, 32, 3),
    17,
    "uint8 image input: Cast -> Mul -> Add (Rescaling) -> Transpose, flatten head",
    dtype="uint8",
    issue=10,
)
def keras_uint8_input(inputs: keras.KerasTensor) -> keras.Model:
    return keras.Sequential(
        [
            inputs,
            layers.Rescaling(1 / 255),
            layers.Conv2D(8, 3, strides=2, activation="relu"),  # 15
            layers.MaxPooling2D(),  # 7
            layers.Flatten(),
            layers.Dense(NUM_CLASSES),
        ]
    )


@tf2onnx(
    "keras_reduce_mean_op18.onnx",
    (1, 32, 32, 3),
    18,
    "EfficientNetV2 head at opset 18: Transpose -> ReduceMean(axes input [1, 2], keepdims=0) -> MatMul",
    issue=11,
)
def keras_reduce_mean_op18(inputs: keras.KerasTensor) -> keras.Model:
    return keras.Sequential(
        [
            inputs,
            layers.Conv2D(8, 3, strides=2, use_bias=False),
            layers.BatchNormalization(),
            layers.Activation("swish"),
            layers.Conv2D(16, 1, use_bias=False),
            layers.BatchNormalization(),
            layers.Activation("swish"),
            layers.GlobalAveragePooling2D(),
            layers.Dropout(0.2),
            # no bias, as tf2onnx writes a randomly initialised EfficientNetV2 (its zero bias is dropped)
            layers.Dense(NUM_CLASSES, use_bias=False, activation="softmax"),
        ]
    )


@tf2onnx(
    "keras_same_pad_strided.onnx",
    (1, 40, 40, 3),
    17,
    "Xception block: padding='same' on strided Conv/MaxPool as explicit pads; the residual Add lines up at 40 + 4k",
    issue=11,
)
def keras_same_pad_strided(inputs: keras.KerasTensor) -> keras.Model:
    x = layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False)(inputs)
    x = layers.ReLU()(layers.BatchNormalization()(x))
    residual = layers.BatchNormalization()(layers.Conv2D(16, 1, strides=2, padding="same", use_bias=False)(x))
    y = layers.SeparableConv2D(16, 3, padding="same", use_bias=False)(x)
    y = layers.ReLU()(layers.BatchNormalization()(y))
    y = layers.BatchNormalization()(layers.SeparableConv2D(16, 3, padding="same", use_bias=False)(y))
    y = layers.MaxPooling2D(3, strides=2, padding="same")(y)
    x = layers.Add()([residual, y])
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(NUM_CLASSES)(x))


@tf2onnx(
    "keras_mnist_dynbatch.onnx",
    (1, 28, 28, 1),
    13,
    "single-channel MNIST CNN, symbolic batch: the NHWC->NCHW Transpose written as Reshape [-1, 1, 28, 28]",
    dynamic_batch=True,
    issue=11,
)
def keras_mnist(inputs: keras.KerasTensor) -> keras.Model:
    return keras.Sequential(
        [
            inputs,
            layers.Conv2D(8, 3, activation="relu"),  # 26
            layers.MaxPooling2D(),  # 13
            layers.Conv2D(8, 3, activation="relu"),  # 11
            layers.MaxPooling2D(),  # 5
            layers.Flatten(),
            layers.Dense(32, activation="relu"),
            layers.Dense(NUM_CLASSES, activation="softmax"),
        ]
    )


@tf2onnx(
    "keras_mobilenet_v1_head.onnx",
    (1, 32, 32, 3),
    13,
    "Keras MobileNet v1 head: GlobalAveragePooling2D(keepdims) -> Dropout -> 1x1 Conv2D -> Reshape -> softmax",
    issue=11,
)
def keras_mobilenet_v1_head(inputs: keras.KerasTensor) -> keras.Model:
    return keras.Sequential(
        [
            inputs,
            # ReLU, not ReLU6: tf2onnx shares equal Clip bounds under names that vary from run to run
            layers.Conv2D(8, 3, strides=2, use_bias=False),
            layers.BatchNormalization(),
            layers.ReLU(),
            layers.DepthwiseConv2D(3, use_bias=False),
            layers.BatchNormalization(),
            layers.ReLU(),
            layers.Conv2D(16, 1, use_bias=False),
            layers.BatchNormalization(),
            layers.ReLU(),
            layers.GlobalAveragePooling2D(keepdims=True),
            layers.Dropout(1e-3),
            layers.Conv2D(NUM_CLASSES, 1),
            layers.Reshape((NUM_CLASSES,)),
            layers.Activation("softmax"),
        ]
    )


@tf2onnx(
    "keras_one_by_one_concat.onnx",
    (1, 16, 16, 3),
    15,
    "InceptionV3's mixed8: BatchNorm on a map 1x1 at the exported size written as Reshape [-1, C, 1, 1], then a Concat",
    dynamic_batch=True,
    issue=11,
)
def keras_one_by_one_concat(inputs: keras.KerasTensor) -> keras.Model:
    x = layers.Conv2D(8, 3, strides=2)(inputs)  # 7x7
    x = layers.Conv2D(8, 3, strides=2)(x)  # 3x3
    branch = layers.Conv2D(8, 3, strides=2, use_bias=False)(x)  # 1x1 at 16x16 only
    branch = layers.ReLU()(layers.BatchNormalization()(branch))
    pooled = layers.MaxPooling2D(3, strides=2)(x)  # 1x1
    x = layers.Concatenate()([branch, pooled])
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(NUM_CLASSES)(x))


@tf2onnx(
    "keras_dense_on_map.onnx",
    (1, 32, 32, 3),
    13,
    "Dense on the NHWC map before global pooling: Tensordot (Reshape, MatMul, Reshape from Shape) -> ReduceMean",
    dynamic_batch=True,
    issue=11,
)
def keras_dense_on_map(inputs: keras.KerasTensor) -> keras.Model:
    x = layers.Conv2D(8, 3, strides=2, activation="relu")(inputs)  # 15
    x = layers.Conv2D(16, 3, strides=2, activation="relu")(x)  # 7
    x = layers.Dense(12, activation="relu")(x)  # a Dense on [N, 7, 7, 16]: each location alone
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(NUM_CLASSES)(x))


@tf2onnx(
    "keras_dense_on_map_batch1.onnx",
    (1, 32, 32, 3),
    13,
    "Dense on the NHWC map exported with a fixed batch of 1: Tensordot with constant targets [49, 16], [1, 7, 7, 12]",
    issue=11,
)
def keras_dense_on_map_batch1(inputs: keras.KerasTensor) -> keras.Model:
    return keras_dense_on_map(inputs)
