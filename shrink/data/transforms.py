"""Image augmentation in plain torch on ``(C, H, W)`` float tensors, and per-dataset normalisation constants.

Randomness comes from torch's global RNG, so the training engine's per-example seeding makes every
augmented batch reproducible and resumable. Usage::

    augment = Compose([RandomCrop(32, padding=4), RandomHorizontalFlip(), Normalize(*DATASET_STATS["cifar10"])])
    augment(torch.rand(3, 32, 32)).shape  # (3, 32, 32)
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

Transform = Callable[[torch.Tensor], torch.Tensor]

# (mean, std) per channel of each training set, on the 0..1 scale.
DATASET_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "mnist": ((0.1307,), (0.3081,)),
    "fashion-mnist": ((0.2860,), (0.3530,)),
}


class Compose:
    """Apply transforms in order. Usage: ``Compose([RandomHorizontalFlip(), Normalize((0.5,), (0.5,))])(x)``."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        for transform in self.transforms:
            image = transform(image)
        return image


class RandomCrop:
    """Zero-pad by ``padding`` on every side, then cut a random ``size`` window (the CIFAR recipe).

    Usage: ``RandomCrop(32, padding=4)(torch.rand(3, 32, 32))``
    """

    def __init__(self, size: int | tuple[int, int], padding: int = 4) -> None:
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        self.padding = padding

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        padded = F.pad(image, [self.padding] * 4)
        height, width = self.size
        top = int(torch.randint(0, padded.shape[-2] - height + 1, ()))
        left = int(torch.randint(0, padded.shape[-1] - width + 1, ()))
        return padded[..., top:top + height, left:left + width]


class RandomHorizontalFlip:
    """Mirror left-right with probability ``p``. Usage: ``RandomHorizontalFlip(0.5)(image)``."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return image.flip(-1) if float(torch.rand(())) < self.p else image


class Normalize:
    """Subtract the per-channel mean and divide by the std. Usage: ``Normalize((0.5,), (0.25,))(image)``."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return (image - self.mean) / self.std
