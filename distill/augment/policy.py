"""Policies: an ordered list of augmenters applied in sequence to make each augmented copy.

Each field of a sentence pair is augmented on its own; a copy's edits come from generators seeded by
(seed, round, example, copy, attempt, field) alone, so copies are reproducible whatever the batching. A copy
that repeats the original or an earlier copy is drawn again (up to ``ATTEMPTS`` times): TinyBERT's
de-duplicated copies, at a fixed count so the training set keeps its size.

Usage::

    policy = build_policy(["mlm", "swap"], context)
    copies = policy.copies([("a good film", None)], indices=[0], seed=42, round=0, copies=2)
    ordered_subsets(["mlm", "backtranslate", "swap"])  # the spec's 15 ordered policies
"""
from __future__ import annotations

from itertools import permutations
from typing import Any, Sequence

import numpy as np

from distill.augment.base import AUGMENTERS, AugmentContext, TextAugmenter

ATTEMPTS = 3
Example = tuple[str, str | None]  # (text, text_pair)


class Policy:
    """Augmenters applied in order. Usage: ``Policy([swap, delete]).copies(examples, [0], 42, 0, 2)``."""

    def __init__(self, augmenters: Sequence[TextAugmenter]) -> None:
        self.augmenters = list(augmenters)

    @property
    def names(self) -> list[str]:
        """The augmenters' names, in order."""
        return [augmenter.name for augmenter in self.augmenters]

    def identity(self) -> list[dict[str, Any]]:
        """What the copies depend on besides data and seeds (settings, model fingerprints)."""
        return [augmenter.identity() for augmenter in self.augmenters]

    def apply(self, texts: Sequence[str], rngs: Sequence[np.random.Generator]) -> list[str]:
        """Each text through every augmenter in turn."""
        out = list(texts)
        for augmenter in self.augmenters:
            out = augmenter(out, rngs)
        return out

    def copies(self, examples: Sequence[Example], indices: Sequence[int], seed: int, round: int,
               copies: int) -> list[list[Example]]:
        """``copies`` augmented versions of each example: ``result[c][i]`` is copy c of ``examples[i]``."""
        result: list[list[Example]] = []
        for copy in range(copies):
            made: list[Example | None] = [None] * len(examples)
            pending = list(range(len(examples)))
            for attempt in range(ATTEMPTS):
                drawn = self._draw([examples[i] for i in pending], [indices[i] for i in pending],
                                   (seed, round, copy, attempt))
                retry = []
                for i, candidate in zip(pending, drawn):
                    seen = candidate == examples[i] or any(earlier[i] == candidate for earlier in result)
                    if seen and attempt < ATTEMPTS - 1:
                        retry.append(i)
                    else:
                        made[i] = candidate
                pending = retry
                if not pending:
                    break
            result.append(made)  # type: ignore[arg-type]
        return result

    def _draw(self, examples: Sequence[Example], indices: Sequence[int], key: tuple[int, ...]) -> list[Example]:
        def rngs(field: int, rows: Sequence[int]) -> list[np.random.Generator]:
            return [np.random.default_rng([*key, indices[row], field]) for row in rows]

        everyone = list(range(len(examples)))
        texts = self.apply([example[0] for example in examples], rngs(0, everyone))
        paired = [row for row, example in enumerate(examples) if example[1] is not None]
        pairs: list[str | None] = [None] * len(examples)
        for row, text in zip(paired, self.apply([examples[row][1] for row in paired], rngs(1, paired))):
            pairs[row] = text
        return list(zip(texts, pairs))


def build_policy(names: Sequence[str], context: AugmentContext) -> Policy:
    """The policy of registered augmenter ``names`` (UserError for an unknown one, listing the known).

    Usage: ``build_policy(["embedding", "swap"], context)``
    """
    return Policy([AUGMENTERS.get(name)(context) for name in names])


def ordered_subsets(names: Sequence[str]) -> list[list[str]]:
    """Every non-empty ordered subset of ``names`` (15 for three): the policies a search can try.

    Usage: ``len(ordered_subsets(["mlm", "backtranslate", "swap"])) == 15``
    """
    return [list(order) for size in range(1, len(names) + 1) for order in permutations(names, size)]


__all__ = ["ATTEMPTS", "Example", "Policy", "build_policy", "ordered_subsets"]
