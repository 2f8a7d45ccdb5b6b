"""distill: the Distiller-style KD pipeline (teachers, student initialisation, prediction and intermediate
objectives, MI-α, stages) and the ``distill`` command.

Usage::

    from distill import IntermediateObjective, prediction_loss, FeatureTaps
    from distill import DistillRecipe, distill
    result = distill(load_recipe("demo", DistillRecipe), overwrite=True)
"""
from distill.features import FeatureTaps, attention_scores, hf_attention_paths, hf_layer_paths
from distill.objectives import (
    CRITICS,
    INTERMEDIATE_LOSSES,
    LAYER_MAPS,
    PREDICTION_LOSSES,
    IntermediateObjective,
    KDLoss,
    MILoss,
    hard_label_loss,
    interpolated_bound,
    prediction_loss,
    resolve_layer_map,
)
from distill.config import DistillRecipe
from distill.pipeline import DistillStep
from distill.run import distill
from distill.students import STUDENT_INITS
from distill.teachers import TEACHERS, build_teacher

__all__ = [
    "CRITICS",
    "STUDENT_INITS",
    "TEACHERS",
    "DistillRecipe",
    "DistillStep",
    "INTERMEDIATE_LOSSES",
    "LAYER_MAPS",
    "PREDICTION_LOSSES",
    "FeatureTaps",
    "IntermediateObjective",
    "KDLoss",
    "MILoss",
    "attention_scores",
    "build_teacher",
    "distill",
    "hard_label_loss",
    "hf_attention_paths",
    "hf_layer_paths",
    "interpolated_bound",
    "prediction_loss",
    "resolve_layer_map",
]
