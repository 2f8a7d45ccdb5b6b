"""Intermediate-layer losses over mapped layer pairs (spec §2.3) and the objective that sums them.

Losses compare one student feature with one teacher feature (``[B, L, d]`` hidden states, ``[B, C, H, W]``
feature maps, or ``[B, H, L, L]`` pre-softmax attention scores), with the mask taken from the student's
attention mask. Except for MI, the student goes through a trainable Linear(d_S -> d_T) (init N(0, 0.02),
bias 0), one per pair, whenever d_S != d_T. MI losses share one critic across the pairs of a fixed map
(``skip``/``last``) and use one per pair under ``emd``.

Usage::

    objective = IntermediateObjective("hidden_mse", "skip", n_teacher=12, n_student=4,
                                      d_student=312, d_teacher=768)
    loss = objective(student_out.hidden_states, teacher_out.hidden_states, batch["attention_mask"])
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Literal, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distill.objectives.layer_maps import FeatureKind, LayerMap, resolve_layer_map, transport_plan
from distill.objectives.mi import MILoss
from distill.objectives.precision import full_precision
from distill.objectives.tokens import as_tokens, check_aligned, masked_mean, summary
from shrink.errors import UserError
from shrink.registry import Registry

Features = Sequence[Tensor] | Mapping[int, Tensor]
PairFunction = Callable[[Tensor, Tensor, Tensor | None], Tensor]
PROJECTION_STD = 0.02
ATTENTION_MASKED = -100.0  # TinyBERT: scores at or below this are masked positions, compared as 0


def hidden_mse(student: Tensor, teacher: Tensor, mask: Tensor | None = None) -> Tensor:
    """Σ m·‖s - t‖² / (Σm · d_T) over tokens [B, L, d]. Usage: ``hidden_mse(s, t, mask)``."""
    return masked_mean((student - teacher).pow(2).sum(-1) / teacher.shape[-1], mask)


def hidden_ce(student: Tensor, teacher: Tensor, mask: Tensor | None = None) -> Tensor:
    """Soft cross-entropy over the hidden dimension, mean over valid tokens. Usage: ``hidden_ce(s, t, mask)``."""
    return masked_mean(-(F.softmax(teacher, -1) * F.log_softmax(student, -1)).sum(-1), mask)


def cosine_distance(student: Tensor, teacher: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean over valid tokens of 1 - cos(s, t). Usage: ``cosine_distance(s, t, mask)``."""
    return masked_mean(1.0 - F.cosine_similarity(student, teacher, dim=-1), mask)


def pkd_distance(student: Tensor, teacher: Tensor, mask: Tensor | None = None) -> Tensor:
    """Patient-KD on [CLS] vectors [B, d]: mean_b ‖s/‖s‖ - t/‖t‖‖². Usage: ``pkd_distance(s_cls, t_cls)``."""
    return (F.normalize(student, dim=-1) - F.normalize(teacher, dim=-1)).pow(2).sum(-1).mean()


class ProjectedLoss(nn.Module):
    """A pair loss on the projected student: Linear(d_S -> d_T) when the widths differ, else identity.

    ``view`` is "tokens" (position-aligned [B, L, d]) or "summary" (one vector per example, e.g. [CLS]).
    Usage: ``ProjectedLoss(hidden_mse, 312, 768)(h_s, h_t, mask)``
    """

    shared_across_pairs = False
    features: FeatureKind = "hidden"

    def __init__(self, fn: PairFunction, d_student: int, d_teacher: int,
                 view: Literal["tokens", "summary"] = "tokens") -> None:
        super().__init__()
        self.fn = fn
        self.view = view
        self.projection = nn.Linear(d_student, d_teacher) if d_student != d_teacher else None
        if self.projection is not None:
            nn.init.normal_(self.projection.weight, std=PROJECTION_STD)
            nn.init.zeros_(self.projection.bias)

    @full_precision
    def forward(self, student: Tensor, teacher: Tensor, mask: Tensor | None = None) -> Tensor:
        """The loss between W·h_S and h_T."""
        if self.view == "summary":
            student, teacher, mask = summary(student), summary(teacher), None
        else:
            student, teacher = as_tokens(student), as_tokens(teacher)
            check_aligned(student, teacher, mask, self.fn.__name__)
        if self.projection is not None:
            student = self.projection(student)
        if student.shape[-1] != teacher.shape[-1]:
            raise UserError(f"{self.fn.__name__} got student width {student.shape[-1]} and teacher width "
                            f"{teacher.shape[-1]}; give the objective the models' real hidden sizes")
        return self.fn(student, teacher, mask)

    def extra_repr(self) -> str:
        return f"fn={self.fn.__name__}, view={self.view}"


class AttentionMSE(nn.Module):
    """TinyBERT's attention loss: MSE of pre-softmax scores [B, H, L, L] over all heads, masked entries as 0.

    Entries ≤ -100 (additively masked scores) and, when a mask is given, padded key columns count as 0.
    ``d_student``/``d_teacher`` are the head counts, which must be equal.
    Usage: ``AttentionMSE(12, 12)(scores_s, scores_t, mask)``
    """

    shared_across_pairs = False
    features: FeatureKind = "attention"

    def __init__(self, d_student: int, d_teacher: int) -> None:
        super().__init__()
        if d_student != d_teacher:
            raise UserError(f"attention_mse needs equal head counts, got student {d_student} and teacher "
                            f"{d_teacher}; use a hidden-state loss instead")

    @full_precision
    def forward(self, student: Tensor, teacher: Tensor, mask: Tensor | None = None) -> Tensor:
        """Mean squared difference of the cleaned score tensors."""
        if student.shape != teacher.shape:
            raise UserError(f"attention_mse got student scores {tuple(student.shape)} and teacher scores "
                            f"{tuple(teacher.shape)}; it needs equal heads and the same tokenizer and length")
        keep = None if mask is None else mask[:, None, None, :].bool()
        student, teacher = (self._clean(scores, keep) for scores in (student, teacher))
        return F.mse_loss(student, teacher)

    @staticmethod
    def _clean(scores: Tensor, keep: Tensor | None) -> Tensor:
        scores = torch.where(scores <= ATTENTION_MASKED, torch.zeros_like(scores), scores)
        return scores if keep is None else scores * keep


PairLossBuilder = Callable[..., nn.Module]
INTERMEDIATE_LOSSES: Registry[PairLossBuilder] = Registry("intermediate loss")
INTERMEDIATE_LOSSES.add("hidden_mse", functools.partial(ProjectedLoss, hidden_mse), aliases=("mse",))
INTERMEDIATE_LOSSES.add("hidden_ce", functools.partial(ProjectedLoss, hidden_ce), aliases=("ce",))
INTERMEDIATE_LOSSES.add("cos", functools.partial(ProjectedLoss, cosine_distance))
INTERMEDIATE_LOSSES.add("pkd", functools.partial(ProjectedLoss, pkd_distance, view="summary"))
INTERMEDIATE_LOSSES.add("attention_mse", AttentionMSE)
INTERMEDIATE_LOSSES.add("mi", MILoss)
INTERMEDIATE_LOSSES.add("infonce", functools.partial(MILoss, alpha=1.0))
INTERMEDIATE_LOSSES.add("tuba", functools.partial(MILoss, alpha=0.0))
INTERMEDIATE_LOSSES.add("nwj", functools.partial(MILoss, alpha=0.0, baseline="one"))
EMD_LOSSES = ("hidden_mse", "mi", "infonce", "tuba", "nwj")


def _loss_class(build: PairLossBuilder) -> Any:
    return build.func if isinstance(build, functools.partial) else build


def _width(dims: int | Sequence[int], index: int) -> int:
    return dims if isinstance(dims, int) else dims[index]


class IntermediateObjective(nn.Module):
    """Σ (or mean) of a registered pair loss over a layer map; under ``emd``, ΣF⊙C plus the embeddings pair.

    ``d_student``/``d_teacher`` are the feature widths (one int, or one per layer index, e.g. CNN stages);
    for ``attention_mse`` they are the head counts. Features are indexed by layer: hidden index 0 is the
    embeddings. ``num_terms`` is the number of summed terms, ``last_flow`` the latest EMD flow.
    Usage: ``IntermediateObjective("mi", "skip", 12, 4, 312, 768, alpha=0.9)(hs_s, hs_t, mask)``
    """

    def __init__(self, loss: str, layer_map: str, n_teacher: int, n_student: int,
                 d_student: int | Sequence[int], d_teacher: int | Sequence[int],
                 reduction: Literal["sum", "mean"] = "sum", **loss_options: Any) -> None:
        super().__init__()
        if reduction not in ("sum", "mean"):
            raise UserError(f"unknown pair reduction '{reduction}'; known: sum (reference), mean")
        build = INTERMEDIATE_LOSSES.get(loss)
        loss_class = _loss_class(build)
        self.loss_name = INTERMEDIATE_LOSSES.canonical(loss)
        self.layer_map: LayerMap = resolve_layer_map(layer_map, n_teacher, n_student, loss_class.features)
        if self.layer_map.transported and self.loss_name not in EMD_LOSSES:
            raise UserError(f"the emd layer map works with {', '.join(EMD_LOSSES)}; got '{loss}'")
        self.n_teacher, self.n_student, self.reduction = n_teacher, n_student, reduction
        self.features: FeatureKind = loss_class.features
        shared = loss_class.shared_across_pairs and not self.layer_map.transported
        self.losses = nn.ModuleDict()
        self._keys: dict[tuple[int, int], str] = {}
        for teacher, student in self.layer_map.all_pairs():
            widths = (_width(d_student, student), _width(d_teacher, teacher))
            key = f"d{widths[0]}_{widths[1]}" if shared else f"t{teacher}_s{student}"
            if key not in self.losses:
                self.losses[key] = build(*widths, **loss_options)
            self._keys[(teacher, student)] = key
        self.num_terms = len(self.layer_map.pairs) + bool(self.layer_map.transported)
        self.skipped: list[tuple[int, int]] = []
        self.last_flow: Tensor | None = None

    def drop_pairs(self, pairs: Sequence[tuple[int, int]]) -> None:
        """Stop computing the fixed ``pairs`` (listed in ``skipped``); a loss module no pair uses is removed.

        UserError when no pair would be left. Usage: ``objective.drop_pairs([(0, 0)])``
        """
        drop = [pair for pair in self.layer_map.pairs if pair in set(pairs)]
        remaining = tuple(pair for pair in self.layer_map.pairs if pair not in drop)
        if not remaining and not self.layer_map.transported:
            raise UserError(f"no layer pair of '{self.loss_name}' is left after skipping {drop}; map other layers")
        self.layer_map = dataclasses.replace(self.layer_map, pairs=remaining)
        self.skipped += drop
        for pair in drop:
            key = self._keys.pop(pair)
            if key not in self._keys.values():
                del self.losses[key]
        self.num_terms = len(remaining) + bool(self.layer_map.transported)

    @property
    def last_k(self) -> int | None:
        """The MI batch size K (after gathering) of the latest forward; None without MI. Usage: ``log(k=obj.last_k)``."""
        return max((m.last_k for m in self.losses.values() if isinstance(m, MILoss)), default=None)

    def pair_module(self, teacher: int, student: int) -> nn.Module:
        """The loss module (projection or critic) of one pair. Usage: ``objective.pair_module(3, 1)``."""
        return self.losses[self._keys[(teacher, student)]]

    def student_layers(self) -> list[int]:
        """Student feature indices the objective reads. Usage: ``paths = [layer_paths[i] for i in obj.student_layers()]``."""
        return sorted({s for _, s in self.layer_map.all_pairs()})

    def teacher_layers(self) -> list[int]:
        """Teacher feature indices the objective reads. Usage: ``objective.teacher_layers()``."""
        return sorted({t for t, _ in self.layer_map.all_pairs()})

    def forward(self, student: Features, teacher: Features, mask: Tensor | None = None) -> Tensor:
        """The intermediate loss over all mapped pairs."""
        self._check_count(student, self.n_student, "student")
        self._check_count(teacher, self.n_teacher, "teacher")
        terms = [self.pair_module(t, s)(student[s], teacher[t], mask) for t, s in self.layer_map.pairs]
        if self.layer_map.transported:
            costs = torch.stack([self.pair_module(t, s)(student[s], teacher[t], mask)
                                 for t, s in self.layer_map.transported]).view(self.n_student, self.n_teacher)
            flow = torch.as_tensor(transport_plan(costs.detach().double().cpu().numpy()), dtype=costs.dtype,
                                   device=costs.device)
            self.last_flow = flow
            terms.append((flow * costs).sum())
        total = torch.stack(terms).sum()
        return total / len(terms) if self.reduction == "mean" else total

    def _check_count(self, features: Features, layers: int, side: str) -> None:
        if isinstance(features, Mapping):
            return
        hidden = self.features == "hidden"
        expected = layers + 1 if hidden else layers
        if len(features) != expected:
            what = "all hidden states (index 0 = embeddings)" if hidden else "one attention score tensor per layer"
            raise UserError(f"the {side} gave {len(features)} feature tensors but has {layers} layers; "
                            f"pass {what}, {expected} in all, or a dict by layer index")


__all__ = [
    "EMD_LOSSES",
    "INTERMEDIATE_LOSSES",
    "AttentionMSE",
    "IntermediateObjective",
    "ProjectedLoss",
    "cosine_distance",
    "hidden_ce",
    "hidden_mse",
    "pkd_distance",
]
