"""Training cost of the assembly phases and of end-to-end training: block-epochs, cost units, FLOPs.

Per sample and block (spec section 7): a forward pass costs 1 unit, training the block 2 more, and a frozen
block downstream of a trained one 1 more (its input gradients). ``block_epochs`` is the spec's section-4
arithmetic (blocks in the network x epochs, frozen or not). ``train_flops`` applies the same multipliers
(1 / 3 / 2) to each stage's measured forward FLOPs (PyTorch's FLOP counter), stem and head included. The
method's published savings are wall-clock GPU-hours; small hybrids may run faster per FLOP, so both count.

Usage::

    flops = stage_flops(model, batch)
    cost = phase_cost(model, flops, trained={1}, samples=50000, epochs=100)
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch.utils.flop_counter import FlopCounterMode

from assemble.staged import StagedModel


def model_inputs(batch: Mapping[str, torch.Tensor]) -> tuple[tuple, dict[str, torch.Tensor]]:
    """(args, kwargs) of a model call on a collated batch: pixels positionally, text inputs by name."""
    if "pixel_values" in batch:
        return (batch["pixel_values"],), {}
    return (), {key: value for key, value in batch.items() if key != "labels"}


@torch.no_grad()
def stage_flops(model: StagedModel, batch: Mapping[str, torch.Tensor]) -> list[int]:
    """Forward FLOPs per example of each stage of ``model``, measured on ``batch``.

    Usage: ``stage_flops(target, collate([task.dev[0]]))``
    """
    args, kwargs = model_inputs(batch)
    was_training = model.training
    model.eval()
    x, side = model.family.inputs(*args, **kwargs)
    flops = []
    for stage in model.stages:
        counter = FlopCounterMode(display=False)
        with counter:
            x = stage(x, side)
        flops.append(counter.get_total_flops())
    model.train(was_training)
    examples = len(next(iter(batch.values())))
    return [value // examples for value in flops]


def phase_cost(model: StagedModel, flops: list[int], trained: set[int], samples: int, epochs: float
               ) -> dict[str, float]:
    """The cost of training stages ``trained`` of ``model`` for ``epochs`` over ``samples`` examples."""
    first = min(trained)
    units = flop_units = 0.0
    for index, (depth, stage_flop) in enumerate(zip(model.depths, flops)):
        factor = 3 if index in trained else 2 if index > first else 1
        units += factor * depth
        flop_units += factor * stage_flop
    return {"block_epochs": sum(model.depths) * epochs, "cost_units": units * samples * epochs,
            "train_flops": flop_units * samples * epochs}


def add_costs(*costs: Mapping[str, float]) -> dict[str, float]:
    """Sum cost records key by key. Usage: ``add_costs(meta, *modules, finetune)``."""
    total: dict[str, Any] = {}
    for cost in costs:
        for key, value in cost.items():
            total[key] = total.get(key, 0.0) + value
    return total


__all__ = ["add_costs", "model_inputs", "phase_cost", "stage_flops"]
