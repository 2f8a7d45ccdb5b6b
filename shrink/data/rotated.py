"""Rotated image domains, DomainBed's Rotated-MNIST protocol: the images are shuffled once (a fixed seed, the
same for every run) and cut into six equal parts, part k rotated by 0, 15, 30, 45, 60 or 75 degrees; the
domain of an example is its angle. ``rotated-mnist`` and ``rotated-fashion-mnist`` read the idx files
(the t10k split becomes the dev split, rotated the same way); no augmentation.

Usage: ``task = load_task_data("rotated-fashion-mnist", max_train_samples=6000)  # domains "0" .. "75"``
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

from shrink.data.domains import DomainDataset
from shrink.data.idx import IDX_DATASETS, read_idx_split
from shrink.data.images import Split, image_task
from shrink.data.task import DATASETS, LoadRequest, TaskData
from shrink.data.transforms import DATASET_STATS

ANGLES = (0, 15, 30, 45, 60, 75)
SHUFFLE_SEED = 0  # the domain of an image is a property of the dataset, not of the run's seed


def rotate_images(images: torch.Tensor, degrees: float, chunk: int = 4096) -> torch.Tensor:
    """uint8 ``(N, C, H, W)`` images rotated counter-clockwise by ``degrees`` about their centre (bilinear,
    black corners). Usage: ``rotate_images(images, 30)``
    """
    if degrees == 0:
        return images.clone()
    angle = math.radians(degrees)
    # Output pixel (x, y) reads input R(-angle)(x, y); y points down, so this turns the picture counter-clockwise.
    theta = torch.tensor([[math.cos(angle), -math.sin(angle), 0.0], [math.sin(angle), math.cos(angle), 0.0]])
    rotated = []
    for block in images.split(chunk):
        grid = F.affine_grid(theta.expand(len(block), 2, 3), list(block.shape), align_corners=False)
        turned = F.grid_sample(block.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        rotated.append(turned.round().clamp_(0, 255).to(torch.uint8))
    return torch.cat(rotated)


def rotated_domains(split: Split, angles: tuple[int, ...] = ANGLES) -> tuple[Split, list[str]]:
    """The images shuffled (fixed seed), cut into ``len(angles)`` parts and part k rotated by ``angles[k]``;
    returns the rotated split and each image's domain name (its angle).

    Usage: ``(images, labels), domains = rotated_domains((images, labels))``
    """
    images, labels = split
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(SHUFFLE_SEED))
    parts = order.tensor_split(len(angles))
    rotated = torch.cat([rotate_images(images[part], angle) for part, angle in zip(parts, angles)])
    domains = [str(angle) for part, angle in zip(parts, angles) for _ in range(len(part))]
    return (rotated, labels[torch.cat(parts)]), domains


def load_rotated(name: str, request: LoadRequest) -> TaskData:
    """Read idx dataset ``name`` and turn it into six rotated domains. Usage: see the module docstring."""
    spec = IDX_DATASETS[name]
    what = "a folder with train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz] and the t10k-* files"
    folder = request.folder(what, spec.default_dir)
    (train, train_domains), (dev, dev_domains) = (rotated_domains(read_idx_split(folder, prefix, what))
                                                  for prefix in ("train", "t10k"))
    task = image_task(f"rotated-{name}", train, dev, None, list(spec.label_names), DATASET_STATS[name], augment=False)
    task.train, task.dev = DomainDataset(task.train, train_domains), DomainDataset(task.dev, dev_domains)
    return task


for _name in IDX_DATASETS:
    DATASETS.add(f"rotated-{_name}", functools.partial(load_rotated, _name),
                 summary=f"{_name} in six rotation domains (0-75 degrees, DomainBed's protocol) for multi-domain "
                         "methods; needs --data-dir like " + _name)
