"""The ``distill.augment`` recipe section (default: no augmentation).

Usage::

    AugmentSection(policy=["mlm", "swap"], aug_p=0.3, copies=4, mlm_model="bert-base-uncased")
"""
from __future__ import annotations

from pydantic import Field

from shrink.recipe import Section


class AugmentSection(Section):
    """Augmentation, mixup and unlabeled text for a ``distill`` run.

    ``policy``: augmenter names applied in order to make each copy (empty: none). ``aug_p``, ``aug_min``,
    ``aug_max``: the share and bounds of words each augmenter edits. ``copies``: augmented copies per training
    example (None: 1, or TinyBERT's N for the task when the policy has ``tinybert``). ``refresh_every``: make
    new copies every K epochs (None: once). ``mixup``: word-embedding mixup for transformers, pixel mixup for
    images (``cutmix`` for CutMix); lambda ~ Beta(``mixup_alpha``, ``mixup_alpha``). ``unlabeled``: a file of
    in-domain text (one text, or a tab-separated pair, per line) that the teacher labels. The models:
    ``mlm_model`` (default: the teacher when it has an MLM head), ``embedding_model`` (default: the teacher's
    input embeddings), ``translation_models`` ([to pivot, back]) with ``translation_prefix`` (e.g. ``>>fr<<``).
    Usage: ``recipe.distill.augment.policy``
    """

    policy: list[str] = Field(default_factory=list)
    aug_p: float = Field(0.3, gt=0, le=1)
    aug_min: int = Field(1, ge=0)
    aug_max: int = Field(10, ge=1)
    copies: int | None = Field(None, ge=1)
    refresh_every: int | None = Field(None, ge=1)
    mixup: bool = False
    cutmix: bool = False
    mixup_alpha: float = Field(0.4, gt=0)
    unlabeled: str | None = None
    mlm_model: str | None = None
    embedding_model: str | None = None
    translation_models: list[str] = Field(default_factory=list)
    translation_prefix: str | None = None
    batch_size: int = Field(32, gt=0)

    @property
    def active(self) -> bool:
        """True when the section changes training: a policy, mixup/CutMix or unlabeled text."""
        return bool(self.policy or self.mixup or self.cutmix or self.unlabeled)


__all__ = ["AugmentSection"]
