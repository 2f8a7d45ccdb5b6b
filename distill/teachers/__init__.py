"""Teachers by name in ``TEACHERS``: ``single``, ``ensemble`` (averaged logits) and ``meta-dmoe`` (experts fused
by an aggregator, built by ``distill --moe``); loading and fine-tune detection.

Usage::

    from distill.teachers import build_teacher, load_teacher_member
    members = [load_teacher_member(name, task) for name in ("runs/a", "runs/b")]
    teacher = build_teacher([m.model for m in members])      # an EnsembleTeacher
"""
from __future__ import annotations

from typing import Sequence

from torch import nn

from distill.teachers.ensemble import EnsembleTeacher
from distill.teachers.meta_dmoe import MetaDMoETeacher
from distill.teachers.single import (
    TEACHERS,
    SingleTeacher,
    Teacher,
    TeacherMember,
    check_label_count,
    has_trained_head,
    load_for_task,
    load_teacher_member,
    model_source,
    saved_label_count,
)


def build_teacher(models: Sequence[nn.Module], kind: str | None = None, feature_member: int = 0) -> Teacher:
    """The registered teacher ``kind`` over ``models`` (default: single for one model, ensemble for more).

    Usage: ``build_teacher([model_a, model_b], feature_member=1)``
    """
    return teacher_class(len(models), kind)(models, feature_member)


def teacher_class(count: int, kind: str | None = None) -> type[Teacher]:
    """The registered teacher class for ``count`` models (``kind``, or single / ensemble), checked to take them.

    Usage: ``teacher_class(3)  # EnsembleTeacher``
    """
    found = TEACHERS.get(kind or ("ensemble" if count > 1 else "single"))
    found.check_members(count)
    return found


__all__ = [
    "TEACHERS",
    "EnsembleTeacher",
    "MetaDMoETeacher",
    "SingleTeacher",
    "Teacher",
    "TeacherMember",
    "build_teacher",
    "check_label_count",
    "has_trained_head",
    "load_for_task",
    "load_teacher_member",
    "model_source",
    "saved_label_count",
    "teacher_class",
]
