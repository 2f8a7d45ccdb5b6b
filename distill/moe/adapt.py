"""The meta-learned student and test-time adaptation (TTA).

:class:`MetaStudent` wraps a classifier: its feature extractor (every parameter but the head's, plus a
projector when its feature size differs from the teacher's) is what one inner SGD step adapts; the head
is left as meta-learned. ``adapt`` takes one unlabeled batch of a domain, moves the features one step
towards the teacher's fused feature (all N experts, mean-squared error), and returns the adapted
parameters as a dict without touching the model. Labels are never read: the batch is stripped of them
before anything runs. Everything runs in eval mode, so BatchNorm statistics never change.

Usage::

    student = MetaStudent(model, teacher, alpha=0.01)
    params = student.adapt(unlabeled_batch)                 # {name: tensor}; student unchanged
    logits = student.logits(batch, params)                  # predictions of the adapted student
    scores = evaluate_domains(student, {"75": dataset}, collate, support=32)
"""
from __future__ import annotations

import warnings
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from distill.moe.experts import Batch, call_model, feature_size, head_path, pooled_features
from distill.teachers.meta_dmoe import MetaDMoETeacher
from shrink.data import compute_metrics

Params = dict[str, torch.Tensor]
LABEL_KEYS = ("labels", "label", "domain")
PROJECTOR = "projector"


def unlabeled(batch: Mapping[str, Any]) -> Batch:
    """``batch`` without its labels (and domain): what adaptation may see. Usage: ``unlabeled(batch)``."""
    return {key: value for key, value in batch.items() if key not in LABEL_KEYS}


class MetaStudent(nn.Module):
    """A student classifier meta-trained to adapt in one unsupervised step (see the module docstring).

    ``projector``: a ``Linear(D_s, D)`` after the pooled feature when the student's size D_s differs from
    the teacher's D (an extension of the paper); it is adapted and meta-trained with the features.
    """

    def __init__(self, model: nn.Module, teacher: MetaDMoETeacher, alpha: float, support: int = 32) -> None:
        super().__init__()
        self.model = model
        self.head = head_path(model)
        size = feature_size(model)
        self.projector = nn.Linear(size, teacher.pool.dim) if size != teacher.pool.dim else None
        self.frozen = (teacher,)  # a tuple keeps the teacher out of the student's parameters and state dict
        self.alpha, self.support = alpha, support
        self.meta_trained = False

    @property
    def teacher(self) -> MetaDMoETeacher:
        """The teacher whose fused feature is the adaptation target."""
        return self.frozen[0]

    def feature_params(self) -> Params:
        """theta_e: the parameters one inner step adapts (all but the head's), by name in this module."""
        head = f"model.{self.head}."
        return {name: param for name, param in self.named_parameters() if not name.startswith(head)}

    def features(self, batch: Batch, params: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """The pooled (and projected) feature ``(B, D)`` under ``params`` (default: the module's own)."""
        params = params or {}
        feature, _ = pooled_features(self.model, batch, _inside(params, "model"), self.head)
        if self.projector is None:
            return feature
        inside = _inside(params, PROJECTOR)
        return F.linear(feature, inside.get("weight", self.projector.weight), inside.get("bias", self.projector.bias))

    def logits(self, batch: Batch, params: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Class logits with adapted feature ``params`` (the head keeps its own); no unadapted warning."""
        return call_model(self.model, batch, _inside(params or {}, "model") or None)

    def adapt(self, batch: Mapping[str, Any], steps: int = 1) -> Params:
        """One (or ``steps``) label-free SGD step(s) of the features towards the teacher; returns the adapted
        parameters, leaving the model as it was. Usage: ``params = student.adapt(batch)``
        """
        return adapt_params(self, batch, steps)

    def forward(self, *args: torch.Tensor, **inputs: torch.Tensor) -> torch.Tensor:
        """Plain (unadapted) logits; warns once meta-trained: unadapted, it is worse than its ERM start."""
        if self.meta_trained:
            warnings.warn("this Meta-DMoE student is meta-trained but unadapted: adapt it to the domain first "
                          "(student.adapt(unlabeled_batch), then student.logits(batch, params), or `distill adapt`)",
                          stacklevel=2)
        return call_model(self.model, {"pixel_values": args[0]} if args else inputs)


def _inside(params: Mapping[str, torch.Tensor], prefix: str) -> Params:
    cut = len(prefix) + 1
    return {name[cut:]: value for name, value in params.items() if name.startswith(prefix + ".")}


def adapt_params(student: MetaStudent, batch: Mapping[str, Any], steps: int = 1) -> Params:
    """TTA: ``steps`` SGD steps (learning rate ``student.alpha``) of theta_e on the MSE between the student's
    feature and the teacher's fused feature from all N experts, in eval mode, without a second-order graph.

    Usage: ``params = adapt_params(student, {"pixel_values": x})``
    """
    inputs = unlabeled(batch)
    modes = [(module, module.training) for module in (student, student.teacher)]
    student.eval()
    try:
        with torch.no_grad():
            target = student.teacher.target(inputs, exclude=None)
        params = {name: param.detach() for name, param in student.feature_params().items()}
        for _ in range(steps):
            leaves = {name: value.clone().requires_grad_(True) for name, value in params.items()}
            with torch.enable_grad():
                loss = F.mse_loss(student.features(inputs, leaves), target)
                grads = torch.autograd.grad(loss, list(leaves.values()))
            params = {name: (value - student.alpha * grad).detach()
                      for (name, value), grad in zip(leaves.items(), grads)}
        return params
    finally:
        for module, mode in modes:
            module.train(mode)


@torch.no_grad()
def predict_domain(student: MetaStudent, examples: Dataset | Sequence[Mapping[str, Any]], collate: Any,
                   support: int | None = None, adapt: bool = True, batch_size: int = 256) -> torch.Tensor:
    """Logits for every example of one domain: adapted once on its first ``support`` examples (unlabeled),
    or with the base parameters when ``adapt`` is False. Usage: ``predict_domain(student, dataset, collate)``
    """
    total = len(examples)  # type: ignore[arg-type]
    params = None
    if adapt:
        first = collate([examples[i] for i in range(min(support or student.support, total))])
        params = student.adapt(first)
    was_training = student.training
    student.eval()
    rows = [student.logits(unlabeled(collate([examples[i] for i in range(start, min(start + batch_size, total))])),
                           params).float()
            for start in range(0, total, batch_size)]
    student.train(was_training)
    return torch.cat(rows)


def evaluate_domains(student: MetaStudent, domains: Mapping[str, Dataset], collate: Any, support: int | None = None,
                     adapt: bool = True, metric: str = "accuracy") -> dict[str, float]:
    """``metric`` per domain (each adapted independently from the meta-learned parameters) and their mean
    under ``"mean"``; labels are read only to score the predictions.

    Usage: ``evaluate_domains(student, split.targets, collate)["mean"]``
    """
    scores: dict[str, float] = {}
    for name, dataset in domains.items():
        logits = predict_domain(student, dataset, collate, support, adapt)
        labels = np.array([dataset[i]["label"] for i in range(len(dataset))])
        scores[name] = compute_metrics((metric,), logits.numpy(), labels)[metric]
    scores["mean"] = float(np.mean(list(scores.values()))) if scores else float("nan")
    return scores


__all__ = ["MetaStudent", "adapt_params", "evaluate_domains", "predict_domain", "unlabeled"]
