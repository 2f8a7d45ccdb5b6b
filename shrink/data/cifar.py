"""CIFAR-10 / CIFAR-100 from their "python version" folders, read with a restricted unpickler.

The batches are pickles, so they are never given to ``pickle.load``: the unpickler below resolves only
the numpy globals that rebuild an array and refuses everything else. The official test batch serves
as the dev split (CIFAR has no other held-out set). Usage::

    task = load_task_data("cifar10", "data/")   # data/cifar-10-batches-py/ or that folder itself
"""
from __future__ import annotations

import functools
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shrink.data.images import Split, image_task
from shrink.data.task import DATASETS, LoadRequest, TaskData, find_file
from shrink.data.transforms import DATASET_STATS
from shrink.errors import UserError

# Everything a CIFAR batch needs, as written by numpy 1 (numpy.core) and numpy 2 (numpy._core).
SAFE_GLOBALS = frozenset({
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),  # numpy ints in label lists
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("_codecs", "encode"),  # bytes in protocol-2 pickles written by Python 3
})


class ArrayUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds numpy arrays and plain containers and refuses any other global.

    Usage: ``ArrayUnpickler(handle, encoding="bytes").load()``
    """

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in SAFE_GLOBALS:
            raise UserError(f"refusing to load {module}.{name} from a pickle: a CIFAR batch holds only numpy "
                            "arrays and lists, so this file is not one (or was tampered with)")
        return super().find_class(module, name)


def load_pickle(path: Path) -> Any:
    """Read a CIFAR-style pickle with :class:`ArrayUnpickler`. Usage: ``load_pickle(folder / "test_batch")``."""
    with path.open("rb") as handle:
        try:
            return ArrayUnpickler(handle, encoding="bytes").load()
        except (pickle.UnpicklingError, EOFError, ValueError) as err:
            raise UserError(f"{path} is not a readable CIFAR batch ({err})") from None


@dataclass(frozen=True)
class CifarLayout:
    """Where one CIFAR variant keeps its batches, labels and class names."""

    folder: str
    train: tuple[str, ...]
    test: str
    label_key: bytes
    meta: str
    names_key: bytes
    classes: int


CIFAR = {
    "cifar10": CifarLayout("cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), "test_batch",
                           b"labels", "batches.meta", b"label_names", 10),
    "cifar100": CifarLayout("cifar-100-python", ("train",), "test", b"fine_labels", "meta", b"fine_label_names",
                            100),
}


def load_cifar(name: str, request: LoadRequest) -> TaskData:
    """Read CIFAR ``name`` from ``request.data_dir`` (the batches folder or its parent)."""
    layout = CIFAR[name]
    what = f"the {layout.folder} folder (or its parent) of the CIFAR python version"
    folder = request.folder(what)
    if (folder / layout.folder).is_dir():
        folder = folder / layout.folder
    train = [_read_batch(find_file(folder, [part], f"pass {what}"), layout.label_key) for part in layout.train]
    test = _read_batch(find_file(folder, [layout.test], f"pass {what}"), layout.label_key)
    return image_task(
        name, (torch.cat([images for images, _ in train]), torch.cat([labels for _, labels in train])), test, None,
        _label_names(folder / layout.meta, layout.names_key, layout.classes), DATASET_STATS[name], request.augment,
    )


def _read_batch(path: Path, label_key: bytes) -> Split:
    batch = load_pickle(path)
    if not isinstance(batch, dict) or b"data" not in batch or label_key not in batch:
        raise UserError(f"{path} is not a CIFAR batch: expected a dict with b'data' and {label_key!r}")
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise UserError(f"{path}: b'data' should be (N, 3072) uint8 rows, found shape {data.shape}")
    labels = torch.as_tensor(np.asarray(batch[label_key], dtype=np.int64))
    return torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()), labels


def _label_names(path: Path, key: bytes, classes: int) -> list[str]:
    meta = load_pickle(path) if path.is_file() else {}
    names = meta.get(key) if isinstance(meta, dict) else None
    if not names or len(names) != classes:
        return [str(index) for index in range(classes)]
    return [name.decode() if isinstance(name, bytes) else str(name) for name in names]


for _name in CIFAR:
    DATASETS.add(_name, functools.partial(load_cifar, _name), (_name.replace("cifar", "cifar-"),),
                 summary=f"{CIFAR[_name].classes} classes of 32x32 colour images; needs --data-dir: the python "
                         f"version's {CIFAR[_name].folder}/ (arrays only: no code is unpickled)")
