"""The ``prune:`` recipe section: what to prune to, by which criterion, how to finetune, how to meta-train.

A prune recipe is a ``shrink train`` recipe (``model:``, ``data:``, ``train:``, the latter for the base model
when none is given) plus ``prune:``. Finetuning phases override the epochs and learning rate of ``train:``.

Usage::

    recipe = load_recipe("resnet56-cifar10", PruneRecipe, overrides={"prune.speedup": 2.5})
    recipe.prune.method, recipe.prune.meta.data_models
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationError, model_validator

from shrink.recipe import Recipe, Section, TrainConfig, validator_message

DEFAULT_SPEEDUP = 2.0


class Phase(Section):
    """A training phase as overrides of ``train:`` (None keeps the recipe's value); ``milestones`` are the
    phase's own epochs for ``schedule: multistep``.

    Usage: ``Phase(epochs=80, lr=0.01, milestones=[40, 70]).apply(recipe.train)``
    """

    epochs: float | None = Field(None, gt=0)
    lr: float | None = Field(None, gt=0)
    milestones: list[float] | None = None

    def apply(self, base: TrainConfig) -> TrainConfig:
        """``base`` with this phase's settings, validated as a whole (milestones need ``multistep``)."""
        changes = {key: value for key, value in self.model_dump().items() if value is not None}
        return TrainConfig.model_validate({**base.model_dump(), **changes})


class MetaSection(Section):
    """Meta-training: the collection of data models, the metanetwork's shape and its optimisation.

    ``data_models`` are trained from scratch (seeds after the recipe's), lightly pruned to ``light_speedup``
    and finetuned; the last ``held_out`` of them only judge the epochs. ``collection``: a folder of saved
    model folders to use instead (trained and usually lightly pruned already; taken in name order).
    ``val_fraction`` of the training split is held back for that judgement (the dev/test split is never used).
    ``reg`` = 10 is the spec's, tuned on networks trained 200 epochs with SGD and weight decay; networks
    with larger weights (short or AdamW training) need less: ``metanet/metatrain.json`` logs
    ``reg_to_ce_grad`` per epoch, and a ratio far above 1 with a falling held-out score means lower ``reg``.
    ``batch_stats``: the meta-step's task loss normalises BatchNorm with batch statistics instead of the data
    model's running statistics (the reference's), which go stale once the metanetwork rescales channels. Off by
    default: on the reduced pruning benchmark it kept the task loss low but did not concentrate the norms
    either, and finetuned to a lower accuracy (README, "Pruning").
    """

    data_models: int = Field(4, ge=2)
    collection: str | None = None
    held_out: int = Field(1, ge=1)
    light_speedup: float = Field(1.32, gt=1)
    light_finetune: Phase = Field(default_factory=Phase)
    epochs: int = Field(100, gt=0)
    lr: float = Field(1e-3, gt=0)
    milestones: list[int] = Field(default_factory=lambda: [3])
    reg: float = Field(10.0, ge=0)
    alpha: float = Field(16.0, ge=1)
    hidden: int = Field(64, gt=0)
    layers: int = Field(8, gt=0)
    rho: float = Field(0.01, gt=0)
    batches_per_step: int | None = Field(None, gt=0)
    batch_stats: bool = False
    val_fraction: float = Field(0.1, gt=0, lt=1)

    @model_validator(mode="after")
    def _some_left_to_train(self) -> MetaSection:
        if self.held_out >= self.data_models:
            raise ValueError(f"held_out ({self.held_out}) must be below data_models ({self.data_models})")
        return self


class PruneSection(Section):
    """What ``prune`` does. ``base_model``: a trained model folder (None: train ``model:`` first);
    ``metanet``: a saved metanetwork (None with method ``metanet``: meta-train one in the run).
    ``latency_speedup``: a target of measured speed-up on ``latency_runtime`` at ``latency_batch`` instead of
    MACs; ``fast_widths`` rounds pruned widths to the fastest nearby ones by measured layer latency.

    ``finetune_kd``: recover by distillation from the unpruned model (logit KD at ``kd_weight``, 1 when unset,
    plus, for transformers, ``kd_hidden_weight`` times the hidden-state MSE of every block); ``head_pace``:
    transformers lose heads at this fraction of the pace at which they lose FFN neurons (0 keeps every head);
    ``drop_layers``: transformers first lose this many whole blocks, those of least Block Influence on training
    data, then widths are pruned on to the target."""

    method: str = "group-l2"
    speedup: float | None = Field(None, gt=1)
    param_ratio: float | None = Field(None, gt=1)
    latency_speedup: float | None = Field(None, gt=1)
    latency_batch: int = Field(64, gt=0)
    latency_runtime: Literal["onnxruntime", "torch"] = "onnxruntime"
    fast_widths: bool | None = None
    iterative_steps: int = Field(200, gt=0)
    round_to: int | None = Field(None, gt=1)
    max_layer_ratio: float | None = Field(None, gt=0, lt=1)
    protect: list[str] = Field(default_factory=list)
    base_model: str | None = None
    metanet: str | None = None
    metanet_finetune: Phase = Field(default_factory=Phase)
    finetune: Phase = Field(default_factory=Phase)
    kd_weight: float = Field(0.0, ge=0, le=1)
    kd_temperature: float = Field(4.0, gt=0)
    finetune_kd: bool = False
    kd_hidden_weight: float = Field(1.0, ge=0)
    head_pace: float = Field(1.0, ge=0, le=1)
    drop_layers: int = Field(0, ge=0)
    curve_points: int = Field(8, ge=0)
    export_onnx: bool = False
    meta: MetaSection = Field(default_factory=MetaSection)

    @model_validator(mode="after")
    def _one_target(self) -> PruneSection:
        if sum(value is not None for value in (self.speedup, self.param_ratio, self.latency_speedup)) > 1:
            raise ValueError("give one target: speedup (MACs ratio), param_ratio or latency_speedup")
        if self.round_to is not None and self.fast_widths:
            raise ValueError("round_to fixes the width multiple, fast_widths measures the fastest widths: give one")
        return self

    @property
    def uses_fast_widths(self) -> bool:
        """Whether widths are rounded by measured layer latency (by default with a latency target and no
        ``round_to``)."""
        if self.fast_widths is not None:
            return self.fast_widths
        return self.latency_speedup is not None and self.round_to is None

    def distillation(self) -> tuple[float, float]:
        """(logit KD weight, hidden-state MSE weight) of the finetuning after pruning.

        Usage: ``kd_weight, hidden_weight = recipe.prune.distillation()``
        """
        if self.finetune_kd:
            return self.kd_weight or 1.0, self.kd_hidden_weight
        return self.kd_weight, 0.0

    def target(self) -> dict[str, float]:
        """The pruning target as ``prune_model`` keywords (a 2x MACs speed-up when none is given).

        Usage: ``prune_model(model, x, **section.target())``
        """
        if self.param_ratio is not None:
            return {"param_ratio": self.param_ratio}
        if self.latency_speedup is not None:
            return {"latency_speedup": self.latency_speedup}
        return {"speedup": self.speedup or DEFAULT_SPEEDUP}


class PruneRecipe(Recipe):
    """A recipe for ``prune``: ``model:`` is the network (or ``prune.base_model``), ``prune:`` the method.

    Usage: ``load_recipe("resnet56-cifar10", PruneRecipe).prune.speedup``
    """

    prune: PruneSection = Field(default_factory=PruneSection)

    @model_validator(mode="after")
    def _phases_fit_train(self) -> PruneRecipe:
        phases = {"prune.finetune": self.prune.finetune, "prune.metanet_finetune": self.prune.metanet_finetune,
                  "prune.meta.light_finetune": self.prune.meta.light_finetune}
        for name, phase in phases.items():
            try:
                phase.apply(self.train)
            except ValidationError as error:  # e.g. milestones while train.schedule is not multistep
                raise ValueError(f"{name}: {validator_message(error)}") from None
        return self


__all__ = ["MetaSection", "Phase", "PruneRecipe", "PruneSection"]
