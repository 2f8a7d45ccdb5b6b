"""A small CNN: a few (conv3x3 - BN - ReLU) blocks, global average pooling and a linear head.

The Meta-DMoE spec's small-scale nets (widths 16/32/32, so a pooled feature of 32); cheap enough for
second-order meta-training on a CPU. By default the first two blocks are followed by 2x2 max pooling (cheap
on 28x28 digits); ``pool_blocks=0`` is the spec's own net, every block at full resolution, so the pooled
feature averages local 7x7 views. Usage: ``build_model("convnet", num_classes=10, in_channels=1)``
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from shrink.errors import UserError
from shrink.models.registry import MODELS


class ConvNet(nn.Module):
    """``features`` (conv-BN-ReLU blocks, the first ``pool_blocks`` of them but never the last followed by
    2x2 max pooling) then ``fc``.

    Usage: ``ConvNet((16, 32, 32), num_classes=10, in_channels=3, pool_blocks=0)``
    """

    def __init__(self, widths: Sequence[int], num_classes: int = 10, in_channels: int = 3,
                 pool_blocks: int = 2) -> None:
        super().__init__()
        if not widths or min(widths) < 1:
            raise UserError(f"convnet widths must be positive channel counts, got {list(widths)}")
        if pool_blocks < 0:
            raise UserError(f"convnet pool_blocks counts blocks followed by max pooling (0 or more), got {pool_blocks}")
        layers: list[nn.Module] = []
        channels = in_channels
        for index, width in enumerate(widths):
            layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
            if index < len(widths) - 1 and index < pool_blocks:
                layers.append(nn.MaxPool2d(2))
            channels = width
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


@MODELS.register("convnet", aliases=("small-cnn",))
def convnet(num_classes: int = 10, in_channels: int = 3, image_size: int = 32,
            widths: Sequence[int] = (16, 32, 32), pool_blocks: int = 2) -> nn.Module:
    """Build the small CNN; ``image_size`` is accepted for the common builder signature (global pooling).

    Usage: ``convnet(num_classes=10, in_channels=1, widths=[8, 16], pool_blocks=0)``
    """
    return ConvNet(list(widths), num_classes=num_classes, in_channels=in_channels, pool_blocks=pool_blocks)
