"""The augmentation stage of a ``distill`` run, resolved and checked before anything is written.

:func:`plan_augmentation` turns the ``distill.augment`` section into an :class:`AugmentPlan`: the policy with
its models loaded and checked against the data, the number of copies, the unlabeled examples and the mixup.
:meth:`AugmentPlan.train_set` then gives each stage its training set (originals, unlabeled text, copies).

Usage::

    models = TaskModels(student, tokenizer, members, feature_member=0, separate=False)
    augment = plan_augmentation(recipe.distill.augment, task, models, recipe, recipe.distill.stage_list())
    train = augment.train_set(task.train, gold_copies=False, cache_folder=run / "augmented", config=recipe.train)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from torch import nn
from torch.utils.data import ConcatDataset, Dataset

from distill.augment.base import AUGMENTERS, AugmentContext, EditLimits
from distill.augment.config import AugmentSection
from distill.augment.dataset import AugmentCache, AugmentedTrainSet
from distill.augment.mixup import Mixup
from distill.augment.models import (check_vocabulary, embedding_source, load_encoder, load_masked_lm,
                                    load_translator)
from distill.augment.policy import Policy, build_policy
from distill.augment.unlabeled import read_unlabeled
from shrink.data import TaskData
from shrink.errors import UserError
from shrink.recipe import Recipe, TrainConfig

AUGMENT_DIR = "augmented"  # the copies' cache inside the run directory
# TinyBERT's N augmented copies per example (spec §2.1), by GLUE task; other tasks get DEFAULT_TINYBERT_COPIES.
TINYBERT_COPIES = {"cola": 30, "mrpc": 30, "stsb": 30, "sts-b": 30, "rte": 30, "sst2": 20, "sst-2": 20,
                   "qnli": 20, "mnli": 10, "qqp": 10}
DEFAULT_TINYBERT_COPIES = 20
CHECKED_TEXTS = 500


@dataclass
class TaskModels:
    """What augmentation needs to know of the models: student, its tokenizer, the teachers (TeacherMember),
    the feature member's index and whether teacher and student tokenize differently."""

    student: nn.Module
    tokenizer: Any
    members: Sequence[Any]
    feature_member: int
    separate: bool


@dataclass
class AugmentPlan:
    """The resolved augmentation: policy (None: no copies), copies, unlabeled examples, mixup.

    Usage: ``plan.augment.describe()``
    """

    section: AugmentSection
    policy: Policy | None
    copies: int
    unlabeled: Dataset | None
    mixup: Mixup | None
    seed: int
    regression: bool

    @property
    def dynamic(self) -> bool:
        """True when what the teacher sees changes during training (copies or mixup): no cached logits."""
        return self.policy is not None or self.mixup is not None

    def originals(self, train: Dataset) -> Dataset:
        """The training examples followed by the unlabeled ones."""
        return train if self.unlabeled is None else ConcatDataset([train, self.unlabeled])

    def train_set(self, train: Dataset, *, gold_copies: bool, cache_folder: Path, config: TrainConfig) -> Dataset:
        """A stage's training set: originals, unlabeled text and (with a policy) the augmented copies.

        Usage: ``augment.train_set(task.train, gold_copies=False, cache_folder=run / "augmented", config=cfg)``
        """
        originals = self.originals(train)
        if self.policy is None:
            return originals
        return AugmentedTrainSet(originals, len(train), self.policy, self.copies, self.seed,  # type: ignore[arg-type]
                                 AugmentCache(cache_folder), refresh_every=self.section.refresh_every,
                                 gold_copies=gold_copies, regression=self.regression,
                                 batch_size=self.section.batch_size, progress=config.progress,
                                 verbosity=config.verbosity)

    def describe(self) -> dict[str, Any]:
        """The settings as reported in metrics.json."""
        return {"policy": self.policy.names if self.policy else [], "aug_p": self.section.aug_p,
                "copies": self.copies if self.policy else 0, "refresh_every": self.section.refresh_every,
                "mixup": self.mixup is not None, "cutmix": self.section.cutmix,
                "unlabeled_examples": 0 if self.unlabeled is None else len(self.unlabeled)}  # type: ignore[arg-type]


def plan_augmentation(section: AugmentSection, task: TaskData, models: TaskModels, recipe: Recipe,
                      stages: Sequence[Any]) -> AugmentPlan | None:
    """Check the section against the task, models and stages and load the augmenters' models; None when the
    section asks for nothing. UserError for every refusal (unknown augmenter, missing models, ...).

    Usage: ``plan_augmentation(recipe.distill.augment, task, models, recipe, recipe.distill.stage_list())``
    """
    if not section.active:
        return None
    names = [AUGMENTERS.canonical(name) for name in section.policy]
    text = task.modality == "text"
    if section.policy and not text:
        raise UserError(f"augmenters ({', '.join(section.policy)}) rewrite text, but {task.name} is image data; "
                        "use --mixup (with cutmix) for images, or drop the policy")
    if section.unlabeled and not text:
        raise UserError(f"--unlabeled takes text, but {task.name} is image data")
    if section.unlabeled and any(stage.kd is None and not stage.intermediate for stage in stages):
        raise UserError("unlabeled text is learnt from the teacher, but a stage has no KD or intermediate term; "
                        "give every stage a teacher objective, or drop --unlabeled")
    pairs = task.train[0]["text_pair"] is not None if text else False
    unlabeled = read_unlabeled(section.unlabeled, pairs, task.is_regression) if section.unlabeled else None
    mixup = _mixup(section, task, models) if section.mixup or section.cutmix else None
    policy = _policy(section, names, task, models) if names else None
    copies = section.copies or (_tinybert_copies(task.name) if "tinybert" in names else 1)
    return AugmentPlan(section, policy, copies, unlabeled, mixup, recipe.train.seed, task.is_regression)


def _tinybert_copies(task_name: str) -> int:
    return TINYBERT_COPIES.get(task_name.lower().split("/")[-1], DEFAULT_TINYBERT_COPIES)


def _mixup(section: AugmentSection, task: TaskData, models: TaskModels) -> Mixup:
    if task.modality == "text":
        if section.cutmix:
            raise UserError("cutmix pastes image boxes; use --mixup alone for text")
        if models.separate:
            raise UserError("mixup mixes token positions of teacher and student alike, but they tokenize "
                            "differently; use a student with the teacher's tokenizer, or drop --mixup")
        if len(models.members) > 1:
            raise UserError("mixup mixes one teacher's word embeddings; use a single teacher, or drop --mixup")
        for role, model in (("student", models.student), ("teacher", models.members[0].model)):
            if not hasattr(model, "get_input_embeddings"):
                raise UserError(f"mixup on text needs word embeddings, but the {role} has none; drop --mixup")
    return Mixup(section.mixup_alpha, cutmix=section.cutmix)


def _policy(section: AugmentSection, names: list[str], task: TaskData, models: TaskModels) -> Policy:
    teacher = models.members[models.feature_member]
    if "backtranslate" in names and len(section.translation_models) != 2:
        raise UserError("back-translation needs two translation models: set distill.augment.translation_models to "
                        "[TO_PIVOT, BACK] (e.g. [Helsinki-NLP/opus-mt-en-ROMANCE, Helsinki-NLP/opus-mt-ROMANCE-en] "
                        "with translation_prefix '>>fr<<'; local directories work offline)")
    loaders = {
        "mlm": lambda: load_masked_lm(section.mlm_model or teacher.source),
        "embedding": lambda: (load_encoder(section.embedding_model) if section.embedding_model
                              else embedding_source(teacher.model, teacher.tokenizer, teacher.name)),
        "translation": lambda: (load_translator(section.translation_models[0]),
                                load_translator(section.translation_models[1]), section.translation_prefix),
    }
    context = AugmentContext(EditLimits(section.aug_p, section.aug_min, section.aug_max), section.batch_size, loaders)
    policy = build_policy(names, context)  # loads every model the policy reads: failures surface here
    texts = [task.train[i]["text"] for i in range(min(CHECKED_TEXTS, len(task.train)))]  # type: ignore[arg-type]
    checks = {"mlm": ("mlm_model", "the masked LM"), "embedding": ("embedding_model", "the embedding model")}
    for role, (key, what) in checks.items():
        if role in context.loaded:
            loaded = context.model(role)
            check_vocabulary(loaded.tokenizer, texts, f"{what} '{loaded.source}'", key)
    return policy


__all__ = ["AUGMENT_DIR", "AugmentPlan", "TINYBERT_COPIES", "TaskModels", "plan_augmentation"]
