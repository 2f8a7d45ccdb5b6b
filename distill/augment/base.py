"""The augmenter contract, the ``AUGMENTERS`` registry and what a factory is given to build one.

An augmenter rewrites a batch of texts, one generator per text: each text's edits depend on its own seeded
generator only, so a copy is the same whatever the batch it was made in. Sentence pairs are augmented field by
field by the caller, so an augmenter never sees (or writes into) the other field.

Usage::

    @AUGMENTERS.register("swap")
    def build_swap(context: AugmentContext) -> TextAugmenter: return RandomSwap(context.limits)

    augmenter = AUGMENTERS.get("swap")(context)
    augmenter(["a good film"], [np.random.default_rng(0)])
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from shrink.registry import Registry


@dataclass(frozen=True)
class EditLimits:
    """How many words an augmenter edits: ``aug_p`` of the candidates, at least ``aug_min``, at most ``aug_max``.

    Usage: ``EditLimits(0.3, 1, 10).count(25) == 8``
    """

    aug_p: float = 0.3
    aug_min: int = 1
    aug_max: int = 10

    def count(self, candidates: int) -> int:
        """Words to edit among ``candidates`` eligible ones (never more than there are)."""
        wanted = max(self.aug_min, min(self.aug_max, round(self.aug_p * candidates)))
        return min(wanted, candidates)


class TextAugmenter(Protocol):
    """Rewrites texts; ``identity()`` is everything its output depends on besides the texts and generators
    (settings, model digests), so the on-disk cache can be keyed by it."""

    name: str

    def __call__(self, texts: Sequence[str], rngs: Sequence[np.random.Generator]) -> list[str]: ...

    def identity(self) -> dict[str, Any]: ...


@dataclass
class AugmentContext:
    """What augmenter factories are given: edit limits and lazy access to the models they read.

    ``loaders`` maps a role ("mlm", "embedding", "translation") to a zero-argument loader; a loaded model is
    kept, so the MLM and TinyBERT augmenters of one policy share it.
    Usage: ``context.model("mlm")  # a MaskedLM (model, tokenizer)``
    """

    limits: EditLimits = field(default_factory=EditLimits)
    batch_size: int = 32
    loaders: dict[str, Callable[[], Any]] = field(default_factory=dict)
    loaded: dict[str, Any] = field(default_factory=dict)

    def model(self, role: str) -> Any:
        """The model (and tokenizer) for ``role``, loaded once."""
        if role not in self.loaded:
            self.loaded[role] = self.loaders[role]()
        return self.loaded[role]


AUGMENTERS: Registry[Callable[[AugmentContext], TextAugmenter]] = Registry("augmenter")

__all__ = ["AUGMENTERS", "AugmentContext", "EditLimits", "TextAugmenter"]
