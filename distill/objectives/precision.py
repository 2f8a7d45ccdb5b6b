"""Full precision for losses: mixed-precision training must not compute KD or MI in fp16 (spec §6.21).

Usage::

    @full_precision
    def my_loss(student: Tensor, teacher: Tensor) -> Tensor: ...
"""
from __future__ import annotations

import functools
from typing import Any, Callable, TypeVar

import torch

F = TypeVar("F", bound=Callable[..., Any])


def _to_fp32(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.float()
    return value


def full_precision(fn: F) -> F:
    """Run ``fn`` with autocast off and its floating tensor arguments cast to fp32.

    Usage: ``loss = full_precision(torch.nn.functional.mse_loss)(a.half(), b.half())``
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        tensors = [v for v in (*args, *kwargs.values()) if isinstance(v, torch.Tensor)]
        device = tensors[0].device.type if tensors else "cpu"
        with torch.autocast(device_type=device, enabled=False):
            return fn(*map(_to_fp32, args), **{k: _to_fp32(v) for k, v in kwargs.items()})

    return wrapper  # type: ignore[return-value]
