"""The models augmenters read: a masked LM, an encoder's input embeddings, a translation model; each loaded
with a one-line error, checked against the data, and fingerprinted for the cache key.

Usage::

    mlm = load_masked_lm("bert-base-uncased")            # refuses a checkpoint without an MLM head
    check_vocabulary(mlm.tokenizer, texts, "the masked LM 'bert-base-uncased'", "mlm_model")
    encoder = embedding_source(teacher_model, teacher_tokenizer, "teacher")
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from shrink.digest import state_digest, value_digest
from shrink.errors import UserError
from shrink.models.hf import hub_offline, load_tokenizer, resolve_hf_source
from shrink.models.io import error_line

UNKNOWN_WORDS_LIMIT = 0.5  # above this share of unknown words, a tokenizer is for another language or vocabulary
CHECKED_WORDS = 2000


@dataclass
class AugmentModel:
    """A model an augmenter reads, its tokenizer, where it came from, and its fingerprint (computed once).

    Usage: ``AugmentModel(model, tokenizer, "bert-base-uncased").fingerprint()``
    """

    model: nn.Module
    tokenizer: Any
    source: str
    _fingerprint: str | None = field(default=None, repr=False)

    def fingerprint(self) -> str:
        """Digest of the weights and vocabulary: what the augmenter's output depends on."""
        if self._fingerprint is None:
            self._fingerprint = value_digest({"weights": state_digest(self.model),
                                              "vocabulary": value_digest(self.tokenizer.get_vocab())})
        return self._fingerprint


def _from_pretrained(loader: Any, source: str, what: str, key: str) -> tuple[nn.Module, dict[str, Any]]:
    try:
        model, info = loader.from_pretrained(resolve_hf_source(source), output_loading_info=True,
                                             local_files_only=hub_offline(), trust_remote_code=False)
    except (OSError, ValueError) as err:
        raise UserError(f"cannot load {what} from '{source}': {error_line(err)}; set distill.augment.{key} to a "
                        "local directory (offline) or a hub id") from None
    return model.eval().requires_grad_(False), info


def load_masked_lm(source: str) -> AugmentModel:
    """A masked LM and its tokenizer; UserError when ``source`` has no trained MLM head or no mask token.

    Usage: ``load_masked_lm("bert-base-uncased").model(**inputs).logits``
    """
    from transformers import AutoModelForMaskedLM

    model, info = _from_pretrained(AutoModelForMaskedLM, source, "a masked LM", "mlm_model")
    prefix = f"{model.base_model_prefix}."
    head = sorted(key for key in info.get("missing_keys", ()) if not key.startswith(prefix))
    if head:
        raise UserError(f"'{source}' has no masked-LM head ({head[0]} is missing), so its word predictions would be "
                        "random; set distill.augment.mlm_model to a masked LM (e.g. bert-base-uncased or a local copy)")
    tokenizer = load_tokenizer(source)
    if tokenizer.mask_token_id is None:
        raise UserError(f"the tokenizer of '{source}' has no mask token; set distill.augment.mlm_model to a masked LM")
    return AugmentModel(model, tokenizer, source)


def load_encoder(source: str) -> AugmentModel:
    """Any Hugging Face model with input embeddings, and its tokenizer. Usage: ``load_encoder("minilm-l6")``."""
    from transformers import AutoModel

    model, _ = _from_pretrained(AutoModel, source, "an encoder", "embedding_model")
    return AugmentModel(model, load_tokenizer(source), source)


def load_translator(source: str) -> AugmentModel:
    """A sequence-to-sequence (Marian) model and its tokenizer. Usage: ``load_translator("opus-mt-en-ROMANCE")``."""
    from transformers import AutoModelForSeq2SeqLM

    model, _ = _from_pretrained(AutoModelForSeq2SeqLM, source, "a translation model", "translation_models")
    return AugmentModel(model, load_tokenizer(source), source)


def embedding_source(model: nn.Module, tokenizer: Any, source: str) -> AugmentModel:
    """An already loaded model (the teacher) as the embedding source; UserError when it has no word embeddings.

    Usage: ``embedding_source(member.model, member.tokenizer, member.source)``
    """
    getter = getattr(model, "get_input_embeddings", None)
    if tokenizer is None or getter is None or not isinstance(getter(), nn.Embedding):
        raise UserError(f"'{source}' has no word embeddings to find neighbours in; set "
                        "distill.augment.embedding_model to a text encoder")
    return AugmentModel(model, tokenizer, source)


def check_vocabulary(tokenizer: Any, texts: Sequence[str], what: str, key: str) -> None:
    """UserError when ``tokenizer`` maps more than half the words of ``texts`` to its unknown token.

    Usage: ``check_vocabulary(mlm.tokenizer, train_texts, "the masked LM 'x'", "mlm_model")``
    """
    words = [word for text in texts for word in text.split()][:CHECKED_WORDS]
    unk = tokenizer.unk_token_id
    if not words or unk is None:
        return
    pieces = tokenizer(words, add_special_tokens=False)["input_ids"]
    unknown = sum(1 for ids in pieces if not ids or unk in ids) / len(words)
    if unknown > UNKNOWN_WORDS_LIMIT:
        raise UserError(f"{what} cannot tokenize the data: {unknown:.0%} of its words are unknown to its tokenizer; "
                        f"set distill.augment.{key} to a model for this language and vocabulary")


def word_embeddings(model: nn.Module) -> torch.Tensor:
    """The input embedding matrix [vocab, dim] as float32. Usage: ``word_embeddings(bert).shape``."""
    return model.get_input_embeddings().weight.detach().float()


__all__ = ["AugmentModel", "check_vocabulary", "embedding_source", "load_encoder", "load_masked_lm",
           "load_translator", "word_embeddings"]
