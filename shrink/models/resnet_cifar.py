"""CIFAR ResNets (He et al. 2016, section 4.2): resnet20/32/44/56/110.

Three stages of BasicBlocks (widths 16/32/64, ``(depth - 2) / 6`` blocks each), a 1x1 conv + BN shortcut
only where the shape changes. resnet56 is Torch-Pruning's benchmark model (855,770 parameters).

Usage::

    from shrink.models import build_model
    model = build_model("resnet56", num_classes=10)
"""
from __future__ import annotations

import functools

import torch
from torch import nn

from shrink.errors import UserError
from shrink.models.registry import MODELS

STAGE_WIDTHS = (16, 32, 64)


def conv_bn(in_channels: int, out_channels: int, kernel_size: int, stride: int) -> nn.Sequential:
    """A bias-free conv followed by BatchNorm. Usage: ``conv_bn(16, 32, 3, stride=2)``."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
    )


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a residual connection. Usage: ``BasicBlock(16, 32, stride=2)``.

    ReLUs are modules (hooks and pruners see them) and not in-place (a hook keeps the BN output it saw).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu2 = nn.ReLU()
        changes_shape = stride != 1 or in_channels != out_channels
        self.downsample = conv_bn(in_channels, out_channels, 1, stride) if changes_shape else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + identity)


class CifarResNet(nn.Module):
    """The CIFAR ResNet of a given depth (6n+2). Usage: ``CifarResNet(depth=20, num_classes=10)``."""

    def __init__(self, depth: int, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise UserError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, 110), got {depth}")
        blocks = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, STAGE_WIDTHS[0], 3, 1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(STAGE_WIDTHS[0])
        self.relu = nn.ReLU()
        stages = []
        width = STAGE_WIDTHS[0]
        for index, out_width in enumerate(STAGE_WIDTHS):
            stride = 1 if index == 0 else 2
            first = BasicBlock(width, out_width, stride)
            stages.append(nn.Sequential(first, *(BasicBlock(out_width, out_width) for _ in range(blocks - 1))))
            width = out_width
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def cifar_resnet(num_classes: int = 10, in_channels: int = 3, image_size: int = 32, depth: int = 56) -> nn.Module:
    """Build a CIFAR ResNet; ``image_size`` is accepted for the common builder signature (global pooling).

    Usage: ``cifar_resnet(num_classes=100, depth=110)``
    """
    return CifarResNet(depth, num_classes=num_classes, in_channels=in_channels)


for _depth in (20, 32, 44, 56, 110):
    MODELS.add(f"resnet{_depth}", functools.partial(cifar_resnet, depth=_depth))
