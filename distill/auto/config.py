"""The ``auto:`` recipe section of ``distill --auto``: budget, objectives, storage, recommendation, space.

Usage::

    recipe = build_recipe({"auto": {"trials": 12, "space": {"kd_loss": ["kl"]}}}, AutoDistillRecipe)
    recipe.distill_recipe()   # the base DistillRecipe every trial starts from
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from distill.config import DistillRecipe
from shrink.recipe import Section


class AutoSection(Section):
    """How AutoDistiller searches. ``trials`` counts the study's trials over all workers (finished ones, and on RDB
    storages the ones live workers are running);
    ``timeout`` (seconds) bounds each worker: no trial starts after it, and a running one stops at its next epoch's
    end (pruned, its epochs reported) unless that epoch was its last; ``space`` narrows or widens dimensions (see
    :func:`distill.auto.space.build_space`); ``priors`` are trial tables (CSV) the recommender learns from
    besides the shipped one and this study's own trials.

    Usage: ``AutoSection(trials=40, objectives=["score", "latency"], storage="postgresql://db/shrink")``
    """

    trials: int = Field(20, gt=0)
    timeout: float | None = Field(None, gt=0)
    objectives: list[str] = Field(default_factory=lambda: ["score"])
    sampler: Literal["tpe", "random"] = "tpe"
    pruner: Literal["hyperband", "halving", "none"] = "hyperband"
    storage: str | None = None
    study_name: str | None = None
    recommend: bool = False
    top_k: int = Field(3, gt=0)
    candidates: int = Field(256, gt=0)
    priors: list[str] = Field(default_factory=list)
    use_shipped_prior: bool = True
    heartbeat_s: int = Field(10, gt=0)
    max_retry: int = Field(2, ge=0)
    seed: int | None = None
    space: dict[str, Any] = Field(default_factory=dict)


class AutoDistillRecipe(DistillRecipe):
    """A distill recipe plus the ``auto:`` section; each trial runs the DistillRecipe part.

    Usage: ``load_recipe("demo", AutoDistillRecipe).auto.trials``
    """

    auto: AutoSection = Field(default_factory=AutoSection)

    def distill_recipe(self) -> DistillRecipe:
        """The base recipe without the ``auto`` section. Usage: ``recipe.distill_recipe().distill.teacher``."""
        return DistillRecipe.model_validate(self.model_dump(exclude={"auto"}))


__all__ = ["AutoDistillRecipe", "AutoSection"]
