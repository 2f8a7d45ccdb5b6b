"""Deep Model Assembling: divide a deep model into K modules, incubate each independently against a shallow
frozen meta model, assemble them by weight loading and finetune end to end.

Usage::

    from assemble import staged_builder, AssemblyTrainer
    builder = staged_builder(build_model("vit-tiny", depth=12), modules=4)
    trainer = AssemblyTrainer(builder, experiment, recipe.assemble)
"""
from assemble.config import AssembleRecipe, AssembleSection, PhaseSection
from assemble.incubate import AssemblyTrainer, meta_states
from assemble.staged import FAMILIES, Stage, StagedBuilder, StagedModel, set_drop_path, staged_builder

__all__ = ["FAMILIES", "AssembleRecipe", "AssembleSection", "AssemblyTrainer", "PhaseSection", "Stage",
           "StagedBuilder", "StagedModel", "meta_states", "set_drop_path", "staged_builder"]
