"""Mixup (spec §2.1): lambda ~ Beta(alpha, alpha) (alpha 0.4), one permutation pi per batch, and both models get
the batch doubled to [original; mixed]. Text models mix their own word embeddings,
lambda·E(x) + (1 - lambda)·E(x_pi), and the mixed rows attend to the union of both attention masks (the
reference kept x's mask only, spec §6.9); image batches mix pixels, or with CutMix paste a box of x_pi
covering 1 - lambda of the image. The mixed rows have no gold label.

Usage::

    mixup = Mixup(alpha=0.4)
    student_batch, teacher_inputs = mixup(student, teacher_model, student_batch, teacher_inputs)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import torch
from torch import Tensor, nn

from distill.augment.unlabeled import IGNORE_LABEL

Batch = Mapping[str, Tensor]


def draw_lambda(alpha: float, size: tuple[int, ...] = ()) -> Tensor:
    """lambda ~ Beta(alpha, alpha) from torch's global RNG. Usage: ``draw_lambda(0.4, (100000,)).mean()``."""
    concentration = torch.tensor(float(alpha))
    return torch.distributions.Beta(concentration, concentration).sample(size)


def mix_embeddings(model: nn.Module, inputs: Batch, lam: float, perm: Tensor,
                   union_mask: bool = True) -> dict[str, Tensor]:
    """[x; mixed] model inputs with ``inputs_embeds`` from ``model``'s own word embeddings.

    Usage: ``mix_embeddings(bert, {"input_ids": ids, "attention_mask": mask}, 0.7, torch.randperm(len(ids)))``
    """
    embeds = model.get_input_embeddings()(inputs["input_ids"])
    mixed = lam * embeds + (1 - lam) * embeds[perm]
    out = {key: torch.cat([value, value]) for key, value in inputs.items()
           if key not in ("input_ids", "attention_mask", "labels")}
    out["inputs_embeds"] = torch.cat([embeds, mixed])
    mask = inputs.get("attention_mask")
    if mask is not None:
        # a row attends where either sequence that contributes to it has a token
        union = mask if lam == 1 or not union_mask else mask[perm] if lam == 0 else torch.maximum(mask, mask[perm])
        out["attention_mask"] = torch.cat([mask, union])
    return out


def mix_images(pixels: Tensor, lam: float, perm: Tensor, cutmix: bool = False) -> Tensor:
    """[x; mixed] images: a pixel blend, or (CutMix) x with a box of x_pi covering 1 - lambda of its area.

    Usage: ``mix_images(torch.rand(8, 3, 32, 32), 0.6, torch.randperm(8), cutmix=True).shape  # [16, 3, 32, 32]``
    """
    if not cutmix:
        return torch.cat([pixels, lam * pixels + (1 - lam) * pixels[perm]])
    height, width = pixels.shape[-2:]
    cut = math.sqrt(1 - lam)
    box_h, box_w = round(height * cut), round(width * cut)
    top = int(torch.randint(0, height - box_h + 1, ()))
    left = int(torch.randint(0, width - box_w + 1, ()))
    mixed = pixels.clone()
    mixed[..., top:top + box_h, left:left + box_w] = pixels[perm][..., top:top + box_h, left:left + box_w]
    return torch.cat([pixels, mixed])


def doubled_labels(labels: Tensor) -> Tensor:
    """[labels; no label] for a doubled batch. Usage: ``doubled_labels(torch.tensor([1, 0]))``."""
    missing = torch.full_like(labels, math.nan if labels.is_floating_point() else IGNORE_LABEL)
    return torch.cat([labels, missing])


@dataclass
class Mixup:
    """Mix a batch for student and teacher alike (one lambda and one permutation per batch).

    Usage: ``Mixup(0.4)(student, teacher.feature_model, student_batch, teacher_inputs)``
    """

    alpha: float = 0.4
    cutmix: bool = False
    union_mask: bool = True

    def draw(self, batch_size: int) -> tuple[float, Tensor]:
        """One lambda and one permutation."""
        return float(draw_lambda(self.alpha)), torch.randperm(batch_size)

    def __call__(self, student: nn.Module, teacher: nn.Module, student_batch: Batch,
                 teacher_inputs: Batch) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        labels = student_batch["labels"]
        lam, perm = self.draw(len(labels))
        perm = perm.to(labels.device)
        if "pixel_values" in student_batch:
            pixels = mix_images(student_batch["pixel_values"], lam, perm, self.cutmix)
            return {"pixel_values": pixels, "labels": doubled_labels(labels)}, {"pixel_values": pixels}
        student_inputs = {k: v for k, v in student_batch.items() if k != "labels"}
        mixed_student = mix_embeddings(student, student_inputs, lam, perm, self.union_mask)
        with torch.no_grad():
            mixed_teacher = mix_embeddings(teacher, teacher_inputs, lam, perm, self.union_mask)
        return {**mixed_student, "labels": doubled_labels(labels)}, mixed_teacher


__all__ = ["Mixup", "doubled_labels", "draw_lambda", "mix_embeddings", "mix_images"]
