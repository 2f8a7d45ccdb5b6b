"""The Meta-DMoE teacher: frozen experts (one per cluster of source domains) fused by a trained aggregator.

Its target for distillation is a feature, not logits: ``target(batch, exclude)`` is the aggregator's
fused feature with the in-domain expert masked out (meta-training) or all N experts (test time).
``logits`` (the aggregator's head over all N tokens) serves only to pre-train and report it.

Usage::

    teacher = MetaDMoETeacher(experts, aggregator=aggregator, domain_to_expert={"15": 0, "30": 1})
    t = teacher.target(batch, exclude=teacher.expert_of("30"))    # (B, D)
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn

from distill.moe.aggregator import Aggregator
from distill.moe.experts import ExpertPool, drop_expert
from distill.teachers.single import TEACHERS, Teacher
from shrink.errors import UserError


@TEACHERS.register("meta-dmoe", aliases=("moe",))
class MetaDMoETeacher(Teacher):
    """Experts + aggregator + the persisted ``domain -> expert`` map; the aggregator and any projections
    stay trainable, the experts frozen. Usage: see the module docstring.
    """

    def __init__(self, members: Sequence[nn.Module], feature_member: int = 0, *, aggregator: Aggregator | None = None,
                 domain_to_expert: Mapping[str, int] | None = None, mask: str = "drop") -> None:
        super().__init__(members, feature_member)
        if aggregator is None:
            raise UserError("a meta-dmoe teacher is built by `distill --moe` (experts and a trained aggregator), "
                            "not by --teacher-kind")
        self.pool = ExpertPool(list(self.members), dim=aggregator.config["dim"])
        self.aggregator = aggregator
        self.domain_to_expert = dict(domain_to_expert or {})
        self.mask = mask
        bad = sorted({e for e in self.domain_to_expert.values() if not 0 <= e < len(members)})
        if bad:
            raise UserError(f"domain_to_expert names expert(s) {bad}, but there are {len(members)} experts")
        for module in (self.aggregator, self.pool.projections):
            module.requires_grad_(True)
        nn.Module.train(self, False)  # the modules added above too: targets never depend on dropout draws

    @classmethod
    def check_members(cls, count: int) -> None:
        """At least one expert."""
        if count < 1:
            raise UserError("Meta-DMoE needs at least one expert; pass --experts DIR1,DIR2 or --train-experts N")

    def expert_of(self, domain: str) -> int | None:
        """The expert trained on ``domain`` (None for a domain no expert saw, e.g. a test domain)."""
        return self.domain_to_expert.get(domain)

    def trainable(self) -> list[nn.Parameter]:
        """phi: the parameters of the fused feature (the aggregator's blocks and the projections) that
        meta-training moves; the pre-training head is left as it was (stale afterwards)."""
        return [*self.aggregator.blocks.parameters(), *self.pool.projections.parameters()]

    def target(self, inputs: Mapping[str, torch.Tensor], exclude: int | None = None) -> torch.Tensor:
        """The fused feature ``(B, D)`` with expert ``exclude`` masked (``self.mask``), or all N experts."""
        return self.aggregator.get_feat(drop_expert(self.pool.tokens(inputs), exclude, self.mask))

    def logits(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The aggregator head's logits over all N experts (a stale head after meta-training)."""
        return self.aggregator(self.pool.tokens(inputs))


__all__ = ["MetaDMoETeacher"]
