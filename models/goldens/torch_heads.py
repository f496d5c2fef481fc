"""Torch goldens with the FC heads the tool rewrites: one factory per model."""

from __future__ import annotations

import torch
from torch import nn

from goldens import both_torch_exporters, dynamo, torchscript
from goldens.torch_blocks import NUM_CLASSES, BasicBlock, LayerNorm2d, conv_bn


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


@torchscript(
    "question_mlp.onnx", (1, 3), "canonical example: Linear(3,2), W=[[0,1,1],[2,3,5]], b=[8,13]", dynamic_batch=True
)
def question_mlp() -> nn.Module:
    return QuestionMLP()


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


@torchscript("ts_lenet5.onnx", (1, 1, 32, 32), "LeNet-5: flatten of a 16x5x5 map, three chained FCs")
def lenet5() -> nn.Module:
    return LeNet5()


@torchscript(
    "ts_lenet_softmax_op11.onnx", (1, 1, 32, 32), "opset 11: Softmax with the old coerce-to-2D semantics", opset=11
)
def lenet_softmax() -> nn.Module:
    return LeNet5(hidden=(32, 16), softmax=True)


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


@torchscript("ts_vgg_small.onnx", (1, 3, 64, 64), "VGG fc6/fc7/fc8 on a 16x4x4 map (Dropout removed in eval)")
@torchscript("ts_vgg_small_dynbatch.onnx", (1, 3, 64, 64), "VGG with a dynamic batch axis", dynamic_batch=True)
def vgg_small() -> nn.Module:
    return VGGSmall()


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


@both_torch_exporters("resnet_gap", (1, 3, 32, 32), "ResNet GAP head (BN folded into the convs)")
def resnet_gap() -> nn.Module:
    return ResNetGAP()


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


@both_torch_exporters("convnext_head", (1, 3, 32, 32), "timm/ConvNeXt LayerNorm2d between pool and FC")
def convnext_head() -> nn.Module:
    return ConvNeXtHead()


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


@both_torch_exporters("mobilenetv3_head", (1, 3, 48, 40), "torchvision MobileNetV3 classifier, non-square input")
def mobilenetv3_head() -> nn.Module:
    return MobileNetV3Head()


class MeanHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(conv_bn(3, 8, 3, 2), conv_bn(8, 16, 3, 2))
        self.fc = nn.Linear(16, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean([2, 3]))


@both_torch_exporters("mean_head", (1, 3, 48, 40), "x.mean([2,3]): axes as attribute (opset 17) or input (opset 18)")
def mean_head() -> nn.Module:
    return MeanHead()


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


@both_torch_exporters("view_head", (1, 3, 48, 40), "x.view(x.size(0), -1) on an 8x6x5 map")
@torchscript(
    "ts_view_head_dynbatch.onnx", (1, 3, 48, 40), "dynamic-batch view with a shape computed from Shape",
    dynamic_batch=True,
)  # fmt: skip
@dynamo("dynamo_view_head_dynbatch.onnx", (1, 3, 48, 40), "dynamic-batch view: Reshape [-1, 240]", dynamic_batch=True)
def view_head() -> nn.Module:
    return ViewHead()


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


@both_torch_exporters(
    "shufflenet", (1, 3, 32, 32), "channel shuffle (Reshape 5-D -> Transpose -> Reshape) in the body, not the head"
)
def shufflenet() -> nn.Module:
    return ShuffleNetSmall()


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


@both_torch_exporters("bn1d_head", (1, 3, 32, 32), "BatchNorm1d after an FC (dynamo folds the BN into the Gemm)")
def bn1d_head() -> nn.Module:
    return BN1dHead()


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


@torchscript("ts_colour_demo.onnx", (1, 3, 32, 32), "hand-set colour classifier for the heatmap demo on example.png")
def colour_demo() -> nn.Module:
    return ColourDemo()
