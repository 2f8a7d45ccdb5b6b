"""Optimizers and learning-rate schedules of the training engine, chosen by ``train:`` settings.

``optimizer: adamw`` (the default; no weight decay on biases and normalisation weights) or ``sgd`` (momentum,
decay on every parameter, as the CIFAR ResNet recipes train). ``schedule``: ``linear``, ``cosine`` or
``constant`` (Transformers' schedules, after ``warmup_ratio`` of the steps) or ``multistep`` (the lr is
multiplied by ``gamma`` at each epoch in ``milestones``, after the same warmup). A submodule with an ``lr_scale``
attribute trains its parameters at ``lr * lr_scale`` (a distillation critic that starts from random weights
learns faster than the student it scores); the schedules keep that ratio.

Usage::

    optimizer = make_optimizer(config, [model], lr=0.1)
    scheduler = make_scheduler(config, optimizer, total_steps=7820, steps_per_epoch=391)
"""
from __future__ import annotations

import bisect
from typing import Any, Sequence

import torch
from torch import nn
from transformers import get_scheduler

from shrink.recipe import TrainConfig


def make_optimizer(config: TrainConfig, modules: Sequence[nn.Module], lr: float) -> torch.optim.Optimizer:
    """The optimizer ``config.optimizer`` names over the trainable parameters of ``modules``.

    Usage: ``make_optimizer(TrainConfig(optimizer="sgd", momentum=0.9), [model], lr=0.1)``
    """
    decays = config.optimizer != "sgd"  # SGD, as the CIFAR recipes train, decays every parameter
    groups = _param_groups(modules, config.weight_decay, lr, decay_all=not decays)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return torch.optim.AdamW(groups, lr=lr)


def make_scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer, total_steps: int, steps_per_epoch: int,
                   processes: int = 1) -> Any:
    """The lr schedule over ``total_steps`` optimizer steps (counted ``processes`` times: Accelerate steps a
    prepared scheduler once per process). Usage: ``make_scheduler(config, optimizer, 7820, 391)``
    """
    warmup = int(config.warmup_ratio * total_steps) * processes
    if config.schedule != "multistep":
        return get_scheduler(config.schedule, optimizer=optimizer, num_warmup_steps=warmup,
                             num_training_steps=total_steps * processes)
    boundaries = sorted(round(epoch * steps_per_epoch) * processes for epoch in config.milestones)

    def factor(step: int) -> float:
        ramp = (step + 1) / warmup if step < warmup else 1.0
        return ramp * config.gamma ** bisect.bisect_right(boundaries, step)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _param_groups(modules: Sequence[nn.Module], weight_decay: float, lr: float,
                  decay_all: bool) -> list[dict[str, Any]]:
    """Groups by (lr scale, decay): no weight decay on biases and normalisation weights (1-d tensors), as is
    standard for AdamW, unless ``decay_all``; each submodule's ``lr_scale`` applies to all its parameters."""
    scales: dict[int, float] = {}
    for module in modules:
        for sub in module.modules():  # outer modules first: an inner lr_scale overrides an outer one
            if hasattr(sub, "lr_scale"):
                scales.update({id(param): float(sub.lr_scale) for param in sub.parameters()})
    groups: dict[tuple[float, bool], list[nn.Parameter]] = {}
    for module in modules:
        for param in module.parameters():
            if param.requires_grad:
                key = (scales.get(id(param), 1.0), decay_all or param.ndim > 1)
                groups.setdefault(key, []).append(param)
    return [{"params": params, "lr": lr * scale, "weight_decay": weight_decay if decay else 0.0}
            for (scale, decay), params in sorted(groups.items(), key=lambda item: (item[0][0], not item[0][1]))]


__all__ = ["make_optimizer", "make_scheduler"]
