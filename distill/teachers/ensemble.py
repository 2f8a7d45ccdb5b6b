"""An ensemble teacher: several models whose logits are averaged (``Teacher.logits``); features come from one
chosen member.

Usage::

    teacher = EnsembleTeacher([bert_a, bert_b, bert_c], feature_member=0)
    soft_targets = teacher.logits(batch)     # mean of the three models' logits
"""
from __future__ import annotations

from distill.teachers.single import TEACHERS, Teacher
from shrink.errors import UserError


@TEACHERS.register("ensemble")
class EnsembleTeacher(Teacher):
    """Averaged logits of two or more teachers trained for the same label set. Usage: ``EnsembleTeacher([a, b])``."""

    @classmethod
    def check_members(cls, count: int) -> None:
        """Two or more models."""
        if count < 2:
            raise UserError(f"an ensemble needs at least two teachers, got {count}; pass --teacher a,b")


__all__ = ["EnsembleTeacher"]
