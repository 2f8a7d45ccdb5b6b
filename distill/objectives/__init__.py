"""Distillation objectives: prediction-layer KD losses, intermediate losses over layer maps, MI-α critics.

Every option is registered by name: ``PREDICTION_LOSSES``, ``INTERMEDIATE_LOSSES``, ``LAYER_MAPS``, ``CRITICS``.

Usage::

    from distill.objectives import IntermediateObjective, prediction_loss
    kd = prediction_loss("ce", num_labels=2)
    inter = IntermediateObjective("mi", "skip", n_teacher=12, n_student=4, d_student=312, d_teacher=768)
"""
from distill.objectives.critics import CRITICS, SeparableCritic, mlp_critic, transformer_critic
from distill.objectives.intermediate import (
    EMD_LOSSES,
    INTERMEDIATE_LOSSES,
    AttentionMSE,
    IntermediateObjective,
    ProjectedLoss,
    cosine_distance,
    hidden_ce,
    hidden_mse,
    pkd_distance,
)
from distill.objectives.layer_maps import LAYER_MAPS, LayerMap, resolve_layer_map, transport_plan
from distill.objectives.mi import MILoss, alpha_logit, gather_rows, interpolated_bound, log_leave_one_out_mean
from distill.objectives.precision import full_precision
from distill.objectives.prediction import (
    PREDICTION_LOSSES,
    KDLoss,
    hard_label_loss,
    kl_divergence,
    logit_mse,
    prediction_loss,
    soft_cross_entropy,
)

__all__ = [
    "CRITICS",
    "EMD_LOSSES",
    "INTERMEDIATE_LOSSES",
    "LAYER_MAPS",
    "PREDICTION_LOSSES",
    "AttentionMSE",
    "IntermediateObjective",
    "KDLoss",
    "LayerMap",
    "MILoss",
    "ProjectedLoss",
    "SeparableCritic",
    "alpha_logit",
    "cosine_distance",
    "full_precision",
    "gather_rows",
    "hard_label_loss",
    "hidden_ce",
    "hidden_mse",
    "interpolated_bound",
    "kl_divergence",
    "log_leave_one_out_mean",
    "logit_mse",
    "mlp_critic",
    "pkd_distance",
    "prediction_loss",
    "resolve_layer_map",
    "soft_cross_entropy",
    "transformer_critic",
    "transport_plan",
]
