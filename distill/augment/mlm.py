"""Contextual substitution with a masked LM (spec §2.1 ``contextual``): chosen words are masked together and
each is replaced by a whole word sampled from the nucleus (top-p 0.8) of the MLM's prediction, the masked
LM running over the texts in batches.

Usage::

    augmenter = ContextualSubstitution(load_masked_lm("bert-base-uncased"), EditLimits(0.3, 1, 10))
    augmenter(["the film was a delight"], [np.random.default_rng(0)])
"""
from __future__ import annotations

from dataclasses import asdict
from functools import cached_property
from typing import Any, Sequence

import numpy as np
import torch

from distill.augment.base import AUGMENTERS, AugmentContext, EditLimits
from distill.augment.models import AugmentModel
from distill.augment.words import join_words, pick, split_words

TOP_P = 0.8
WORD_MARKERS = "▁Ġ"  # SentencePiece and byte-level BPE mark a word's first piece


class MaskedWords:
    """A masked LM restricted to whole words: which vocabulary entries are words, and batched predictions at
    the mask tokens of texts. Usage: ``MaskedWords(mlm).predict(["a [MASK] film"])[0].shape  # [1, words]``
    """

    def __init__(self, mlm: AugmentModel, batch_size: int = 32) -> None:
        self.mlm, self.batch_size = mlm, batch_size

    @cached_property
    def vocabulary(self) -> tuple[torch.Tensor, list[str]]:
        """(ids, words) of the vocabulary entries that are whole alphabetic words (no ``##`` pieces)."""
        tokens = self.mlm.tokenizer.convert_ids_to_tokens(list(range(len(self.mlm.tokenizer))))
        marked = any(token[:1] in WORD_MARKERS for token in tokens if token)
        ids, words = [], []
        for index, token in enumerate(tokens):
            word = token[1:] if marked and token[:1] in WORD_MARKERS else (None if marked else token)
            if word and word.isalpha() and index not in self.mlm.tokenizer.all_special_ids:
                ids.append(index)
                words.append(word)
        return torch.tensor(ids), words

    @property
    def mask(self) -> str:
        """The tokenizer's mask token."""
        return self.mlm.tokenizer.mask_token

    @torch.no_grad()
    def predict(self, texts: Sequence[str]) -> list[torch.Tensor]:
        """Per text, the logits over whole words at each mask token, in text order ([masks, words]); masks cut
        off by the model's length limit are missing from the end."""
        ids, _ = self.vocabulary
        tokenizer, model = self.mlm.tokenizer, self.mlm.model
        limit = min(tokenizer.model_max_length, getattr(model.config, "max_position_embeddings", 512))
        out: list[torch.Tensor] = []
        for start in range(0, len(texts), self.batch_size):
            batch = tokenizer(list(texts[start:start + self.batch_size]), padding=True, truncation=True,
                              max_length=limit, return_tensors="pt")
            masked = batch["input_ids"] == tokenizer.mask_token_id
            rows = self._mask_logits(batch, masked)[:, ids].float()
            out.extend(rows.split(masked.sum(1).tolist()))
        return out

    def _mask_logits(self, batch: dict[str, torch.Tensor], masked: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits at the masked positions only: the LM head (a vocabulary-wide matmul) is most of an
        MLM's cost, so BERT- and RoBERTa-style models run it on the masks alone."""
        model = self.mlm.model
        head = getattr(model, "cls", None) or getattr(model, "lm_head", None)
        if head is None:
            return model(**batch).logits[masked]
        return head(model.base_model(**batch).last_hidden_state[masked])


def nucleus_sample(logits: torch.Tensor, rng: np.random.Generator, top_p: float = TOP_P,
                   exclude: int | None = None) -> int:
    """An index sampled from the smallest set of most likely entries whose probability reaches ``top_p``.

    Usage: ``nucleus_sample(torch.tensor([2.0, 1.0, 0.1]), np.random.default_rng(0))``
    """
    scores = logits.double().clone()
    if exclude is not None:
        scores[exclude] = -torch.inf
    probs = torch.softmax(scores, 0)
    order = torch.argsort(probs, descending=True)
    cumulative = torch.cumsum(probs[order], 0)
    keep = order[: int((cumulative < top_p).sum()) + 1]
    kept = probs[keep].numpy()
    return int(keep[int(rng.choice(len(keep), p=kept / kept.sum()))])


def match_case(word: str, like: str) -> str:
    """``word`` capitalised like ``like`` (``Film`` -> ``Movie``). Usage: ``match_case("movie", "Film")``."""
    if like.isupper() and len(like) > 1:
        return word.upper()
    return word[:1].upper() + word[1:] if like[:1].isupper() else word


class ContextualSubstitution:
    """Replace ``aug_p`` of the alphabetic words (``aug_min``..``aug_max``) by masked-LM samples.

    Usage: ``ContextualSubstitution(load_masked_lm(name), EditLimits())(texts, rngs)``
    """

    name = "mlm"

    def __init__(self, mlm: AugmentModel, limits: EditLimits, top_p: float = TOP_P, batch_size: int = 32) -> None:
        self.words, self.limits, self.top_p = MaskedWords(mlm, batch_size), limits, top_p

    def __call__(self, texts: Sequence[str], rngs: Sequence[np.random.Generator]) -> list[str]:
        split = [split_words(text) for text in texts]
        chosen = [pick(rng, [i for i, w in enumerate(words) if w.alphabetic],
                       self.limits.count(sum(w.alphabetic for w in words))) for words, rng in zip(split, rngs)]
        masked = [join_words([w.with_core(self.words.mask) if i in picked else w for i, w in enumerate(words)])
                  for words, picked in zip(split, chosen)]
        _, vocabulary = self.words.vocabulary
        index = {word: i for i, word in enumerate(vocabulary)}
        out = []
        for words, picked, logits, rng, text in zip(split, chosen, self.words.predict(masked), rngs, texts):
            if not picked:
                out.append(text)
                continue
            for position, row in zip(picked, logits):
                core = words[position].core
                choice = nucleus_sample(row, rng, self.top_p, exclude=index.get(core.lower(), index.get(core)))
                words[position] = words[position].with_core(match_case(vocabulary[choice], core))
            out.append(join_words(words))
        return out

    def identity(self) -> dict[str, Any]:
        """Settings and the masked LM's fingerprint."""
        return {"name": self.name, "top_p": self.top_p, **asdict(self.limits), "model": self.words.mlm.fingerprint()}


@AUGMENTERS.register("mlm", aliases=("contextual",))
def build_mlm(context: AugmentContext) -> ContextualSubstitution:
    """The ``mlm`` augmenter (the reference's ``contextual``)."""
    return ContextualSubstitution(context.model("mlm"), context.limits, batch_size=context.batch_size)


__all__ = ["ContextualSubstitution", "MaskedWords", "build_mlm", "match_case", "nucleus_sample"]
