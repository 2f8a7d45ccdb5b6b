"""Teachers: frozen models in eval mode that give the soft targets, and where they come from.

A teacher is named like any model (alias, hub id, preset, zoo name, local directory) or by a ``shrink
train`` run directory (its ``model/`` is used). ``load_teacher_member`` also says whether the model has a
head trained for the task: a general checkpoint, a preset or a zoo name does not, and ``distill``
fine-tunes it first. The ``Teacher`` module wraps the loaded members; it is registered in ``TEACHERS``.

Usage::

    member = load_teacher_member("runs/bert-sst2", task)
    teacher = TEACHERS.get("single")([member.model])
    logits = teacher.logits(batch)
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn
from transformers import PreTrainedModel

from shrink.data import TaskData
from shrink.errors import UserError
from shrink.experiment import load_for_task
from shrink.models import read_spec
from shrink.models.io import HF_CONFIG_FILE, SPEC_FILE
from shrink.registry import Registry
from shrink.train import forward_logits

RUN_MODEL_DIR = "model"
CLASSIFIER_SUFFIX = "ForSequenceClassification"


class Teacher(nn.Module):
    """Frozen members, always in eval mode; ``logits`` (their mean) gives the soft targets, ``feature_model``
    the features.

    It behaves like a classifier (``forward`` returns logits; Hugging Face members lend it their ``config``),
    so the core's evaluation and measurement take it as is. Usage: ``Teacher.logits(batch)``.
    """

    def __init__(self, members: Sequence[nn.Module], feature_member: int = 0) -> None:
        super().__init__()
        self.check_members(len(members))
        if not 0 <= feature_member < len(members):
            raise UserError(f"feature_teacher {feature_member} is not a teacher index; "
                            f"use 0..{len(members) - 1} (the order of --teacher)")
        self.members = nn.ModuleList(members)
        self.feature_member = feature_member
        self.requires_grad_(False)
        super().train(False)

    @classmethod
    def check_members(cls, count: int) -> None:
        """Refuse a member count this kind of teacher cannot take (before anything is loaded or trained).

        Usage: ``TEACHERS.get("ensemble").check_members(len(names))``
        """
        if count < 1:
            raise UserError("a teacher needs at least one model; pass --teacher NAME_OR_DIR")

    def train(self, mode: bool = True) -> Teacher:
        """A teacher stays in eval mode (no dropout): the targets must not depend on the step."""
        return self

    @property
    def feature_model(self) -> nn.Module:
        """The member whose intermediate features are distilled.

        Usage: ``FeatureTaps(teacher.feature_model, paths)``
        """
        return self.members[self.feature_member]

    @property
    def config(self) -> Any:
        """The Hugging Face config of the feature member (AttributeError for vision models)."""
        return self.feature_model.config

    def logits(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The mean of the members' logits for model inputs (a batch). Usage: ``teacher.logits(batch)``."""
        outputs = [forward_logits(member, inputs) for member in self.members]
        shapes = sorted({tuple(out.shape) for out in outputs})
        if len(shapes) > 1:
            raise UserError(f"the teachers give logits of shapes {shapes}; an ensemble needs one label set")
        return outputs[0] if len(outputs) == 1 else torch.stack(outputs).mean(0)

    def forward(self, *args: torch.Tensor, **inputs: torch.Tensor) -> torch.Tensor:
        """Logits from keyword inputs (text) or one image tensor, like the models it wraps."""
        return self.logits({"pixel_values": args[0]} if args else inputs)


TEACHERS: Registry[type[Teacher]] = Registry("teacher")


@TEACHERS.register("single")
class SingleTeacher(Teacher):
    """One teacher model. Usage: ``SingleTeacher([model]).logits(batch)``."""

    @classmethod
    def check_members(cls, count: int) -> None:
        """Exactly one model."""
        if count != 1:
            raise UserError(f"a single teacher takes one model, got {count}; use teacher_kind ensemble")


@dataclass
class TeacherMember:
    """One teacher as loaded: the name given, the source loaded, model, tokenizer, and whether its head is trained.

    Usage: ``member = load_teacher_member("bert-mini", task); member.trained  # False: fine-tune first``
    """

    name: str
    source: str
    model: nn.Module
    tokenizer: Any
    trained: bool


def model_source(name: str) -> str:
    """What to load for ``name``: ``RUN/model`` for a run directory, else ``name`` itself.

    Usage: ``model_source("runs/bert-sst2")  # 'runs/bert-sst2/model'``
    """
    run_model = Path(name) / RUN_MODEL_DIR
    return str(run_model) if run_model.is_dir() else name


def saved_label_count(source: str) -> int | None:
    """How many outputs the trained head of a saved model has; None when it has no task head (or is no folder).

    Usage: ``saved_label_count("runs/t/model")  # 2``
    """
    folder = Path(source)
    if (folder / SPEC_FILE).is_file():
        return read_spec(folder)["kwargs"].get("num_classes")
    if not (folder / HF_CONFIG_FILE).is_file():
        return None
    try:
        config = json.loads((folder / HF_CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"cannot read {folder / HF_CONFIG_FILE}: {err}") from None
    if not any(arch.endswith(CLASSIFIER_SUFFIX) for arch in config.get("architectures") or ()):
        return None
    return len(config["id2label"]) if "id2label" in config else int(config.get("num_labels", 2))


def check_label_count(role: str, name: str, source: str, task: TaskData) -> None:
    """Refuse a saved classifier whose label count differs from the task's (and so from the other model's).

    Usage: ``check_label_count("teacher", "runs/t", "runs/t/model", task)``
    """
    count, wanted = saved_label_count(source), 1 if task.is_regression else task.num_labels
    if count is not None and count != wanted:
        raise UserError(f"the {role} '{name}' predicts {count} labels but task {task.name} (and so the other model) "
                        f"has {wanted}; teacher and student need one label set: pass a {role} trained on this task "
                        "or its base model")


def has_trained_head(model: nn.Module, source: str) -> bool:
    """True for a Hugging Face classifier checkpoint or a saved plain torch model; False for a fresh head.

    Usage: ``has_trained_head(model, "bert-base")  # False: bert-base-uncased has no classifier``
    """
    if isinstance(model, PreTrainedModel):
        return any(arch.endswith(CLASSIFIER_SUFFIX) for arch in model.config.architectures or ())
    return (Path(source) / SPEC_FILE).is_file()


def load_teacher_member(name: str, task: TaskData, **args: Any) -> TeacherMember:
    """Load one teacher for ``task``; ``args`` go to vision builders.

    Usage: ``load_teacher_member("resnet56", task)``
    """
    source = model_source(name)
    check_label_count("teacher", name, source, task)
    model, tokenizer = load_for_task(source, task, task.tokenizer, **args)
    return TeacherMember(name, source, model, tokenizer, has_trained_head(model, source))


__all__ = [
    "TEACHERS",
    "SingleTeacher",
    "Teacher",
    "TeacherMember",
    "check_label_count",
    "has_trained_head",
    "load_for_task",
    "load_teacher_member",
    "model_source",
    "saved_label_count",
]
