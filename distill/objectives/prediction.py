"""Prediction-layer (logit) distillation losses, spec §2.2, with p = softmax(z / T).

``ce`` is the reference default (soft cross-entropy, no T² factor), ``kl`` is Hinton's T²·KL and ``mse``
compares temperature-scaled logits. A regression head (one label) must use ``mse``: a softmax over one
logit is constant, so ``ce`` and ``kl`` are identically 0 (the reference's STS-B defect, §6.3).

Usage::

    kd = prediction_loss("kl", temperature=4.0, num_labels=3)
    loss = kd(student_logits, teacher_logits)
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

import torch.nn.functional as F
from torch import Tensor

from distill.objectives.precision import full_precision
from shrink.errors import UserError
from shrink.registry import Registry
from shrink.train import supervised_loss

KDFunction = Callable[[Tensor, Tensor, float], Tensor]
PREDICTION_LOSSES: Registry[KDFunction] = Registry("prediction loss")
REGRESSION_KD_LOSS = "mse"
DEFAULT_KD_LOSS = "ce"


@PREDICTION_LOSSES.register("ce", aliases=("soft_ce",))
@full_precision
def soft_cross_entropy(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """mean_b(-Σ_c p_T log p_S) = KL(p_T‖p_S) + H(p_T), no T². Usage: ``soft_cross_entropy(z_s, z_t)``."""
    p_teacher = F.softmax(teacher_logits / temperature, dim=-1)
    return -(p_teacher * F.log_softmax(student_logits / temperature, dim=-1)).sum(-1).mean()


@PREDICTION_LOSSES.register("kl")
@full_precision
def kl_divergence(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """T²·KL(p_T‖p_S), batch mean (Hinton). Usage: ``kl_divergence(z_s, z_t, 4.0)``."""
    classes = student_logits.shape[-1]
    log_student = F.log_softmax(student_logits.reshape(-1, classes) / temperature, dim=-1)
    log_teacher = F.log_softmax(teacher_logits.reshape(-1, classes) / temperature, dim=-1)
    kl = F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True)
    return kl * temperature**2


@PREDICTION_LOSSES.register("mse")
@full_precision
def logit_mse(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Mean over elements of (z_S/T - z_T/T)². Usage: ``logit_mse(z_s, z_t)``."""
    return F.mse_loss(student_logits / temperature, teacher_logits / temperature)


@full_precision
def hard_label_loss(logits: Tensor, labels: Tensor, num_labels: int) -> Tensor:
    """The gold-label term: cross-entropy, or MSE for a regression head (``num_labels == 1``).

    Usage: ``loss = w_hard * hard_label_loss(student_logits, batch["labels"], num_labels=2)``
    """
    return supervised_loss(logits, labels, is_regression=num_labels == 1)


@dataclass(frozen=True)
class KDLoss:
    """A resolved prediction-layer loss: registry name and temperature. Usage: ``KDLoss("kl", 2.0)(z_s, z_t)``."""

    name: str
    temperature: float = 1.0

    def __call__(self, student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
        if student_logits.shape != teacher_logits.shape:
            raise UserError(
                f"student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} "
                "differ; the teacher and the student need the same label set"
            )
        return PREDICTION_LOSSES.get(self.name)(student_logits, teacher_logits, self.temperature)


def prediction_loss(name: str | None = None, temperature: float = 1.0, num_labels: int = 2) -> KDLoss:
    """Resolve a KD loss by name for a task with ``num_labels`` outputs (None: ``ce``, or ``mse`` for regression).

    Usage: ``kd = prediction_loss(None, num_labels=1)  # -> KDLoss("mse", 1.0)``
    """
    if temperature <= 0:
        raise UserError(f"the KD temperature must be positive, got {temperature}")
    if num_labels < 1:
        raise UserError(f"num_labels must be at least 1, got {num_labels}")
    regression = num_labels == 1
    canonical = PREDICTION_LOSSES.canonical(name or (REGRESSION_KD_LOSS if regression else DEFAULT_KD_LOSS))
    if regression and canonical != REGRESSION_KD_LOSS:
        raise UserError(
            f"a regression task needs the mse KD loss: '{name}' over a single logit is always 0; "
            f"use kd loss '{REGRESSION_KD_LOSS}'"
        )
    if canonical == "ce" and temperature != 1:
        warnings.warn(
            f"KD loss 'ce' has no T² factor, so at T={temperature} its gradients shrink by 1/T²; "
            "use 'kl' with a temperature",
            UserWarning,
            stacklevel=2,
        )
    return KDLoss(canonical, float(temperature))


__all__ = [
    "PREDICTION_LOSSES",
    "KDLoss",
    "hard_label_loss",
    "kl_divergence",
    "logit_mse",
    "prediction_loss",
    "soft_cross_entropy",
]
