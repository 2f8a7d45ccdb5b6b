"""Student initialisation (spec §2.6), registered in ``STUDENT_INITS``.

- ``pretrained`` (default): the named model as it is published or saved (presets are random by nature),
  with a fresh head sized for the task.
- ``from_teacher``: DistilBERT-style, the teacher's embeddings, pooler and head plus the layers the ``skip``
  map pairs with each student layer (student layer i <- teacher layer ⌊(i+1)·N_T/N_S⌋ - 1, so each student
  layer starts as the teacher layer whose output it will mimic). Needs equal hidden size and heads.
- ``random``: the named model's architecture, freshly initialised.

Usage::

    student, tokenizer = build_student("from_teacher", StudentRequest(None, task, teacher, tok, layers=2))
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn
from transformers import AutoModelForSequenceClassification, PreTrainedModel

from distill.features import hf_layer_paths
from distill.objectives import LAYER_MAPS
from distill.teachers import check_label_count, load_for_task, model_source
from shrink.data import TaskData
from shrink.errors import UserError
from shrink.models import name_labels
from shrink.registry import Registry

SHAPE_KEYS = ("hidden_size", "num_attention_heads")


@dataclass
class StudentRequest:
    """What a student initialiser gets: the student name (None: the teacher's shape), the task, the teacher
    model whose layers may be copied and its tokenizer, a layer count for copies, vision builder args.

    Usage: ``StudentRequest("bert-tiny", task, teacher_model, teacher_tokenizer)``
    """

    name: str | None
    task: TaskData
    teacher: nn.Module
    teacher_tokenizer: Any = None
    layers: int | None = None
    args: dict[str, Any] = field(default_factory=dict)


StudentInit = Callable[[StudentRequest], tuple[nn.Module, Any]]
STUDENT_INITS: Registry[StudentInit] = Registry("student init")


@STUDENT_INITS.register("pretrained")
def pretrained_student(request: StudentRequest) -> tuple[nn.Module, Any]:
    """The named student as published or saved, with the task's head. Usage: ``pretrained_student(request)``."""
    if request.name is None:
        raise UserError("name a student with --student NAME_OR_DIR, or use --student-init from_teacher to copy "
                        "the teacher's shape")
    if request.layers is not None:
        raise UserError("--student-layers applies to --student-init from_teacher; otherwise pick a student with "
                        "that many layers")
    source = model_source(request.name)
    check_label_count("student", request.name, source, request.task)
    # The teacher's tokenizer first: presets then share its vocabulary, so token-level losses align.
    return load_for_task(source, request.task, request.teacher_tokenizer or request.task.tokenizer, **request.args)


@STUDENT_INITS.register("random")
def random_student(request: StudentRequest) -> tuple[nn.Module, Any]:
    """The named student's architecture at random init. Usage: ``random_student(request)``."""
    model, tokenizer = pretrained_student(request)
    return reinitialise(model), tokenizer


def reinitialise(model: nn.Module) -> nn.Module:
    """``model``'s architecture with fresh weights (Hugging Face init for HF models, PyTorch defaults otherwise).

    Usage: ``fresh = reinitialise(trained_resnet)``
    """
    if isinstance(model, PreTrainedModel):
        return AutoModelForSequenceClassification.from_config(model.config)
    for module in model.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    return model


@STUDENT_INITS.register("from_teacher")
def teacher_copy_student(request: StudentRequest) -> tuple[nn.Module, Any]:
    """A shallower copy of the teacher (or the named student filled from it).

    Usage: ``teacher_copy_student(StudentRequest(None, task, teacher, tokenizer, layers=2))``
    """
    teacher = request.teacher
    if not isinstance(teacher, PreTrainedModel):
        raise UserError("--student-init from_teacher copies Hugging Face encoder layers; for other models use "
                        "pretrained or random")
    if request.name is not None and request.layers is not None:
        raise UserError("with --student-init from_teacher give either --student (its own depth) or --student-layers "
                        "(a copy of the teacher with that many layers), not both")
    if request.name is not None:
        student, tokenizer = pretrained_student(request)
    else:
        config = copy.deepcopy(teacher.config)
        config.num_hidden_layers = request.layers or max(1, teacher.config.num_hidden_layers // 2)
        student, tokenizer = type(teacher)(config), request.teacher_tokenizer
    copy_teacher_layers(student, teacher)
    return student, tokenizer


def copy_teacher_layers(student: PreTrainedModel, teacher: PreTrainedModel) -> list[tuple[int, int]]:
    """Load the teacher's weights into ``student``: every tensor outside the layer stack by name, and student
    layer i from the teacher layer the ``skip`` map pairs with it. Returns the (teacher, student) layer pairs.

    Usage: ``copy_teacher_layers(student, teacher)  # 12 -> 6: [(1, 0), (3, 1), ..., (11, 5)]``
    """
    for key in SHAPE_KEYS:
        got, wanted = getattr(student.config, key, None), getattr(teacher.config, key, None)
        if got != wanted:
            raise UserError(f"--student-init from_teacher needs the student's {key} equal to the teacher's "
                            f"({got} vs {wanted}); leave --student out to copy the teacher's shape, or use "
                            "--student-init pretrained")
    n_teacher, n_student = teacher.config.num_hidden_layers, student.config.num_hidden_layers
    if n_student > n_teacher:
        raise UserError(f"a from_teacher student cannot have more layers ({n_student}) than the teacher ({n_teacher})")
    pairs = [(t - 1, s - 1) for t, s in LAYER_MAPS.get("skip")(n_teacher, n_student).pairs[1:]]
    source_layer = dict((s, t) for t, s in pairs)
    student_stack, teacher_stack = (hf_layer_paths(model)[1].rsplit(".", 1)[0] for model in (student, teacher))
    weights = teacher.state_dict()
    copied = {}
    for key, value in student.state_dict().items():
        source = key
        if key.startswith(f"{student_stack}."):
            index, rest = key[len(student_stack) + 1:].split(".", 1)
            source = f"{teacher_stack}.{source_layer[int(index)]}.{rest}"
        if source not in weights or weights[source].shape != value.shape:
            found = tuple(weights[source].shape) if source in weights else "none"
            raise UserError(f"from_teacher cannot fill student tensor {key} {tuple(value.shape)} from teacher tensor "
                            f"{source} ({found}); student and teacher need the same architecture and vocabulary")
        copied[key] = weights[source].clone()
    student.load_state_dict(copied)
    return pairs


def build_student(init: str, request: StudentRequest) -> tuple[nn.Module, Any]:
    """The student (and its tokenizer) by the registered ``init``. Usage: ``build_student("random", request)``."""
    student, tokenizer = STUDENT_INITS.get(init)(request)
    name_labels(student, request.task.label_names)  # a copied config has the teacher's names, maybe none
    return student, tokenizer


__all__ = [
    "STUDENT_INITS",
    "StudentRequest",
    "build_student",
    "copy_teacher_layers",
    "pretrained_student",
    "random_student",
    "reinitialise",
    "teacher_copy_student",
]
