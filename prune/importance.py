"""Importance criteria by name: how each ranks channels (a Torch-Pruning importance) and what it needs.

``metanet`` ranks like ``group-l2`` (DepGraph's group norm, max-normalised per group): the metanetwork
changes the network before pruning (see :mod:`prune.metanet`), not the ranking.

Usage::

    criterion = CRITERIA.get("group-l2")
    importance = criterion.make()          # a tp.importance.Importance
    criterion.needs_grad                   # True for taylor: run a backward pass before each step
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import torch_pruning as tp

from shrink.registry import Registry


@dataclass(frozen=True)
class Criterion:
    """A named importance criterion: its Torch-Pruning importance factory and what it needs."""

    make: Callable[[], tp.importance.Importance]
    summary: str
    needs_grad: bool = False
    uses_metanet: bool = False


CRITERIA: Registry[Criterion] = Registry("importance criterion")

_group_norm = functools.partial(tp.importance.GroupMagnitudeImportance, p=2, group_reduction="mean", normalizer="max")

CRITERIA.add("group-l2", Criterion(_group_norm, "group L2 norm over every coupled layer, max-normalised"),
             aliases=("l2", "group-norm", "group_norm"))
CRITERIA.add("group-l1", Criterion(
    functools.partial(tp.importance.GroupMagnitudeImportance, p=1, group_reduction="mean", normalizer="max"),
    "group L1 norm over every coupled layer, max-normalised"), aliases=("l1",))
CRITERIA.add("bn-scale", Criterion(tp.importance.BNScaleImportance, "BatchNorm scale |gamma| (network slimming)"),
             aliases=("slim", "bn_scale"))
CRITERIA.add("taylor", Criterion(tp.importance.GroupTaylorImportance, "first-order Taylor |w * dL/dw|",
                                 needs_grad=True))
CRITERIA.add("lamp", Criterion(tp.importance.LAMPImportance, "layer-adaptive magnitude (LAMP)"))
CRITERIA.add("fpgm", Criterion(tp.importance.FPGMImportance, "distance to the geometric median (FPGM)"))
CRITERIA.add("random", Criterion(tp.importance.RandomImportance, "random ranking (a baseline)"))
CRITERIA.add("metanet", Criterion(_group_norm, "group L2 after the metanetwork's transformation",
                                  uses_metanet=True), aliases=("meta",))
