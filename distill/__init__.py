"""distill: the Distiller-style KD pipeline (augmentation, prediction and intermediate objectives, MI-α).

Usage::

    from distill import IntermediateObjective, prediction_loss, FeatureTaps
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

__all__ = [
    "CRITICS",
    "INTERMEDIATE_LOSSES",
    "LAYER_MAPS",
    "PREDICTION_LOSSES",
    "FeatureTaps",
    "IntermediateObjective",
    "KDLoss",
    "MILoss",
    "attention_scores",
    "hard_label_loss",
    "hf_attention_paths",
    "hf_layer_paths",
    "interpolated_bound",
    "prediction_loss",
    "resolve_layer_map",
]
