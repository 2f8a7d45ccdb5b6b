"""Content digests: a cache keyed by these is invalidated by what it depends on, not by names.

Usage::

    key = {"weights": state_digest(teacher), "data": dataset_digest(task.train)}
"""
from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset


def _update(hasher: Any, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        hasher.update(f"{value.dtype}{tuple(value.shape)}".encode())
        hasher.update(value.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, np.ndarray):
        hasher.update(f"{value.dtype}{value.shape}".encode())
        hasher.update(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, dict):
        for key in sorted(value, key=str):
            hasher.update(repr(key).encode())
            _update(hasher, value[key])
    elif isinstance(value, (list, tuple)):
        hasher.update(f"{type(value).__name__}{len(value)}".encode())
        for item in value:
            _update(hasher, item)
    else:
        hasher.update(repr(value).encode())


def state_digest(model: nn.Module) -> str:
    """SHA-256 of every parameter and buffer (names, dtypes, shapes, values).

    Usage: ``state_digest(teacher) != state_digest(retrained_teacher)``
    """
    hasher = hashlib.sha256()
    _update(hasher, dict(model.state_dict()))
    return hasher.hexdigest()


def dataset_digest(dataset: Dataset) -> str:
    """SHA-256 of every example of ``dataset`` in order (texts, labels, tensors).

    Usage: ``dataset_digest(task.train)``
    """
    hasher = hashlib.sha256()
    for index in range(len(dataset)):  # type: ignore[arg-type]
        _update(hasher, dataset[index])
    return hasher.hexdigest()


def value_digest(value: Any) -> str:
    """SHA-256 of a nested value (dicts, lists, tensors, plain values). Usage: ``value_digest({"lr": 1e-3})``."""
    hasher = hashlib.sha256()
    _update(hasher, value)
    return hasher.hexdigest()
