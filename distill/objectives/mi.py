"""MI-α: Poole et al.'s interpolated lower bound on I(H^S; H^T); the loss is -I_α (spec §2.4).

With S[i, j] = f(s_i, t_j) over K examples (rows student, columns teacher) and b_i = log q(t_i):

1. nce[i, j] = log((1/(K-1)) Σ_{k≠j} e^{S[i,k]})
2. ib[i, j]  = log(α·e^{nce[i,j]} + (1-α)·e^{b_i}), by logsumexp with log α = -softplus(-logit α)
3. marg = (1/(K(K-1))) Σ_{i≠j} e^{S[i,j] - ib[i,i]}
4. joint = (1/(K(K-1))) Σ_{i≠j} (S[i,i] - ib[i,j])
5. I_α = 1 + joint - marg

α = 1 is InfoNCE (≤ log(K-1)), α = 0 is TUBA, and with b ≡ 1 NWJ; α is a fixed logit, so both endpoints
are exact. Negatives are the other examples of the batch; under torch.distributed the encodings are
all-gathered first (gradients reach the local shard), so K is the global batch, logged as ``last_k``.

Usage::

    mi = MILoss(d_student=312, d_teacher=768, alpha=0.9)
    loss = mi(student_hidden, teacher_hidden, attention_mask)     # -I_α, and mi.last_k == K
"""
from __future__ import annotations

import math
from typing import Literal

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
import torch.nn.functional as F
from torch import Tensor, nn

from distill.objectives.critics import CRITICS
from distill.objectives.precision import full_precision
from shrink.errors import UserError

BaselineKind = Literal["learned", "one"]


def alpha_logit(alpha: float) -> Tensor:
    """logit α as an fp32 scalar, ±inf at the endpoints; UserError outside [0, 1]. Usage: ``alpha_logit(0.9)``."""
    if not 0.0 <= alpha <= 1.0:
        raise UserError(f"MI-α needs alpha in [0, 1] (0 = TUBA, 1 = InfoNCE), got {alpha}")
    return torch.logit(torch.tensor(float(alpha), dtype=torch.float64)).float()


def log_leave_one_out_mean(scores: Tensor) -> Tensor:
    """L[i, j] = log((1/(K-1)) Σ_{k≠j} e^{S[i,k]}), stable and O(K²).

    Removing a non-maximal term from a row's sum (which still holds the max term, ≥ 1 after shifting)
    cannot cancel; the row's maximum column is computed directly by logsumexp without it.
    Usage: ``log_leave_one_out_mean(torch.randn(8, 8))``
    """
    k = scores.shape[1]
    row_max, arg_max = scores.max(dim=1, keepdim=True)
    is_max = torch.zeros_like(scores, dtype=torch.bool).scatter(1, arg_max, True)
    terms = (scores - row_max).exp()
    others = row_max + torch.log(terms.sum(1, keepdim=True) - terms.masked_fill(is_max, 0.0))
    without_max = scores.masked_fill(is_max, float("-inf")).logsumexp(dim=1, keepdim=True)
    return torch.where(is_max, without_max, others) - math.log(k - 1)


@full_precision
def interpolated_bound(scores: Tensor, log_baseline: Tensor, logit_alpha: Tensor | float) -> Tensor:
    """I_α for a K×K score matrix and b_i = log q(t_i) of row i's teacher (steps 1-5 above), in fp32.

    Usage: ``interpolated_bound(scores, torch.zeros(len(scores)), alpha_logit(0.9))``
    """
    k = scores.shape[0]
    if k < 2 or scores.shape != (k, k):
        raise UserError(f"MI-α needs a square score matrix over at least 2 examples, got {tuple(scores.shape)}; "
                        "use a batch size of 2 or more")
    logit = torch.as_tensor(logit_alpha, dtype=scores.dtype, device=scores.device)
    nce = log_leave_one_out_mean(scores)
    interpolated = torch.logaddexp(nce - F.softplus(-logit), log_baseline[:, None] - F.softplus(logit))
    off_diagonal = ~torch.eye(k, dtype=torch.bool, device=scores.device)
    pairs = k * (k - 1)
    marg = ((scores - interpolated.diagonal()[:, None])[off_diagonal].logsumexp(0) - math.log(pairs)).exp()
    joint = (scores.diagonal()[:, None] - interpolated)[off_diagonal].sum() / pairs
    return 1.0 + joint - marg


def gather_rows(rows: Tensor) -> Tensor:
    """Concatenate ``rows`` ([B] or [B, e]) from every process, gradients flowing to the local shard; as is
    when not distributed. Batch sizes and widths may differ per process: rows are zero-padded for the
    exchange and the padding rows dropped; padded columns leave the critic's dot products unchanged.
    Usage: ``u_all = gather_rows(u_local)``
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return rows
    shape = torch.tensor([rows.shape[0], rows.shape[-1]], device=rows.device)
    shapes = [torch.zeros_like(shape) for _ in range(dist.get_world_size())]
    dist.all_gather(shapes, shape)
    counts = [int(s[0]) for s in shapes]
    width = max(int(s[1]) for s in shapes) if rows.dim() == 2 else 0
    padding = (0, width - rows.shape[1], 0, max(counts) - rows.shape[0]) if rows.dim() == 2 \
        else (0, max(counts) - rows.shape[0])
    parts = dist_fn.all_gather(F.pad(rows, padding).contiguous())
    return torch.cat([part[:count] for part, count in zip(parts, counts)], dim=0)


class MILoss(nn.Module):
    """-I_α(H^S; H^T) with a registered critic and a learned (or constant-one) baseline; no projection.

    ``baseline="one"`` with α = 0 is NWJ. At α = 1 the baseline has no effect, so none is built.
    Usage: ``MILoss(312, 768, alpha=0.9, critic="mlp")(h_s, h_t, mask)``
    """

    shared_across_pairs = True
    features = "hidden"

    def __init__(self, d_student: int, d_teacher: int, alpha: float = 0.9, critic: str = "mlp",
                 baseline: BaselineKind = "learned", **critic_options: int | float) -> None:
        super().__init__()
        if baseline not in ("learned", "one"):
            raise UserError(f"unknown MI baseline '{baseline}'; known: learned, one")
        self.register_buffer("alpha_logit", alpha_logit(alpha))
        self.alpha = float(alpha)
        learned = baseline == "learned" and alpha < 1.0
        self.critic = CRITICS.get(critic)(d_student, d_teacher, with_baseline=learned, **critic_options)
        self.constant_baseline = None if learned else float(baseline == "one")
        self.last_k = 0
        self.last_mi: Tensor | None = None

    @full_precision
    def forward(self, student: Tensor, teacher: Tensor, mask: Tensor | None = None) -> Tensor:
        """-I_α over the (gathered) batch; also records ``last_k`` and ``last_mi``."""
        u_student = self.critic.encode_student(student, mask)
        u_teacher = self.critic.encode_teacher(teacher, mask)
        if u_student.shape[1] != u_teacher.shape[1]:
            raise UserError(
                f"the critic encodes the student to {u_student.shape[1]} and the teacher to {u_teacher.shape[1]} "
                "values; the transformer critic needs equal sequence lengths (same tokenizer and max length), "
                "the mlp critic does not"
            )
        if self.constant_baseline is None:
            log_q = self.critic.log_baseline(teacher, mask)
        else:
            log_q = torch.full((u_teacher.shape[0],), self.constant_baseline, device=u_teacher.device)
        scores = gather_rows(u_student) @ gather_rows(u_teacher).T
        if scores.shape[0] == 1:
            # An epoch's last batch can hold one example (N mod B == 1): with no negatives there is no
            # bound to estimate, so this batch adds nothing (the graph is kept for the backward pass).
            self.last_k, self.last_mi = 1, None
            return scores.sum() * 0.0
        bound = interpolated_bound(scores, gather_rows(log_q), self.alpha_logit)
        self.last_k = scores.shape[0]
        self.last_mi = bound.detach()
        return -bound

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, baseline={'learned' if self.constant_baseline is None else self.constant_baseline}"


__all__ = ["MILoss", "alpha_logit", "gather_rows", "interpolated_bound", "log_leave_one_out_mean"]
