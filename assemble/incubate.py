"""The Deep Model Assembling procedure: meta pretraining, module incubation, assembly, finetuning (and E2E).

1. ``pretrain_meta``: the meta model (one small block per module) trained end to end on the task.
2. ``incubate(i, meta_states)``: hybrid i = the meta model with the freshly initialised target module at i;
   the meta stages are loaded strictly and frozen *before* the training engine (and Accelerate) sees the
   model; only module i trains, on the plain task loss, gradients flowing through the frozen later stages.
   Each call is independent of the others (its own seed ``train.seed + 1 + i``), so modules can incubate in
   separate processes or machines.
3. ``assemble(module_states)``: the target with stage i loaded from module i (plain weight loading).
4. ``finetune``: the whole assembled target end to end (warm-up 0 and clipping by default).

Every phase trains with the core engine (:class:`shrink.train.Trainer`); with a run directory it
checkpoints and resumes there. The last epoch is kept, as in the reference.

Usage::

    trainer = AssemblyTrainer(builder, experiment, recipe.assemble)
    meta, _ = trainer.pretrain_meta()
    modules = [trainer.incubate(i, meta_states(meta))[0].stage_state(i) for i in range(builder.modules)]
    target = trainer.assemble(modules); trainer.finetune(target)
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from accelerate.utils import set_seed

from assemble.config import AssembleSection, PhaseSection
from assemble.staged import StagedBuilder, StagedModel, set_drop_path
from shrink.errors import UserError
from shrink.experiment import LR_CNN, LR_TRANSFORMER, Experiment, selection_splits
from shrink.runs import RunDir
from shrink.train import Trainer, TrainResult, evaluate_model

StageStates = Mapping[int, Mapping[str, torch.Tensor]]


def meta_states(model: StagedModel) -> dict[int, dict[str, torch.Tensor]]:
    """Every stage's tensors by index. Usage: ``meta_states(meta)[0]``."""
    return {index: model.stage_state(index) for index in range(len(model.stages))}


def load_stage(model: StagedModel, index: int, state: Mapping[str, torch.Tensor], what: str) -> None:
    """Strictly load ``state`` into stage ``index``; UserError (naming ``what``) when it does not fit."""
    try:
        model.stages[index].load_state_dict(state, strict=True)
    except RuntimeError as err:
        detail = str(err).strip().splitlines()[0]
        raise UserError(f"{what} does not fit stage {index} of this model ({detail}); it was trained for another "
                        "model or split: rerun that phase for this recipe") from None


class AssemblyTrainer:
    """The four phases (and the E2E baseline) on one builder and task; see the module docstring.

    Usage: ``AssemblyTrainer(builder, experiment, recipe.assemble).pretrain_meta()``
    """

    def __init__(self, builder: StagedBuilder, experiment: Experiment, section: AssembleSection,
                 track_dev: bool = True) -> None:
        self.builder, self.experiment, self.section = builder, experiment, section
        self.seed = experiment.recipe.train.seed
        self.track_dev = track_dev  # False: no per-epoch evaluation (faster; the history has losses only)

    def fit(self, model: StagedModel, phase: PhaseSection, run: RunDir | None = None) -> TrainResult:
        """Train ``model``'s trainable parameters with ``phase`` over ``train:``; resumes from ``run``'s checkpoints."""
        config = phase.apply(self.experiment.recipe.train)
        set_drop_path(model, phase.drop_path, self.section.meta_drop_path)
        train_set, select_set = selection_splits(self.experiment.task, config)
        trainer = Trainer(model, train_set, select_set if self.track_dev else None, collate=self.experiment.collate,
                          metrics=self.experiment.task.metrics, config=config, run=run,
                          resume=run is not None and run.checkpoints.is_dir(),
                          lr_default=LR_TRANSFORMER if self.experiment.is_transformer else LR_CNN)
        result = trainer.fit()
        set_drop_path(model, 0.0)
        return result

    def evaluate(self, model: StagedModel) -> dict[str, float]:
        """Dev metrics of ``model``. Usage: ``trainer.evaluate(target)["accuracy"]``."""
        return evaluate_model(model, self.experiment.dev_loader(), self.experiment.task.metrics)

    def pretrain_meta(self, run: RunDir | None = None) -> tuple[StagedModel, TrainResult]:
        """Phase 1: the meta model, every parameter trained."""
        set_seed(self.seed)
        meta = self.builder.meta()
        return meta, self.fit(meta, self.section.meta, run)

    def hybrid(self, index: int, meta: StageStates) -> StagedModel:
        """Hybrid ``index``: fresh target module at ``index``, frozen meta stages elsewhere (loaded strictly)."""
        set_seed(self.seed + 1 + index)
        hybrid = self.builder.hybrid(index)
        missing = [j for j in range(self.builder.modules) if j != index and j not in meta]
        if missing:
            raise UserError(f"the meta model has no stage {missing[0]}; it was trained for another split: "
                            "rerun the meta phase for this recipe")
        for j in range(self.builder.modules):
            if j != index:
                load_stage(hybrid, j, meta[j], "the meta model")
        hybrid.freeze_except(index)  # before Trainer: Accelerate must never see the meta stages as trainable
        return hybrid

    def incubate(self, index: int, meta: StageStates, run: RunDir | None = None) -> tuple[StagedModel, TrainResult]:
        """Phase 2 for module ``index``: train it alone inside its hybrid; returns the hybrid and the result."""
        hybrid = self.hybrid(index, meta)
        return hybrid, self.fit(hybrid, self.section.incubate, run)

    def assemble(self, modules: StageStates) -> StagedModel:
        """Phase 3: the target with stage i loaded from incubated module i (every module is required)."""
        missing = [i for i in range(self.builder.modules) if i not in modules]
        if missing:
            raise UserError(f"module {missing[0]} is missing; incubate it first (assemble incubate --module "
                            f"{missing[0]})")
        target = self.builder.target()
        for index in range(self.builder.modules):
            load_stage(target, index, modules[index], f"module {index}")
        return target

    def finetune(self, target: StagedModel, run: RunDir | None = None) -> TrainResult:
        """Phase 4: the assembled target end to end."""
        set_seed(self.seed)
        return self.fit(target, self.section.finetune, run)

    def train_e2e(self, epochs: float, run: RunDir | None = None) -> tuple[StagedModel, TrainResult]:
        """The baseline: a fresh target trained end to end for ``epochs`` with ``e2e``'s other settings."""
        set_seed(self.seed)
        target = self.builder.target()
        phase = self.section.e2e.model_copy(update={"epochs": epochs})
        return target, self.fit(target, phase, run)

    def module_states(self, hybrids: Sequence[StagedModel]) -> dict[int, dict[str, torch.Tensor]]:
        """Module i's tensors from hybrid i. Usage: ``trainer.assemble(trainer.module_states(hybrids))``."""
        return {index: hybrid.stage_state(index) for index, hybrid in enumerate(hybrids)}


__all__ = ["AssemblyTrainer", "load_stage", "meta_states"]
