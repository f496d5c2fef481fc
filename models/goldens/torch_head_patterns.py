"""Torch goldens with head patterns of issues 10 and 11: batch-pinning Reshapes, no FC layer, pooled-vector heads."""

from __future__ import annotations

import torch
from timm.layers import LayerNorm2d, NormMlpClassifierHead
from torch import nn

from goldens import dynamo, torchscript
from goldens.torch_blocks import NUM_CLASSES, conv_bn


class TimmConvNeXtHead(nn.Module):
    """ConvNeXt stem and block with timm's classifier head (pool -> LayerNorm2d -> flatten -> fc)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 4, 4), LayerNorm2d(16))
        self.block = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.GELU())
        self.head = NormMlpClassifierHead(16, NUM_CLASSES, pool_type="avg", norm_layer=LayerNorm2d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(self.stem(x)))


@dynamo(
    "dynamo_timm_convnext_head.onnx",
    (1, 3, 32, 32),
    "timm ConvNeXt head: Reshape [-1] -> Gather -> LayerNorm -> Reshape [1, C] -> Gemm, batch 1 baked",
    issue=10,
)
def timm_convnext_head() -> nn.Module:
    return TimmConvNeXtHead()


class SqueezeNetTiny(nn.Module):
    """SqueezeNet: fire modules, a 1 x 1 conv classifier, global pool, flatten; no FC layer."""

    class Fire(nn.Module):
        def __init__(self, cin: int, squeeze: int, expand: int) -> None:
            super().__init__()
            self.squeeze = nn.Sequential(nn.Conv2d(cin, squeeze, 1), nn.ReLU())
            self.expand1x1 = nn.Sequential(nn.Conv2d(squeeze, expand, 1), nn.ReLU())
            self.expand3x3 = nn.Sequential(nn.Conv2d(squeeze, expand, 3, padding=1), nn.ReLU())

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.squeeze(x)
            return torch.cat([self.expand1x1(x), self.expand3x3(x)], 1)

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, 2), nn.ReLU(), nn.MaxPool2d(3, 2, ceil_mode=True),
            self.Fire(16, 4, 8), self.Fire(16, 4, 8), nn.MaxPool2d(3, 2, ceil_mode=True), self.Fire(16, 8, 16),
        )  # fmt: skip
        self.classifier = nn.Sequential(
            nn.Dropout(0.5), nn.Conv2d(32, NUM_CLASSES, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.classifier(self.features(x)), 1)


@dynamo(
    "dynamo_squeezenet.onnx",
    (1, 3, 48, 48),
    "SqueezeNet, no FC layer: conv classifier -> ReduceMean -> final Reshape [1, 10] bakes the batch",
    issue=10,
)
def squeezenet() -> nn.Module:
    return SqueezeNetTiny()


class DLAHead(nn.Module):
    """DLA/DPN: global pool, a 1 x 1 conv as classifier, then ``x.view(x.size(0), -1)``."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(conv_bn(3, 8, 3, 2), conv_bn(8, 16, 3, 2))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Conv2d(16, NUM_CLASSES, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc(self.avgpool(self.features(x)))
        return x.view(x.size(0), -1)


@dynamo(
    "dynamo_dla_head.onnx",
    (1, 3, 32, 32),
    "DLA/DPN, no FC layer: ReduceMean -> 1x1 Conv classifier -> final Reshape [1, -1] bakes the batch",
    issue=10,
)
def dla_head() -> nn.Module:
    return DLAHead()


class PooledLayerNormHead(nn.Module):
    """ConvNeXt classifier written as ``fc(norm(x.mean([-2, -1])))``: a LayerNorm on the pooled vector."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 16, 4, 4), nn.GELU(), nn.Conv2d(16, 16, 3, padding=1))
        self.norm = nn.LayerNorm(16, eps=1e-6)
        self.fc = nn.Linear(16, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(self.features(x).mean([-2, -1])))


@torchscript(
    "ts_pooled_layernorm_head.onnx",
    (1, 3, 32, 32),
    "LayerNorm on the pooled vector: ReduceMean(keepdims=0) -> LayerNormalization -> Gemm",
    issue=11,
)
def pooled_layernorm_head() -> nn.Module:
    return PooledLayerNormHead()


class PoolConvHead(nn.Module):
    """timm MobileNetV3 / GhostNet / LCNet: global pool -> 1 x 1 conv -> activation -> flatten -> fc."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(conv_bn(3, 8, 3, 2, nn.Hardswish), conv_bn(8, 16, 3, 2, nn.Hardswish))
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_head = nn.Conv2d(16, 32, 1)
        self.act = nn.Hardswish()
        self.classifier = nn.Linear(32, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.conv_head(self.global_pool(self.features(x))))
        return self.classifier(torch.flatten(x, 1))


@torchscript(
    "ts_pool_conv_head.onnx",
    (1, 3, 32, 32),
    "pointwise layers between pool and FC: GlobalAveragePool -> 1x1 Conv -> HardSwish -> Flatten -> Gemm",
    issue=11,
)
def pool_conv_head() -> nn.Module:
    return PoolConvHead()
