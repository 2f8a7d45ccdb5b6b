"""The ``assemble:`` recipe section: how the model splits, and the settings of each phase.

An assemble recipe is a ``shrink train`` recipe (``model:``, ``data:``, ``train:``) plus ``assemble:``. Each
phase (``meta``, ``incubate``, ``finetune``, and the optional ``e2e`` baseline) overrides ``train:``'s
epochs, learning rate, warm-up, weight decay and clipping, and sets its drop-path rate. The reference's
phase settings (DeiT recipe; spec section 3): meta 300 epochs, drop-path 0; incubation 100 epochs, drop-path
0.1; finetune 100 epochs, warm-up 0, drop-path 0.1, clip 1.0.

Usage::

    recipe = load_recipe("vit-assemble", AssembleRecipe, overrides={"assemble.modules": 4})
    recipe.assemble.incubate.apply(recipe.train).epochs
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from shrink.recipe import Recipe, Section, TrainConfig

PHASES = ("meta", "incubate", "assemble", "finetune")
DEFAULT_MODULES = 4  # the reference always uses K = 4


class PhaseSection(Section):
    """One training phase as overrides of ``train:`` (None keeps the recipe's value), plus its drop-path.

    Usage: ``PhaseSection(epochs=100, warmup_ratio=0.0).apply(recipe.train)``
    """

    epochs: float | None = Field(None, gt=0)
    lr: float | None = Field(None, gt=0)
    warmup_ratio: float | None = Field(None, ge=0, lt=1)
    weight_decay: float | None = Field(None, ge=0)
    max_grad_norm: float | None = Field(None, gt=0)
    drop_path: float = Field(0.0, ge=0, lt=1)

    def apply(self, base: TrainConfig) -> TrainConfig:
        """``base`` with this phase's overrides. Usage: ``section.meta.apply(recipe.train)``."""
        changes = {key: value for key, value in self.model_dump(exclude={"drop_path"}).items() if value is not None}
        return TrainConfig.model_validate({**base.model_dump(), **changes})


class AssembleSection(Section):
    """What ``assemble`` does.

    ``modules``: K equal modules (must divide the model's blocks; 4 when neither is given), or ``depths``:
    per-module block counts summing to the model's blocks. ``meta_depth``: blocks per meta module.
    ``meta_drop_path``: ``follow`` (the reference: drop-path also hits the frozen meta blocks while
    incubating) or ``"0"`` (spares them). ``run_e2e``: also train the target end to end (RUN/e2e) for the
    cost comparison, ``e2e.epochs`` None matching the assembly's compute (its FLOPs).
    ``meta_model``: a meta phase folder from another run to incubate against (default: RUN/meta).
    ``export_onnx``: export the assembled, finetuned model.
    """

    modules: int | None = Field(None, ge=2)
    depths: list[int] | None = None
    meta_depth: int = Field(1, ge=1)
    meta_drop_path: Literal["follow", "0"] = "follow"
    meta_model: str | None = None
    meta: PhaseSection = Field(default_factory=PhaseSection)
    incubate: PhaseSection = Field(default_factory=lambda: PhaseSection(drop_path=0.1))
    finetune: PhaseSection = Field(default_factory=lambda: PhaseSection(warmup_ratio=0.0, drop_path=0.1,
                                                                        max_grad_norm=1.0))
    run_e2e: bool = False
    e2e: PhaseSection = Field(default_factory=PhaseSection)
    export_onnx: bool = False

    def module_split(self) -> tuple[int | None, list[int] | None]:
        """(module count, per-module depths) as ``partition`` takes them; K = 4 when neither is given."""
        if self.modules is None and not self.depths:
            return DEFAULT_MODULES, None
        return self.modules, self.depths


class AssembleRecipe(Recipe):
    """A recipe for ``assemble``. Usage: ``load_recipe("vit-assemble", AssembleRecipe).assemble.modules``."""

    assemble: AssembleSection = Field(default_factory=AssembleSection)


__all__ = ["PHASES", "AssembleRecipe", "AssembleSection", "PhaseSection"]
