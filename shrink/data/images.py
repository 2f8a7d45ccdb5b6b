"""Image datasets held as uint8 tensors, and the arrays -> TaskData step shared by every image source.

Images stay uint8 ``(N, C, H, W)`` in memory and become normalised floats one at a time. Usage::

    task = image_task("mnist", (train_x, train_y), (test_x, test_y), None, names, DATASET_STATS["mnist"],
                      augment=True)
    task.train[0]["pixel_values"].shape  # (1, 28, 28)
"""
from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from shrink.data.task import TaskData
from shrink.data.transforms import Compose, Normalize, RandomCrop, RandomHorizontalFlip, Transform
from shrink.errors import UserError

Split = tuple[torch.Tensor, torch.Tensor]  # uint8 images (N, C, H, W), int64 labels (N,)
Stats = tuple[Sequence[float], Sequence[float]]
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")


class ImageDataset(Dataset):
    """``{"pixel_values": FloatTensor[C, H, W], "label": int}`` examples from uint8 images.

    Usage: ``ImageDataset(images, labels, Normalize((0.5,), (0.25,)))[0]["pixel_values"]``
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Transform) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4 or len(images) != len(labels):
            raise ValueError("images must be uint8 (N, C, H, W) with one label each")
        self.images, self.labels, self.transform = images, labels.long(), transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        pixels = self.images[index].float().div_(255)
        return {"pixel_values": self.transform(pixels), "label": int(self.labels[index])}


def image_task(name: str, train: Split, dev: Split, test: Split | None, label_names: list[str],
               stats: Stats | None, augment: bool, flip: bool = True) -> TaskData:
    """An image classification TaskData; ``stats`` None measures mean/std on the training images.

    Training images get a padded random crop (and a horizontal flip when ``flip``) when ``augment``.
    Usage: ``image_task("cifar10", train, test, None, names, DATASET_STATS["cifar10"], augment=True)``
    """
    splits = [split for split in (train, dev, test) if split is not None]
    for images, labels in splits:
        if images.shape[1:] != train[0].shape[1:]:
            raise UserError(f"{name}: image sizes differ between splits ({tuple(images.shape[1:])} vs "
                            f"{tuple(train[0].shape[1:])})")
        if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= len(label_names)):
            raise UserError(f"{name}: labels must lie in 0..{len(label_names) - 1}, found "
                            f"{int(labels.min())}..{int(labels.max())}")
    normalize = Normalize(*(stats or channel_stats(train[0])))
    channels, height, width = train[0].shape[1:]
    augmentation: list[Transform] = []
    if augment:
        augmentation.append(RandomCrop((height, width), padding=max(1, round(height / 8))))
        if flip:
            augmentation.append(RandomHorizontalFlip())
    return TaskData(
        name=name, modality="image",
        train=ImageDataset(*train, Compose([*augmentation, normalize])),
        dev=ImageDataset(*dev, normalize),
        test=None if test is None else ImageDataset(*test, normalize),
        num_labels=len(label_names), is_regression=False, metrics=("accuracy",), label_names=list(label_names),
        image_shape=(channels, height, width),
    )


def channel_stats(images: torch.Tensor, chunk: int = 1024) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 ``(N, C, H, W)`` images on the 0..1 scale, in chunks to save memory.

    Usage: ``mean, std = channel_stats(train_images)``
    """
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for block in images.split(chunk):
        values = block.to(torch.float64).div_(255)
        total += values.sum(dim=(0, 2, 3))
        squares += values.square().sum(dim=(0, 2, 3))
    count = images.numel() / images.shape[1]
    mean = total / count
    # A constant channel would divide by zero; one grey level is the smallest spread that means anything.
    std = (squares / count - mean.square()).clamp_min(0).sqrt().clamp_min(1 / 255)
    return tuple(mean.tolist()), tuple(std.tolist())


def stack_pil(images: Iterable[Image.Image], size: Sequence[int] | None = None,
              channels: int | None = None) -> torch.Tensor:
    """Stack PIL images into uint8 ``(N, C, H, W)`` with 1 or 3 ``channels`` and ``size`` (height, width).

    Unset, they follow the first image: grayscale if it is (RGB otherwise), and its size.
    Usage: ``stack_pil([Image.open(p) for p in paths], size=(32, 32))``
    """
    arrays: list[np.ndarray] = []
    mode = {None: None, 1: "L", 3: "RGB"}[channels]
    for image in images:
        if not arrays:
            mode = mode or ("L" if image.mode in GRAY_MODES else "RGB")
            size = tuple(size or (image.height, image.width))
        image = image.convert(mode)
        if (image.height, image.width) != size:
            image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        arrays.append(np.asarray(image, dtype=np.uint8))
    if not arrays:
        raise UserError("no images to read")
    stacked = torch.from_numpy(np.stack(arrays))
    return stacked.unsqueeze(1) if stacked.dim() == 3 else stacked.permute(0, 3, 1, 2).contiguous()


def parse_dims(spec: str | None, count: int, name: str, example: str) -> tuple[int, ...] | None:
    """Read ``"1x16x16"`` / ``"32x32"`` / ``"32"`` (a square) from a dataset name's spec; None when absent.

    Usage: ``parse_dims("1x16x16", 3, "synthetic-image", "1x16x16") == (1, 16, 16)``
    """
    if spec is None:
        return None
    parts = spec.lower().split("x")
    if len(parts) == 1 and count == 2:
        parts *= 2
    try:
        dims = tuple(int(part) for part in parts)
    except ValueError:
        dims = ()
    if len(dims) != count or min(dims) < 1:
        raise UserError(f"cannot read the size '{spec}' of {name}; write it like {name}:{example}")
    return dims
