"""VGG with BatchNorm in its common CIFAR form: conv-BN-ReLU stacks, max pooling, global pool, one Linear.

Usage::

    from shrink.models import build_model
    model = build_model("vgg19_bn", num_classes=100)
"""
from __future__ import annotations

import functools

import torch
from torch import nn

from shrink.errors import UserError
from shrink.models.registry import MODELS

POOL = "M"

# Conv widths per depth; POOL marks a 2x2 max pool (Simonyan & Zisserman 2015, table 1).
VGG_LAYOUTS: dict[int, list[int | str]] = {
    11: [64, POOL, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512],
    13: [64, 64, POOL, 128, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512],
    16: [64, 64, POOL, 128, 128, POOL, 256, 256, 256, POOL, 512, 512, 512, POOL, 512, 512, 512],
    19: [64, 64, POOL, 128, 128, POOL, 256, 256, 256, 256, POOL, 512, 512, 512, 512, POOL, 512, 512, 512, 512],
}


class VGG(nn.Module):
    """VGG-BN features + global average pool + ``Linear(512, num_classes)``.

    Usage: ``VGG(VGG_LAYOUTS[19], num_classes=10)``
    """

    def __init__(self, layout: list[int | str], num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_channels
        for item in layout:
            if item == POOL:
                layers.append(nn.MaxPool2d(2))
                continue
            layers += [nn.Conv2d(width, int(item), 3, padding=1), nn.BatchNorm2d(int(item)), nn.ReLU()]
            width = int(item)
        self.features = nn.Sequential(*layers)
        # Global pooling makes the classifier independent of the input size (1x1 at 32x32 anyway).
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def vgg_bn(num_classes: int = 10, in_channels: int = 3, image_size: int = 32, depth: int = 19) -> nn.Module:
    """Build VGG-``depth``-BN; ``image_size`` is accepted for the common builder signature.

    Usage: ``vgg_bn(num_classes=10, depth=16)``
    """
    if depth not in VGG_LAYOUTS:
        raise UserError(f"VGG depth must be one of {sorted(VGG_LAYOUTS)}, got {depth}")
    return VGG(VGG_LAYOUTS[depth], num_classes=num_classes, in_channels=in_channels)


for _depth in VGG_LAYOUTS:
    MODELS.add(f"vgg{_depth}_bn", functools.partial(vgg_bn, depth=_depth), aliases=(f"vgg{_depth}",))
