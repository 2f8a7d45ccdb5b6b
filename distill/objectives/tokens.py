"""One view of features for every loss: token sequences [B, L, d], masks and per-example summaries.

Hugging Face hidden states are already [B, L, d]; a CNN feature map [B, C, H, W] becomes H·W tokens of
C channels (so a Linear projection acts as a 1x1 convolution); a vector [B, d] is one token.

Usage::

    tokens = as_tokens(feature_map)          # [B, H*W, C]
    loss = masked_mean(per_token, mask)      # mean over valid tokens
"""
from __future__ import annotations

import torch
from torch import Tensor

from shrink.errors import UserError


def as_tokens(features: Tensor) -> Tensor:
    """Features as [B, L, d]. Usage: ``as_tokens(torch.zeros(2, 8, 4, 4)).shape == (2, 16, 8)``."""
    if features.dim() == 2:
        return features.unsqueeze(1)
    if features.dim() == 3:
        return features
    if features.dim() == 4:
        return features.flatten(2).transpose(1, 2)
    raise UserError(f"features of shape {tuple(features.shape)} are not [B, d], [B, L, d] or [B, C, H, W]")


def summary(features: Tensor) -> Tensor:
    """One vector per example: [CLS] (position 0) of a sequence, the global average of a feature map.

    Usage: ``summary(hidden_states[-1]).shape == (batch, hidden)``
    """
    if features.dim() == 4:
        return features.mean(dim=(2, 3))
    return as_tokens(features)[:, 0]


def masked_mean(values: Tensor, mask: Tensor | None, dim: int | None = None) -> Tensor:
    """Mean of ``values`` [B, L] over the tokens where ``mask`` is set (all when None), overall or along ``dim``.

    Usage: ``masked_mean(per_token_loss, batch["attention_mask"])``
    """
    weights = torch.ones_like(values) if mask is None else mask.to(values.dtype)
    if dim is None:
        return (values * weights).sum() / weights.sum().clamp_min(1.0)
    return (values * weights).sum(dim) / weights.sum(dim).clamp_min(1.0)


def check_aligned(student: Tensor, teacher: Tensor, mask: Tensor | None, loss: str) -> None:
    """Refuse token-level comparison of sequences that are not position-aligned (spec §6.13).

    Usage: ``check_aligned(s_tokens, t_tokens, mask, "hidden_mse")``
    """
    if student.shape[:2] != teacher.shape[:2]:
        raise UserError(
            f"{loss} compares tokens position by position, but the student has {tuple(student.shape[:2])} "
            f"(batch, tokens) and the teacher {tuple(teacher.shape[:2])}; use the same tokenizer and max "
            "length, or a [CLS]-based loss (pkd, mi with the mlp critic)"
        )
    if mask is not None and tuple(mask.shape) != tuple(student.shape[:2]):
        raise UserError(f"the attention mask has shape {tuple(mask.shape)} but the features have "
                        f"{tuple(student.shape[:2])} (batch, tokens); pass the student's attention mask")
