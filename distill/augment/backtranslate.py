"""Back-translation through two translation models the user names (spec §2.1 ``backtranslation``): to a pivot
language and back, in batches, with each model's default generation settings (deterministic, so every
copy of a text gets the same paraphrase).

Usage::

    augmenter = BackTranslation(load_translator("opus-mt-en-ROMANCE"), load_translator("opus-mt-ROMANCE-en"),
                                prefix=">>fr<<")
    augmenter(["the film was a delight"], [np.random.default_rng(0)])
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from distill.augment.base import AUGMENTERS, AugmentContext
from distill.augment.models import AugmentModel

MAX_TOKENS = 256


class BackTranslation:
    """Translate forward (``prefix`` selects a multilingual model's target, e.g. ``>>fr<<``) and back.

    Usage: ``BackTranslation(forward, backward, ">>fr<<")(texts, rngs)``
    """

    name = "backtranslate"

    def __init__(self, forward: AugmentModel, backward: AugmentModel, prefix: str | None = None,
                 batch_size: int = 32) -> None:
        self.forward, self.backward, self.prefix, self.batch_size = forward, backward, prefix, batch_size

    @torch.no_grad()
    def _translate(self, model: AugmentModel, texts: Sequence[str]) -> list[str]:
        out: list[str] = []
        limit = min(MAX_TOKENS, getattr(model.model.config, "max_position_embeddings", MAX_TOKENS))
        for start in range(0, len(texts), self.batch_size):
            batch = model.tokenizer(list(texts[start:start + self.batch_size]), padding=True, truncation=True,
                                    max_length=limit, return_tensors="pt")
            # a paraphrase is about as long as its source: twice as many tokens bounds a runaway generation
            length = min(limit - 1, 2 * batch["input_ids"].shape[1] + 8)
            generated = model.model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                             max_new_tokens=length)
            out.extend(model.tokenizer.batch_decode(generated, skip_special_tokens=True))
        return [text.strip() for text in out]

    def __call__(self, texts: Sequence[str], rngs: Sequence[np.random.Generator]) -> list[str]:
        pivot = self._translate(self.forward, [f"{self.prefix} {t}" if self.prefix else t for t in texts])
        back = self._translate(self.backward, pivot)
        return [new if new else old for new, old in zip(back, texts)]  # an empty translation keeps the text

    def identity(self) -> dict[str, Any]:
        """Both models' fingerprints and the prefix."""
        return {"name": self.name, "prefix": self.prefix, "forward": self.forward.fingerprint(),
                "backward": self.backward.fingerprint()}


@AUGMENTERS.register("backtranslate", aliases=("backtranslation",))
def build_backtranslate(context: AugmentContext) -> BackTranslation:
    """The ``backtranslate`` augmenter: ``context.model("translation")`` is (forward, backward, prefix)."""
    forward, backward, prefix = context.model("translation")
    return BackTranslation(forward, backward, prefix, context.batch_size)


__all__ = ["BackTranslation", "build_backtranslate"]
