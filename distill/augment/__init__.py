"""distill.augment: text augmenters (``mlm``, ``embedding``, ``tinybert``, ``backtranslate``, ``swap``,
``delete``) registered in ``AUGMENTERS``, policies, the on-disk cache of augmented copies, teacher-labelled
unlabeled text, and mixup / CutMix. ``distill`` uses it through the ``distill.augment`` recipe section
(``--augment``, ``--aug-p``, ``--aug-copies``, ``--mixup``, ``--unlabeled``).

Usage::

    from distill.augment import AUGMENTERS, AugmentContext, EditLimits, build_policy, ordered_subsets
    policy = build_policy(["swap", "delete"], AugmentContext(EditLimits(aug_p=0.3)))
    policy.copies([("a good film", None)], indices=[0], seed=42, round=0, copies=2)
"""
from distill.augment import backtranslate, embedding, mlm, simple, tinybert  # noqa: F401  (they register)
from distill.augment.base import AUGMENTERS, AugmentContext, EditLimits, TextAugmenter
from distill.augment.config import AugmentSection
from distill.augment.dataset import AugmentCache, AugmentedTrainSet
from distill.augment.mixup import Mixup, draw_lambda, mix_embeddings, mix_images
from distill.augment.plan import AUGMENT_DIR, AugmentPlan, TaskModels, plan_augmentation
from distill.augment.policy import Policy, build_policy, ordered_subsets
from distill.augment.unlabeled import IGNORE_LABEL, gold_rows, read_unlabeled

__all__ = [
    "AUGMENTERS", "AUGMENT_DIR", "IGNORE_LABEL", "AugmentCache", "AugmentContext", "AugmentPlan", "AugmentSection",
    "AugmentedTrainSet", "EditLimits", "Mixup", "Policy", "TaskModels", "TextAugmenter", "build_policy",
    "draw_lambda", "gold_rows", "mix_embeddings", "mix_images", "ordered_subsets", "plan_augmentation",
    "read_unlabeled",
]
