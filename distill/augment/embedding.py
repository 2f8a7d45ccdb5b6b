"""Embedding-neighbour substitution from a model's own input embeddings (offline with any encoder).

A word's vector is the mean of its word-piece embeddings; its neighbours are the whole-word vocabulary
entries of highest cosine similarity. This stands in for TinyBERT's GloVe neighbours: the same role (words
used in similar contexts) from the encoder at hand, with no word-vector download.

Usage::

    neighbours = EmbeddingNeighbours(embedding_source(teacher, tokenizer, "teacher"))
    neighbours.of(["film", "wonderful"])  # {'film': ['movie', ...], 'wonderful': [...]}
    EmbeddingSubstitution(neighbours, EditLimits())(texts, rngs)
"""
from __future__ import annotations

from dataclasses import asdict
from functools import cached_property
from typing import Any, Sequence

import numpy as np
import torch

from distill.augment.base import AUGMENTERS, AugmentContext, EditLimits
from distill.augment.mlm import MaskedWords, match_case
from distill.augment.models import AugmentModel, word_embeddings
from distill.augment.words import join_words, pick, split_words

NEIGHBOURS = 15  # TinyBERT's M


class EmbeddingNeighbours:
    """The ``top`` nearest whole words of each word by input-embedding cosine similarity, memoised.

    Usage: ``EmbeddingNeighbours(encoder).of(["film"])["film"][:3]``
    """

    def __init__(self, source: AugmentModel, top: int = NEIGHBOURS) -> None:
        self.source, self.top = source, top
        self._memo: dict[str, list[str]] = {}

    @cached_property
    def _table(self) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """(all embeddings, unit vectors of whole words, those words)."""
        embeddings = word_embeddings(self.source.model)
        ids, words = MaskedWords(self.source).vocabulary
        units = torch.nn.functional.normalize(embeddings[ids], dim=-1)
        return embeddings, units, words

    def of(self, words: Sequence[str]) -> dict[str, list[str]]:
        """Neighbours of each of ``words`` (lower-cased lookups; the word itself is left out)."""
        missing = sorted({w.lower() for w in words} - self._memo.keys())
        if missing:
            embeddings, units, vocabulary = self._table
            pieces = self.source.tokenizer(missing, add_special_tokens=False)["input_ids"]
            vectors = torch.stack([embeddings[ids].mean(0) if ids else torch.zeros(embeddings.shape[1])
                                   for ids in pieces])
            scores = torch.nn.functional.normalize(vectors, dim=-1) @ units.T
            best = scores.topk(min(self.top + 1, len(vocabulary)), dim=-1).indices
            for word, row in zip(missing, best.tolist()):
                self._memo[word] = [vocabulary[i] for i in row if vocabulary[i] != word][: self.top]
        return {w: self._memo[w.lower()] for w in words}


class EmbeddingSubstitution:
    """Replace ``aug_p`` of the alphabetic words (``aug_min``..``aug_max``) by one of their embedding neighbours.

    Usage: ``EmbeddingSubstitution(EmbeddingNeighbours(encoder), EditLimits())(texts, rngs)``
    """

    name = "embedding"

    def __init__(self, neighbours: EmbeddingNeighbours, limits: EditLimits) -> None:
        self.neighbours, self.limits = neighbours, limits

    def __call__(self, texts: Sequence[str], rngs: Sequence[np.random.Generator]) -> list[str]:
        out = []
        for text, rng in zip(texts, rngs):
            words = split_words(text)
            candidates = [i for i, w in enumerate(words) if w.alphabetic]
            picked = pick(rng, candidates, self.limits.count(len(candidates)))
            near = self.neighbours.of([words[i].core for i in picked])
            for position in picked:
                core = words[position].core
                options = near[core]
                if options:
                    choice = options[int(rng.integers(len(options)))]
                    words[position] = words[position].with_core(match_case(choice, core))
            out.append(join_words(words) if picked else text)
        return out

    def identity(self) -> dict[str, Any]:
        """Settings and the embedding model's fingerprint."""
        return {"name": self.name, "top": self.neighbours.top, **asdict(self.limits),
                "model": self.neighbours.source.fingerprint()}


@AUGMENTERS.register("embedding", aliases=("embeddings",))
def build_embedding(context: AugmentContext) -> EmbeddingSubstitution:
    """The ``embedding`` augmenter."""
    return EmbeddingSubstitution(EmbeddingNeighbours(context.model("embedding")), context.limits)


__all__ = ["NEIGHBOURS", "EmbeddingNeighbours", "EmbeddingSubstitution", "build_embedding"]
