"""Torch goldens whose backbone holds the Reshapes, Pads and fusions of issues 10 and 11.

Each has a plain FC head; what it reproduces sits in the body.
"""

from __future__ import annotations

import torch
import torchvision
from timm.layers import EcaModule, ScaledStdConv2d, StdConv2d, create_conv2d, create_pool2d
from torch import nn

from goldens import dynamo, torchscript
from goldens.torch_blocks import NUM_CLASSES, Classifier, conv_bn


class PoolFormerBlock(nn.Module):
    """PoolFormer: GroupNorm with one group, then average pooling as token mixer."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(1, channels)
        self.pool = nn.AvgPool2d(3, 1, 1, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(x)
        return x + self.pool(y) - y


@dynamo(
    "dynamo_groupnorm1.onnx",
    (1, 3, 32, 32),
    "GroupNorm(1, C) through dynamo: Reshape [0, 1, -1] -> InstanceNormalization -> Reshape [1, C, H, W] as exported",
    issue=11,
)
@torchscript(
    "ts_groupnorm1.onnx",
    (1, 3, 32, 32),
    "GroupNorm(1, C) (PoolFormer): Reshape [0, 1, -1] -> InstanceNormalization -> Reshape from Shape",
    issue=11,
)
def groupnorm1() -> nn.Module:
    features = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), PoolFormerBlock(8))
    return Classifier(features, nn.AdaptiveAvgPool2d(1), nn.Linear(8, NUM_CLASSES))


@dynamo(
    "dynamo_eca.onnx",
    (1, 3, 32, 32),
    "timm ECA through dynamo: expand_as as Expand to the exported [1, C, H, W], Reshape [1, -1, 1, 1]",
    issue=11,
)
@torchscript(
    "ts_eca.onnx",
    (1, 3, 32, 32),
    "timm ECA attention: ReduceMean -> Reshape [1, 1, -1] -> Conv1d -> Sigmoid -> Reshape [1, -1, 1, 1]",
    issue=11,
)
def eca() -> nn.Module:
    features = nn.Sequential(conv_bn(3, 16, 3, 2), EcaModule(16), conv_bn(16, 16, 3, 2))
    return Classifier(features, nn.AdaptiveAvgPool2d(1), nn.Linear(16, NUM_CLASSES))


@torchscript(
    "ts_weight_standardization.onnx",
    (1, 3, 32, 32),
    "timm ScaledStdConv2d/StdConv2d (NF-ResNet, BiT): conv weights standardised at run time, Reshape [C, C, k, k]",
    issue=11,
)
def weight_standardization() -> nn.Module:
    features = nn.Sequential(ScaledStdConv2d(3, 8, 3, 2, 1), nn.ReLU(), StdConv2d(8, 16, 3, 2, 1), nn.ReLU())
    return Classifier(features, nn.AdaptiveAvgPool2d(1), nn.Linear(16, NUM_CLASSES))


@torchscript(
    "ts_shufflenetv2.onnx",
    (1, 3, 64, 64),
    "torchvision ShuffleNetV2: chunk as Slices computed from Shape, then channel-shuffle Reshapes [1, 2, C/2, H, W]",
    issue=11,
)
def shufflenetv2() -> nn.Module:
    return torchvision.models.ShuffleNetV2([2, 2, 2], [8, 8, 16, 32, 32], num_classes=NUM_CLASSES)


@torchscript(
    "ts_timm_same_pad.onnx",
    (1, 3, 40, 40),
    'timm TF-"same" padding (Conv2dSame, MaxPool2dSame): Pad sizes from Shape, then a flatten head on a 5x5 map',
    issue=11,
)
def timm_same_pad() -> nn.Module:
    features = nn.Sequential(
        create_conv2d(3, 8, 3, stride=2, padding="same"), nn.BatchNorm2d(8), nn.ReLU(),  # 20
        create_pool2d("max", 3, stride=2, padding="same"),  # 10
        create_conv2d(8, 16, 3, stride=2, padding="same"), nn.BatchNorm2d(16), nn.ReLU(),  # 5
    )  # fmt: skip
    return Classifier(features, nn.Identity(), nn.Linear(16 * 5 * 5, NUM_CLASSES))


class TwoBranchFusion(nn.Module):
    """HRNet: a 1/2- and a 1/4-resolution branch exchange features (nearest upsample and strided conv),
    then the classification head downsamples the high branch into the low one. The upsampled map has the
    high branch's size only when that size is even, so the backbone runs at the exported size + k * 4."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn(3, 8, 3, 2)  # 1/2
        self.high = conv_bn(8, 8)
        self.low = nn.Sequential(conv_bn(8, 16, 3, 2), conv_bn(16, 16))  # 1/4
        self.low_to_high = nn.Sequential(
            nn.Conv2d(16, 8, 1, bias=False), nn.BatchNorm2d(8), nn.Upsample(scale_factor=2, mode="nearest")
        )
        self.high_to_low = nn.Sequential(nn.Conv2d(8, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16))
        self.head_down = conv_bn(8, 16, 3, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        high, low = self.high(x), self.low(x)
        high, low = torch.relu(high + self.low_to_high(low)), torch.relu(low + self.high_to_low(high))
        y = low + self.head_down(high)
        return self.fc(torch.flatten(self.pool(y), 1))


@torchscript(
    "ts_hrnet_two_branch.onnx",
    (1, 3, 32, 32),
    "HRNet-like two-branch fusion with a nearest Resize: runs only where both branches line up (32 + 4k)",
    issue=10,
)
def hrnet_two_branch() -> nn.Module:
    return TwoBranchFusion()
