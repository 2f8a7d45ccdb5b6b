"""The ``distill:`` recipe section: teachers, student initialisation, objectives and stages.

A recipe is a ``shrink train`` recipe whose ``model:`` is the student, plus a ``distill:`` section. The
objectives (spec §1: L = w_kd·L_KD + Σ w_inter·L_inter + w_hard·CE) sit directly in ``distill:`` for a
single stage, or in ``distill.stages`` for several stages run in sequence (TinyBERT's intermediate, then
prediction-layer distillation), each with its own ``train`` overrides.

Usage::

    recipe = load_recipe("distiller-mi-alpha", DistillRecipe, overrides={"distill.teacher": "runs/t"})
    for stage in recipe.distill.stage_list(): print(stage.name, stage.kd, stage.intermediate)
"""
from __future__ import annotations

import copy
from typing import Any, Literal

from pydantic import Field, create_model, model_serializer, model_validator

from distill.augment.config import AugmentSection
from shrink.errors import UserError
from shrink.recipe import ModelSection, Recipe, Section, TrainConfig

StudentInit = Literal["pretrained", "from_teacher", "random"]


class _Overrides(Section):
    """Base of partial sections: unset (None) keys keep the base value and are left out when saved."""

    @model_serializer(mode="wrap")
    def _drop_unset(self, handler: Any) -> dict[str, Any]:
        return {key: value for key, value in handler(self).items() if value is not None}


def _partial(section: type[Section], name: str) -> type[_Overrides]:
    """``section`` with every key optional (default None) and the same validation of given values."""
    fields: dict[str, Any] = {}
    for key, field in section.model_fields.items():
        info = copy.copy(field)
        info.default, info.default_factory = None, None
        fields[key] = (field.annotation | None, info)
    return create_model(name, __base__=_Overrides, __doc__=f"Optional overrides of {section.__name__}.", **fields)


TrainOverrides = _partial(TrainConfig, "TrainOverrides")


def apply_overrides(base: TrainConfig, overrides: _Overrides) -> TrainConfig:
    """``base`` with the keys set in ``overrides`` replaced. Usage: ``apply_overrides(recipe.train, stage.train)``."""
    return base.model_copy(update=overrides.model_dump())


class KDSection(Section):
    """The prediction-layer term w_kd·L_KD(z_S, z_T; T); ``loss`` None is ``ce`` (``mse`` for regression).

    Usage: ``KDSection(loss="kl", temperature=4.0, weight=0.9)``
    """

    loss: str | None = None
    temperature: float = Field(1.0, gt=0)
    weight: float = Field(1.0, ge=0)


class IntermediateSection(Section):
    """One intermediate objective: a pair loss summed over a layer map, weighted.

    Hugging Face models are read at their embeddings and layers; other models need ``teacher_layers`` and
    ``student_layers``: module paths (``layer1``, ``blocks.3``) whose outputs are feature indices 0, 1, ...
    ``alpha`` and ``critic`` configure the MI losses; ``options`` passes further loss arguments; ``features``,
    when given, is checked against what the loss reads (hidden or attention). ``lr_scale`` multiplies the
    learning rate of the objective's own parameters (MI critics, projections), which start from random weights.
    Usage: ``IntermediateSection(loss="mi", alpha=0.9, critic="mlp", layer_map="skip")``
    """

    loss: str = "mi"
    weight: float = Field(1.0, ge=0)
    layer_map: str = "skip"
    features: Literal["hidden", "attention"] | None = None
    alpha: float | None = None
    critic: str | None = None
    lr_scale: float = Field(1.0, gt=0)
    teacher_layers: list[str] | None = None
    student_layers: list[str] | None = None
    options: dict[str, Any] = Field(default_factory=dict)


class Objectives(Section):
    """What one stage minimises: KD (None: no prediction-layer term), hard labels, intermediate terms.

    Usage: ``Objectives(kd=None, intermediate=[IntermediateSection(loss="hidden_mse")])``
    """

    kd: KDSection | None = Field(default_factory=KDSection)
    hard_weight: float = Field(0.0, ge=0)
    intermediate: list[IntermediateSection] = Field(default_factory=list)
    reduction: Literal["sum", "mean"] = "sum"


class StageSection(Objectives):
    """One stage of a multi-stage recipe: its objectives and its overrides of the ``train:`` section.

    Usage: ``StageSection(name="prediction", train=TrainOverrides(epochs=3, lr=3e-5))``
    """

    name: str = "distill"
    train: TrainOverrides = Field(default_factory=TrainOverrides)  # type: ignore[valid-type]


OBJECTIVE_KEYS = tuple(Objectives.model_fields)


# The default pipeline: what a bare `distill --teacher T --student S` runs (fill_default_pipeline).
DEFAULT_KD: dict[str, Any] = {"loss": "kl", "temperature": 2.0}
# The critic trains at 10x the student's lr: at 1x it was still learning when RTE's 423 steps ended (README).
DEFAULT_INTERMEDIATE: dict[str, Any] = {"loss": "mi", "alpha": 0.9, "critic": "mlp", "layer_map": "skip",
                                        "weight": 1.0, "lr_scale": 10.0}


class DistillSection(Objectives):
    """Teachers, student initialisation, and the objectives of a one-stage run (or ``stages``).

    ``teacher``: an alias, hub id, local directory or run directory; several separated by commas make an
    ensemble (averaged logits; features from member ``feature_teacher``). A teacher with no head trained for
    the task is fine-tuned first with ``teacher_train`` overriding ``train:``. ``augment``: augmentation,
    mixup and unlabeled text (:class:`distill.augment.AugmentSection`; default none). ``kd`` and
    ``intermediate`` left unset get the default pipeline when the run is planned (:meth:`fill_default_pipeline`).
    Usage: ``DistillSection(teacher="runs/a,runs/b", feature_teacher=1).teacher_names()``
    """

    teacher: str | None = None
    teacher_args: dict[str, Any] = Field(default_factory=dict)
    teacher_kind: str | None = None
    feature_teacher: int = Field(0, ge=0)
    teacher_train: TrainOverrides = Field(default_factory=TrainOverrides)  # type: ignore[valid-type]
    student_init: StudentInit = "pretrained"
    student_layers: int | None = Field(None, gt=0)
    stages: list[StageSection] = Field(default_factory=list)
    cache_teacher_outputs: bool = True
    export_onnx: bool = False
    augment: AugmentSection = Field(default_factory=AugmentSection)

    @model_validator(mode="after")
    def _one_place_for_objectives(self) -> DistillSection:
        defaults = Objectives()
        mixed = [key for key in OBJECTIVE_KEYS if getattr(self, key) != getattr(defaults, key)]
        if self.stages and mixed:
            raise ValueError(f"give the objectives ({', '.join(mixed)}) inside each stage when 'stages' is used")
        return self

    def fill_default_pipeline(self, regression: bool, reads_hidden_states: bool) -> list[str]:
        """Give the objectives the recipe and flags left unset the default pipeline's values; returns what was
        filled. The default (``DEFAULT_KD`` + ``DEFAULT_INTERMEDIATE``) is the best pipeline of the distillation
        benchmarks over SST-2 and RTE (README, "Default pipeline"): KD (kl, T = 2) + MI-alpha, critic at 10x lr.
        Regression keeps KD's own default (mse, T = 1); MI-alpha needs models whose layers it can read
        without listed module paths (Hugging Face models: ``reads_hidden_states``). Multi-stage recipes
        spell out every stage, so they get nothing.
        Usage: ``recipe.distill.fill_default_pipeline(task.is_regression, reads_hidden_states=True)``
        """
        if self.stages:
            return []
        filled = []
        if "kd" not in self.model_fields_set and not regression:
            self.kd = KDSection(**DEFAULT_KD)
            filled.append("kd")
        if "intermediate" not in self.model_fields_set and reads_hidden_states:
            self.intermediate = [IntermediateSection(**DEFAULT_INTERMEDIATE)]
            filled.append("intermediate")
        return filled

    def teacher_names(self) -> list[str]:
        """The teacher names (one, or the members of an ensemble). Usage: ``section.teacher_names()``."""
        names = [name.strip() for name in (self.teacher or "").split(",") if name.strip()]
        if not names:
            raise UserError("distill needs a teacher: pass --teacher NAME_OR_DIR (several, comma-separated, "
                            "make an ensemble) or set distill.teacher in the recipe")
        return names

    def stage_list(self) -> list[StageSection]:
        """The stages to run: ``stages``, or one stage made of the section's own objectives.

        Usage: ``[stage.name for stage in recipe.distill.stage_list()]``
        """
        if self.stages:
            return list(self.stages)
        return [StageSection(**{key: getattr(self, key) for key in OBJECTIVE_KEYS})]


class StudentSection(ModelSection):
    """The student: a model name, preset or directory; None copies the teacher's shape (``from_teacher``).

    Usage: ``StudentSection(name="bert-tiny")``
    """

    name: str | None = None  # type: ignore[assignment]


# Here, not at the top: the moe section builds on TrainOverrides above.
from distill.moe.config import MoESection  # noqa: E402


class DistillRecipe(Recipe):
    """A recipe for ``distill``: ``model:`` is the student, ``distill:`` the method.

    Usage: ``load_recipe("demo", DistillRecipe).distill.teacher``
    """

    model: StudentSection = Field(default_factory=StudentSection)
    distill: DistillSection = Field(default_factory=DistillSection)
    moe: MoESection | None = None  # set: the run is Meta-DMoE (``distill --moe``)


__all__ = [
    "DEFAULT_INTERMEDIATE",
    "DEFAULT_KD",
    "DistillRecipe",
    "DistillSection",
    "IntermediateSection",
    "KDSection",
    "Objectives",
    "StageSection",
    "StudentSection",
    "TrainOverrides",
    "apply_overrides",
]
