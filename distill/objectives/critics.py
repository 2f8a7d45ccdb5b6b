"""Critics f(s, t) and baselines log q(t) for MI-α (spec §2.4). Both critics are separable:
S = U_S U_Tᵀ with one encoder per side, so a batch's score matrix is one matmul and the encodings can be
all-gathered across processes before it.

- ``mlp`` (default): g(x) = Linear-ReLU-Linear-ReLU-Linear on the [CLS] vector (hidden 128, out 64);
  baseline: the same MLP on the teacher's [CLS] with out 1.
- ``transformer``: per side sinusoidal positions + a 2-layer TransformerEncoder (8 heads, FFN 512,
  dropout 0.1, final LayerNorm, padding mask), output ×√d_model -> Linear(d_model -> 16); each example's
  [L, 16] output (padded rows zeroed) is L2-normalised along the sequence and flattened. This is the
  intended B×B form (reference commit 126aa4f), not the final reference's axis-swapped L×L (§6.1).
  Baseline: a teacher-side trunk with out 1, averaged over valid tokens.

Usage::

    critic = CRITICS.get("mlp")(d_student=312, d_teacher=768, with_baseline=True)
    scores = critic(student_hidden, teacher_hidden, mask)        # [B, B]
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distill.objectives.tokens import as_tokens, masked_mean, summary
from shrink.errors import UserError
from shrink.registry import Registry


class SeparableCritic(nn.Module):
    """f(s_i, t_j) = u_S(s_i)ᵀ u_T(t_j), with an optional baseline head log q(t).

    Usage: ``SeparableCritic(student_encoder, teacher_encoder, baseline)(h_s, h_t, mask)  # [B, B]``
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, baseline: nn.Module | None = None) -> None:
        super().__init__()
        self.student = student
        self.teacher = teacher
        self.baseline = baseline

    def encode_student(self, hidden: Tensor, mask: Tensor | None = None) -> Tensor:
        """u_S for each example, [B, e]. Usage: ``critic.encode_student(h_s, mask)``."""
        return self.student(hidden, mask)

    def encode_teacher(self, hidden: Tensor, mask: Tensor | None = None) -> Tensor:
        """u_T for each example, [B, e]. Usage: ``critic.encode_teacher(h_t, mask)``."""
        return self.teacher(hidden, mask)

    def log_baseline(self, hidden: Tensor, mask: Tensor | None = None) -> Tensor:
        """log q(t) for each teacher example, [B]. Usage: ``critic.log_baseline(h_t, mask)``."""
        if self.baseline is None:
            raise UserError("this critic was built without a baseline; build it with with_baseline=True")
        return self.baseline(hidden, mask).reshape(-1)

    def forward(self, student: Tensor, teacher: Tensor, mask: Tensor | None = None) -> Tensor:
        """The score matrix S [B, B]: rows student examples, columns teacher examples."""
        return self.encode_student(student, mask) @ self.encode_teacher(teacher, mask).T


def _mlp(d_in: int, hidden: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, out))


class SummaryMLP(nn.Module):
    """An MLP on each example's summary vector ([CLS], or the average of a feature map).

    Usage: ``SummaryMLP(768, hidden=128, out=64)(hidden_states)  # [B, 64]``
    """

    def __init__(self, d_in: int, hidden: int = 128, out: int = 64) -> None:
        super().__init__()
        self.net = _mlp(d_in, hidden, out)

    def forward(self, features: Tensor, mask: Tensor | None = None) -> Tensor:
        """[B, out] from [B, d], [B, L, d] or [B, C, H, W] features; the mask is not needed for [CLS]."""
        return self.net(summary(features))


def sinusoidal_positions(length: int, d_model: int, device: torch.device | None = None) -> Tensor:
    """The Transformer's sinusoidal position table [length, d_model]. Usage: ``sinusoidal_positions(128, 312)``."""
    position = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    frequency = torch.exp(torch.arange(0, d_model, 2, device=device, dtype=torch.float32)
                          * (-math.log(10000.0) / d_model))
    table = torch.zeros(length, d_model, device=device)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency)[:, : d_model // 2]
    return table


class TokenTransformer(nn.Module):
    """Positions + TransformerEncoder (final LayerNorm, padding mask), ×√d_model, Linear to ``out`` per token.

    Usage: ``TokenTransformer(312, out=16)(hidden, mask)  # [B, L, 16]``
    """

    def __init__(self, d_model: int, out: int, heads: int = 8, ffn: int = 512, layers: int = 2,
                 dropout: float = 0.1) -> None:
        super().__init__()
        if d_model % heads:
            raise UserError(f"the transformer critic needs a hidden size divisible by its {heads} heads, "
                            f"got {d_model}; pass heads=<a divisor of {d_model}>")
        layer = nn.TransformerEncoderLayer(d_model, heads, ffn, dropout, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, norm=nn.LayerNorm(d_model), enable_nested_tensor=False)
        self.head = nn.Linear(d_model, out)
        self.scale = math.sqrt(d_model)

    def forward(self, features: Tensor, mask: Tensor | None = None) -> Tensor:
        """[B, L, out] from features of any shape :func:`as_tokens` accepts."""
        tokens = as_tokens(features)
        tokens = tokens + sinusoidal_positions(tokens.shape[1], tokens.shape[2], tokens.device)
        padding = None if mask is None else ~mask.bool()
        return self.head(self.encoder(tokens, src_key_padding_mask=padding) * self.scale)


class SequenceEncoder(nn.Module):
    """A critic side of the B×B transformer critic: [L, out] per example, padded rows zeroed, L2-normalised
    along the sequence, flattened to [B, L·out].

    Usage: ``SequenceEncoder(768, out=16)(hidden, mask)  # [B, L*16]``
    """

    def __init__(self, d_model: int, out: int = 16, **trunk: int | float) -> None:
        super().__init__()
        self.trunk = TokenTransformer(d_model, out, **trunk)  # type: ignore[arg-type]

    def forward(self, features: Tensor, mask: Tensor | None = None) -> Tensor:
        """[B, L·out] unit-column encodings."""
        encoded = self.trunk(features, mask)
        if mask is not None:
            encoded = encoded * mask[..., None].to(encoded.dtype)
        return F.normalize(encoded, dim=1).flatten(1)


class SequenceBaseline(nn.Module):
    """The transformer critic's baseline: a teacher-side trunk with out 1, averaged over valid tokens -> [B].

    Usage: ``SequenceBaseline(768)(teacher_hidden, mask)  # [B]``
    """

    def __init__(self, d_model: int, **trunk: int | float) -> None:
        super().__init__()
        self.trunk = TokenTransformer(d_model, 1, **trunk)  # type: ignore[arg-type]

    def forward(self, features: Tensor, mask: Tensor | None = None) -> Tensor:
        """log q(t) per example, [B]."""
        return masked_mean(self.trunk(features, mask).squeeze(-1), mask, dim=1)


CriticBuilder = Callable[..., SeparableCritic]
CRITICS: Registry[CriticBuilder] = Registry("critic")


@CRITICS.register("mlp")
def mlp_critic(d_student: int, d_teacher: int, hidden: int = 128, out: int = 64,
               with_baseline: bool = False) -> SeparableCritic:
    """The separable [CLS] MLP critic (and MLP baseline). Usage: ``mlp_critic(312, 768, with_baseline=True)``."""
    baseline = SummaryMLP(d_teacher, hidden, 1) if with_baseline else None
    return SeparableCritic(SummaryMLP(d_student, hidden, out), SummaryMLP(d_teacher, hidden, out), baseline)


@CRITICS.register("transformer")
def transformer_critic(d_student: int, d_teacher: int, out: int = 16, heads: int = 8, ffn: int = 512,
                       layers: int = 2, dropout: float = 0.1, with_baseline: bool = False) -> SeparableCritic:
    """The B×B sequence critic (and transformer baseline). Usage: ``transformer_critic(312, 768)``."""
    trunk = {"heads": heads, "ffn": ffn, "layers": layers, "dropout": dropout}
    baseline = SequenceBaseline(d_teacher, **trunk) if with_baseline else None
    return SeparableCritic(SequenceEncoder(d_student, out, **trunk), SequenceEncoder(d_teacher, out, **trunk),
                           baseline)


__all__ = [
    "CRITICS",
    "SeparableCritic",
    "SequenceBaseline",
    "SequenceEncoder",
    "SummaryMLP",
    "TokenTransformer",
    "mlp_critic",
    "sinusoidal_positions",
    "transformer_critic",
]
