"""TinyBERT-style augmentation (spec §2.1 ``tinybert_aug``): every non-stop-word alphabetic word is replaced
with probability p = 0.4 by one of M = 15 candidates: for a single-piece word, the masked LM's top-M whole
words with that word masked; for a multi-piece word, its M nearest embedding neighbours. Candidates depend on
the text only, so they are computed once per text and reused by all its copies (as TinyBERT does).

Usage::

    augmenter = TinyBertAugmenter(MaskedWords(mlm), EmbeddingNeighbours(encoder))
    augmenter(["a thoroughly charming film"], [np.random.default_rng(0)])
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Sequence

import numpy as np

from distill.augment.base import AUGMENTERS, AugmentContext
from distill.augment.embedding import NEIGHBOURS, EmbeddingNeighbours
from distill.augment.mlm import MaskedWords, match_case
from distill.augment.words import join_words, replaceable, split_words

REPLACE_P = 0.4
MEMO_TEXTS = 4096  # texts whose candidates are kept (a batch's copies reuse them)

Candidates = dict[int, list[str]]  # word position -> replacement words


class TinyBertAugmenter:
    """TinyBERT's word replacement. Usage: ``TinyBertAugmenter(MaskedWords(mlm), neighbours)(texts, rngs)``."""

    name = "tinybert"

    def __init__(self, words: MaskedWords, neighbours: EmbeddingNeighbours, p: float = REPLACE_P,
                 top: int = NEIGHBOURS) -> None:
        self.words, self.neighbours, self.p, self.top = words, neighbours, p, top
        self._memo: OrderedDict[str, Candidates] = OrderedDict()

    def candidates(self, texts: Sequence[str]) -> list[Candidates]:
        """Each text's replacement candidates by word position (replaceable words only)."""
        missing = [text for text in dict.fromkeys(texts) if text not in self._memo]
        if missing:
            self._fill(missing)
        return [self._memo[text] for text in texts]

    def _fill(self, texts: Sequence[str]) -> None:
        tokenizer = self.words.mlm.tokenizer
        _, vocabulary = self.words.vocabulary
        queries: list[tuple[str, int, str]] = []  # (text, position, text with that word masked)
        multi: list[tuple[str, int, str]] = []  # (text, position, word)
        found: dict[str, Candidates] = {text: {} for text in texts}
        for text in texts:
            words = split_words(text)
            for position, word in enumerate(words):
                if not replaceable(word):
                    continue
                if len(tokenizer(word.core.lower(), add_special_tokens=False)["input_ids"]) == 1:
                    masked = [w.with_core(self.words.mask) if i == position else w for i, w in enumerate(words)]
                    queries.append((text, position, join_words(masked)))
                else:
                    multi.append((text, position, word.core))
        for (text, position, _), logits in zip(queries, self.words.predict([q[2] for q in queries])):
            if len(logits):
                original = split_words(text)[position].core.lower()
                best = logits[0].topk(min(self.top + 1, logits.shape[-1])).indices.tolist()
                found[text][position] = [vocabulary[i] for i in best if vocabulary[i] != original][: self.top]
        near = self.neighbours.of([word for _, _, word in multi])
        for text, position, word in multi:
            found[text][position] = near[word]
        for text in texts:
            self._memo[text] = found[text]
            while len(self._memo) > MEMO_TEXTS:
                self._memo.popitem(last=False)

    def __call__(self, texts: Sequence[str], rngs: Sequence[np.random.Generator]) -> list[str]:
        out = []
        for text, rng, candidates in zip(texts, rngs, self.candidates(texts)):
            words = split_words(text)
            for position in sorted(candidates):
                options = candidates[position]
                if options and rng.random() < self.p:
                    choice = options[int(rng.integers(len(options)))]
                    words[position] = words[position].with_core(match_case(choice, words[position].core))
            out.append(join_words(words))
        return out

    def identity(self) -> dict[str, Any]:
        """Settings and both models' fingerprints."""
        return {"name": self.name, "p": self.p, "top": self.top, "mlm": self.words.mlm.fingerprint(),
                "embedding": self.neighbours.source.fingerprint()}


@AUGMENTERS.register("tinybert", aliases=("tinybert_aug",))
def build_tinybert(context: AugmentContext) -> TinyBertAugmenter:
    """The ``tinybert`` augmenter (p and M as TinyBERT; ``aug_p`` does not apply)."""
    return TinyBertAugmenter(MaskedWords(context.model("mlm"), context.batch_size),
                             EmbeddingNeighbours(context.model("embedding")))


__all__ = ["REPLACE_P", "TinyBertAugmenter", "build_tinybert"]
