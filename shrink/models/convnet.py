"""A small CNN: a few (conv3x3 - BN - ReLU) blocks, global average pooling and a linear head.

The Meta-DMoE spec's small-scale nets (widths 16/32/32, so a pooled feature of 32); cheap enough for
second-order meta-training on a CPU. Usage: ``build_model("convnet", num_classes=10, in_channels=1)``
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from shrink.errors import UserError
from shrink.models.registry import MODELS


class ConvNet(nn.Module):
    """``features`` (conv-BN-ReLU blocks, the first two followed by 2x2 max pooling) then ``fc``.

    Usage: ``ConvNet((16, 32, 32), num_classes=10, in_channels=3)``
    """

    def __init__(self, widths: Sequence[int], num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        if not widths or min(widths) < 1:
            raise UserError(f"convnet widths must be positive channel counts, got {list(widths)}")
        layers: list[nn.Module] = []
        channels = in_channels
        for index, width in enumerate(widths):
            layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
            if index < len(widths) - 1 and index < 2:
                layers.append(nn.MaxPool2d(2))
            channels = width
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


@MODELS.register("convnet", aliases=("small-cnn",))
def convnet(num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
            widths: Sequence[int] = (16, 32, 32)) -> nn.Module:
    """Build the small CNN; ``image_size`` is accepted for the common builder signature (global pooling).

    Usage: ``convnet(num_classes=10, in_channels=1, widths=[8, 16])``
    """
    return ConvNet(list(widths), num_classes=num_classes, in_channels=in_channels)
