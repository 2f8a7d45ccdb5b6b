"""The Meta-DMoE aggregator: a pre-norm transformer over the expert axis of each sample.

Tokens are ``(B, N, D)``, one per expert. There is no positional or expert embedding and no CLS token,
so the aggregator is permutation invariant and takes N-1 tokens (one expert dropped) as well as N.
``get_feat`` (the mean over experts after the blocks) is the distillation target; ``forward`` adds a
LayerNorm + Linear head, used only to pre-train it (after meta-training the head is stale).

Attention is written out with matmuls and softmax rather than ``nn.MultiheadAttention``: meta-training
differentiates through the student's inner gradient, and plain ops keep every path twice-differentiable.
Usage::

    aggregator = Aggregator(dim=32, n_out=10, heads=4)
    target = aggregator.get_feat(tokens)      # (B, 32)
    logits = aggregator(tokens)               # (B, 10), pre-training only
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from shrink.errors import UserError


class ExpertAttention(nn.Module):
    """Multi-head self-attention across the tokens of each sample. Usage: ``ExpertAttention(32, 4, 0.1)(x)``."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        q, k, v = self.qkv(x).view(batch, tokens, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        weights = self.drop((q @ k.transpose(-2, -1) / math.sqrt(dim // self.heads)).softmax(-1))
        return self.drop(self.proj((weights @ v).transpose(1, 2).reshape(batch, tokens, dim)))


class AggregatorBlock(nn.Module):
    """x <- MHA(LN x) + x; x <- FF(LN x) + x with FF = Linear(D, rD) - GELU - Dropout - Linear(rD, D) - Dropout."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        hidden = int(round(dim * mlp_ratio))
        self.norm1, self.attn = nn.LayerNorm(dim), ExpertAttention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim),
                                 nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Aggregator(nn.Module):
    """The spec's aggregator; ``config`` rebuilds it (saved as JSON beside its safetensors).

    Usage: ``Aggregator(dim=2048, n_out=182, depth=1, heads=16)``
    """

    def __init__(self, dim: int, n_out: int, depth: int = 1, heads: int = 16, mlp_ratio: float = 2.0,
                 dropout: float = 0.1) -> None:
        super().__init__()
        if heads < 1 or dim % heads:
            raise UserError(f"the aggregator's {heads} attention heads do not divide the feature size {dim}; "
                            f"pick a head count that divides {dim} (e.g. {math.gcd(dim, 16)})")
        if depth < 1:
            raise UserError(f"the aggregator needs at least one layer, got depth {depth}")
        self.config: dict[str, Any] = {"dim": dim, "n_out": n_out, "depth": depth, "heads": heads,
                                       "mlp_ratio": mlp_ratio, "dropout": dropout}
        self.blocks = nn.Sequential(*(AggregatorBlock(dim, heads, mlp_ratio, dropout) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, n_out)

    def get_feat(self, tokens: torch.Tensor) -> torch.Tensor:
        """The fused teacher feature ``(B, D)``: the blocks over ``(B, N, D)`` tokens, averaged over experts."""
        if tokens.dim() != 3 or tokens.shape[1] < 1:
            raise ValueError(f"aggregator tokens must be (batch, experts >= 1, dim), got {tuple(tokens.shape)}")
        return self.blocks(tokens).mean(dim=1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Class logits from the fused feature (pre-training only)."""
        return self.head(self.norm(self.get_feat(tokens)))


__all__ = ["Aggregator", "AggregatorBlock", "ExpertAttention"]
