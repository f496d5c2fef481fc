"""Torch goldens whose input is preprocessed inside the graph before the first Conv."""

from __future__ import annotations

import torch
from torch import nn

from goldens import both_torch_exporters
from goldens.torch_blocks import NUM_CLASSES, conv_bn


class TransformInput(nn.Module):
    """torchvision GoogLeNet / Inception v3 with `transform_input=True` (their pretrained default):
    each channel gathered, rescaled and unsqueezed, then concatenated again."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(conv_bn(3, 8, 3, 2), conv_bn(8, 16, 3, 2), conv_bn(16, 16))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_ch0 = torch.unsqueeze(x[:, 0], 1) * (0.229 / 0.5) + (0.485 - 0.5) / 0.5
        x_ch1 = torch.unsqueeze(x[:, 1], 1) * (0.224 / 0.5) + (0.456 - 0.5) / 0.5
        x_ch2 = torch.unsqueeze(x[:, 2], 1) * (0.225 / 0.5) + (0.406 - 0.5) / 0.5
        x = torch.cat((x_ch0, x_ch1, x_ch2), 1)
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


@both_torch_exporters(
    "transform_input",
    (1, 3, 32, 32),
    "torchvision's transform_input: the channel axis gathered, unsqueezed and concatenated before the first Conv",
    issue=11,
)
def transform_input() -> nn.Module:
    return TransformInput()
