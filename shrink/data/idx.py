"""MNIST and Fashion-MNIST from their idx files (plain or ``.gz``), parsed with numpy.

An idx file is a big-endian header (two zero bytes, a type code, the number of dimensions, one int32
per dimension) and the raw values. The official t10k split serves as the dev split. Usage::

    task = load_task_data("fashion-mnist")  # /usr/share/datasets/fashion-mnist when present
"""
from __future__ import annotations

import functools
import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from shrink.data.images import Split, image_task
from shrink.data.task import DATASETS, LoadRequest, TaskData, find_file
from shrink.data.transforms import DATASET_STATS
from shrink.errors import UserError

IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """The array stored in an idx file (gzip-compressed when its name ends in ``.gz``).

    Usage: ``read_idx(Path("train-labels-idx1-ubyte.gz")).shape == (60000,)``
    """
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as err:
        raise UserError(f"cannot read idx file {path} ({err})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_TYPES:
        raise UserError(f"{path} is not an idx file (bad magic number)")
    dtype, ndim = np.dtype(IDX_TYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int(size) for size in np.frombuffer(raw[4:header], dtype=">i4"))
    if len(raw) != header + int(np.prod(shape)) * dtype.itemsize:
        raise UserError(f"{path} is truncated or padded: its header promises shape {shape}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


@dataclass(frozen=True)
class IdxDataset:
    """An MNIST-format dataset: its class names, default folder and whether mirroring keeps a label."""

    label_names: tuple[str, ...]
    default_dir: Path | None
    flip: bool
    aliases: tuple[str, ...] = ()


IDX_DATASETS = {
    "mnist": IdxDataset(tuple(str(digit) for digit in range(10)), None, flip=False),  # a mirrored 2 is no 2
    "fashion-mnist": IdxDataset(
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        Path("/usr/share/datasets/fashion-mnist"), flip=True, aliases=("fashion_mnist", "fmnist"),
    ),
}


def load_idx_dataset(name: str, request: LoadRequest) -> TaskData:
    """Read MNIST-format ``name`` from ``request.data_dir`` (or its default folder)."""
    spec = IDX_DATASETS[name]
    what = "a folder with train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz] and the t10k-* files"
    folder = request.folder(what, spec.default_dir)
    return image_task(name, read_idx_split(folder, "train", what), read_idx_split(folder, "t10k", what), None,
                      list(spec.label_names), DATASET_STATS[name], request.augment, flip=spec.flip)


def read_idx_split(folder: Path, prefix: str, what: str) -> Split:
    images, labels = (
        read_idx(find_file(folder, [f"{prefix}-{kind}", f"{prefix}-{kind}.gz"], f"pass {what}"))
        for kind in ("images-idx3-ubyte", "labels-idx1-ubyte")
    )
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise UserError(f"{folder}: {prefix} images {images.shape} and labels {labels.shape} do not match")
    return torch.from_numpy(images.astype(np.uint8)).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


for _name in IDX_DATASETS:
    _default = IDX_DATASETS[_name].default_dir
    DATASETS.add(_name, functools.partial(load_idx_dataset, _name), IDX_DATASETS[_name].aliases,
                 summary=f"{len(IDX_DATASETS[_name].label_names)} classes of 28x28 grey images (MNIST idx files); "
                         f"needs --data-dir" + (f" (default {_default})" if _default else ""))
