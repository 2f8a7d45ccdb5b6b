"""The ``moe:`` recipe section of ``distill --moe``: domains, experts, aggregator, student ERM, meta-training.

Defaults follow the spec's small-scale evidence (§7.1: alpha 0.01, beta = tau = 1e-4, S = Q = 32, second
order, the in-domain expert dropped); the reference's WILDS values are in the spec's §3 table.
Usage: ``MoESection(test_domains=["0", "75"], train_experts=2).meta.alpha``
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from distill.config import TrainOverrides
from shrink.recipe import Section


class AggregatorSection(Section):
    """The aggregator's shape and its pre-training (CE on all source data with all N experts' tokens).

    Usage: ``AggregatorSection(heads=4, epochs=40)``
    """

    depth: int = Field(1, gt=0)
    heads: int = Field(16, gt=0)
    mlp_ratio: float = Field(2.0, gt=0)
    dropout: float = Field(0.1, ge=0, lt=1)
    epochs: float = Field(40, gt=0)
    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(64, gt=0)


class MetaSection(Section):
    """Second-order meta-distillation: ``steps`` outer updates of ``tasks_per_process`` single-domain tasks
    per process; ``support`` + ``query`` examples per task; inner SGD rate ``alpha``; Adam rates ``beta``
    (student) and ``tau`` (aggregator), multiplied by ``lr_decay`` every meta-epoch (len(train) // (S+Q)
    tasks); TTA model selection on held-out source data every ``eval_every`` steps (0: keep the last).

    Usage: ``MetaSection(steps=1500, alpha=0.01, mask="drop")``
    """

    steps: int = Field(1500, gt=0)
    alpha: float = Field(0.01, gt=0)
    beta: float = Field(1e-4, gt=0)
    tau: float = Field(1e-4, gt=0)
    support: int = Field(32, gt=0)
    query: int = Field(32, gt=0)
    first_order: bool = False
    freeze_aggregator: bool = False
    mask: Literal["drop", "zero", "none"] = "drop"
    tasks_per_process: int = Field(1, gt=0)
    lr_decay: float = Field(0.96, gt=0, le=1)
    eval_every: int = Field(250, ge=0)
    seed: int = 0


class MoESection(Section):
    """Meta-DMoE's settings. Experts come from ``experts`` (run or model directories, in order) or are
    trained: ``train_experts`` of them, each on a seeded cluster of source domains (``expert_model``,
    default the student's architecture, with ``expert_train`` overriding ``train:``); ``student_train``
    overrides ``train:`` for the student's ERM pre-training. ``test_domains`` are held out whole
    (DomainBed's leave-domains-out); ``holdout_fraction`` of each source domain selects models.
    ``domain_to_expert`` fixes the clusters (source domain -> expert index, e.g. hospitals by region);
    unset, the experts' own ``domains.json`` or the seeded random clusters of step 0 (``cluster_seed``) decide.

    Usage: ``MoESection(train_experts=4, test_domains=["0", "75"])``
    """

    experts: list[str] = Field(default_factory=list)
    train_experts: int | None = Field(None, gt=0)
    expert_model: str | None = None
    expert_args: dict[str, Any] = Field(default_factory=dict)
    expert_train: TrainOverrides = Field(default_factory=TrainOverrides)  # type: ignore[valid-type]
    student_train: TrainOverrides = Field(default_factory=TrainOverrides)  # type: ignore[valid-type]
    test_domains: list[str] = Field(default_factory=list)
    domain_to_expert: dict[str, int] = Field(default_factory=dict)
    holdout_fraction: float = Field(0.2, gt=0, lt=1)
    cluster_seed: int = 0
    aggregator: AggregatorSection = Field(default_factory=AggregatorSection)
    meta: MetaSection = Field(default_factory=MetaSection)

    @model_validator(mode="after")
    def _one_source_of_experts(self) -> MoESection:
        if self.experts and self.train_experts:
            raise ValueError("give either experts (directories) or train_experts (a number), not both")
        if not self.experts and not self.train_experts:
            raise ValueError("Meta-DMoE needs experts: pass --experts DIR1,DIR2,... or --train-experts N")
        return self


__all__ = ["AggregatorSection", "MetaSection", "MoESection"]
