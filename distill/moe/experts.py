"""Experts: frozen models whose pooled features become the aggregator's tokens, one token per expert.

A model's pooled feature is the input of its last ``nn.Linear`` (its classifier head), read with a
forward pre-hook, so CIFAR ResNets, ViTs, the zoo's convnet and Hugging Face classifiers (the pooled
[CLS]) all work unedited. An expert whose feature size differs from the pool's gets a learned
``Linear(D_n, D)`` projection, trained with the aggregator.

Usage::

    pool = ExpertPool([expert_a, expert_b, expert_c], dim=None)     # dim: the first expert's size
    tokens = pool.tokens({"pixel_values": x})                        # (B, 3, D)
    tokens = drop_expert(tokens, exclude=1, mask="drop")             # (B, 2, D)
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import nn
from torch.func import functional_call
from torch.utils.data import DataLoader, Dataset

from shrink.errors import UserError
from shrink.train import logits_of

Batch = Mapping[str, torch.Tensor]
MASKS = ("drop", "zero", "none")
INPUT_SKIP = ("labels", "domain")


def head_path(model: nn.Module) -> str:
    """The module path of ``model``'s classifier head: its last ``nn.Linear``. Usage: ``head_path(resnet)  # 'fc'``."""
    linear = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not linear:
        raise UserError(f"{type(model).__name__} has no linear classifier head, so it has no pooled feature to "
                        "distil; use a classifier (CNN, ViT or a Hugging Face *ForSequenceClassification)")
    return linear[-1]


def call_model(model: nn.Module, batch: Batch, params: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
    """``model``'s logits on ``batch``, with ``params`` (name -> tensor) standing in for its own when given.

    Usage: ``call_model(student, batch, adapted_params)``
    """
    if "pixel_values" in batch and not hasattr(model, "config"):
        args, kwargs = (batch["pixel_values"],), {}
    else:
        args, kwargs = (), {k: v for k, v in batch.items() if k not in INPUT_SKIP}
    return logits_of(model(*args, **kwargs) if params is None else functional_call(model, dict(params), args, kwargs))


def pooled_features(model: nn.Module, batch: Batch, params: Mapping[str, torch.Tensor] | None = None,
                    head: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(pooled feature ``(B, D)``, logits) of one forward: the feature is the input of the head module.

    Usage: ``features, logits = pooled_features(model, batch)``
    """
    captured: list[torch.Tensor] = []
    module = model.get_submodule(head or head_path(model))
    handle = module.register_forward_pre_hook(lambda _, inputs: captured.append(inputs[0]))
    try:
        logits = call_model(model, batch, params)
    finally:
        handle.remove()
    feature = captured[-1]
    return (feature[:, 0] if feature.dim() == 3 else feature.flatten(1)), logits


def feature_size(model: nn.Module) -> int:
    """The pooled feature size of ``model`` (its head's input features). Usage: ``feature_size(resnet20) == 64``."""
    return model.get_submodule(head_path(model)).in_features


def output_size(model: nn.Module) -> int:
    """How many classes ``model`` predicts (its head's output features)."""
    return model.get_submodule(head_path(model)).out_features


def drop_expert(tokens: torch.Tensor, exclude: int | None, mask: str = "drop") -> torch.Tensor:
    """Mask the in-domain expert ``exclude`` out of ``(B, N, D)`` tokens: ``drop`` removes its token
    (B, N-1, D; the reference), ``zero`` zeroes it (the paper's wording), ``none`` keeps every token.

    Usage: ``drop_expert(tokens, exclude=2, mask="drop").shape[1] == tokens.shape[1] - 1``
    """
    if mask not in MASKS:
        raise UserError(f"unknown expert mask '{mask}'; use one of {', '.join(MASKS)}")
    if exclude is None or mask == "none":
        return tokens
    keep = [n for n in range(tokens.shape[1]) if n != exclude]
    if mask == "drop":
        return tokens[:, keep]
    weights = torch.ones(tokens.shape[1], 1, device=tokens.device, dtype=tokens.dtype)
    weights[exclude] = 0
    return tokens * weights


class ExpertPool(nn.Module):
    """Frozen experts (eval mode, no gradients) and per-expert projections to the shared size ``dim``.

    Usage: ``ExpertPool([a, b], dim=64).tokens(batch)  # (B, 2, 64)``
    """

    def __init__(self, experts: Sequence[nn.Module], dim: int | None = None) -> None:
        super().__init__()
        if not experts:
            raise UserError("Meta-DMoE needs at least one expert; pass --experts DIR1,DIR2 or --train-experts N")
        classes = sorted({output_size(expert) for expert in experts})
        if len(classes) > 1:
            raise UserError(f"the experts predict different label sets ({', '.join(map(str, classes))} classes); "
                            "every expert must be trained on the same labels")
        sizes = [feature_size(expert) for expert in experts]
        self.dim = dim or sizes[0]
        self.experts = nn.ModuleList(experts).requires_grad_(False).eval()
        self.heads = [head_path(expert) for expert in experts]
        self.projections = nn.ModuleList(nn.Identity() if size == self.dim else nn.Linear(size, self.dim)
                                         for size in sizes)

    @property
    def num_classes(self) -> int:
        """Classes every expert predicts."""
        return output_size(self.experts[0])

    def train(self, mode: bool = True) -> ExpertPool:
        """Projections follow ``mode``; the experts stay in eval mode."""
        self.projections.train(mode)
        return self

    @torch.no_grad()
    def features(self, batch: Batch) -> list[torch.Tensor]:
        """Each expert's pooled feature ``(B, D_n)``, without gradient (what may be cached)."""
        return [pooled_features(expert, batch, head=head)[0] for expert, head in zip(self.experts, self.heads)]

    def project(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """``(B, N, D)`` tokens from the experts' features, projected to ``dim`` (with gradient)."""
        return torch.stack([projection(feature) for projection, feature in zip(self.projections, features)], dim=1)

    def tokens(self, batch: Batch) -> torch.Tensor:
        """``(B, N, D)``: each expert's pooled feature (no gradient), projected to ``dim`` (with gradient)."""
        return self.project(self.features(batch))


class CachedFeatures(Dataset):
    """The experts' pooled features of every example of a dataset, computed once (the experts are frozen and
    the inputs deterministic), with the labels: ``{"expert_0": (D_0,), ..., "label": int}`` per example.

    Usage: ``CachedFeatures.compute(pool, dataset, collate)``; batches via ``collate_cached``
    """

    def __init__(self, features: Sequence[torch.Tensor], labels: torch.Tensor) -> None:
        self.features, self.labels = list(features), labels

    @classmethod
    def compute(cls, pool: ExpertPool, dataset: Dataset, collate: Any, batch_size: int = 256) -> CachedFeatures:
        """Run every expert once over ``dataset``. Usage: ``CachedFeatures.compute(pool, split.train, collate)``."""
        parts: list[list[torch.Tensor]] = [[] for _ in pool.experts]
        labels = []
        for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate):
            for part, feature in zip(parts, pool.features(batch)):
                part.append(feature)
            labels.append(batch["labels"])
        return cls([torch.cat(part) for part in parts], torch.cat(labels))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {**{f"expert_{n}": feature[index] for n, feature in enumerate(self.features)},
                "label": int(self.labels[index])}


def collate_cached(examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack cached expert features (``expert_<n>``) and labels into a batch.

    Usage: ``DataLoader(cached, batch_size=64, collate_fn=collate_cached)``
    """
    keys = [key for key in examples[0] if key != "label"]
    return {**{key: torch.stack([example[key] for example in examples]) for key in keys},
            "labels": torch.tensor([example["label"] for example in examples], dtype=torch.long)}


__all__ = ["MASKS", "CachedFeatures", "ExpertPool", "call_model", "collate_cached", "drop_expert", "feature_size",
           "head_path", "output_size", "pooled_features"]
