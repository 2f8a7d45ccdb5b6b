"""Random adjacent swap and random deletion of words (no model needed).

Usage::

    RandomSwap(EditLimits(0.3, 1, 10))(["a very good film"], [np.random.default_rng(0)])
    RandomDelete(EditLimits(0.3, 1, 10))(["a very good film"], [np.random.default_rng(0)])
"""
from __future__ import annotations

from dataclasses import asdict
from typing import Any, Sequence

import numpy as np

from distill.augment.base import AUGMENTERS, AugmentContext, EditLimits
from distill.augment.words import join_words, pick, split_words


class RandomSwap:
    """Swap disjoint pairs of adjacent words; the words moved never exceed the edit limits (two per swap).

    Usage: ``RandomSwap(EditLimits())(texts, rngs)``
    """

    name = "swap"

    def __init__(self, limits: EditLimits) -> None:
        self.limits = limits

    def __call__(self, texts: Sequence[str], rngs: Sequence[np.random.Generator]) -> list[str]:
        return [self._one(text, rng) for text, rng in zip(texts, rngs)]

    def _one(self, text: str, rng: np.random.Generator) -> str:
        words = split_words(text)
        if len(words) < 2:
            return text
        swaps = max(1, self.limits.count(len(words)) // 2)
        taken: set[int] = set()
        for start in rng.permutation(len(words) - 1).tolist():
            if swaps == 0:
                break
            if start in taken or start + 1 in taken:
                continue
            words[start], words[start + 1] = words[start + 1], words[start]
            taken.update((start, start + 1))
            swaps -= 1
        return join_words(words)

    def identity(self) -> dict[str, Any]:
        """Settings the output depends on."""
        return {"name": self.name, **asdict(self.limits)}


class RandomDelete:
    """Delete words (at least one word is always kept). Usage: ``RandomDelete(EditLimits())(texts, rngs)``."""

    name = "delete"

    def __init__(self, limits: EditLimits) -> None:
        self.limits = limits

    def __call__(self, texts: Sequence[str], rngs: Sequence[np.random.Generator]) -> list[str]:
        out = []
        for text, rng in zip(texts, rngs):
            words = split_words(text)
            dropped = set(pick(rng, list(range(len(words))), min(self.limits.count(len(words)), len(words) - 1)))
            out.append(join_words([w for i, w in enumerate(words) if i not in dropped]) if dropped else text)
        return out

    def identity(self) -> dict[str, Any]:
        """Settings the output depends on."""
        return {"name": self.name, **asdict(self.limits)}


@AUGMENTERS.register("swap", aliases=("random",))
def build_swap(context: AugmentContext) -> RandomSwap:
    """The ``swap`` augmenter (the reference's ``random``)."""
    return RandomSwap(context.limits)


@AUGMENTERS.register("delete")
def build_delete(context: AugmentContext) -> RandomDelete:
    """The ``delete`` augmenter."""
    return RandomDelete(context.limits)


__all__ = ["RandomDelete", "RandomSwap", "build_delete", "build_swap"]
