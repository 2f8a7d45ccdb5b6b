"""The ``distill`` command flow, on the core engine.

1. **Plan** (:func:`plan_distillation`): load the data, the teachers and the student, build every stage's
   objectives. All bad input fails here, before the run directory exists.
2. **Teacher phase**: a teacher without a head trained for the task is fine-tuned first with ``shrink
   train``'s flow into ``RUN/teacher/`` (a complete ``shrink train`` run). A finished phase whose recipe
   matches is reused: by ``--resume`` and by ``--overwrite`` re-runs alike.
3. **Teacher outputs**: without data augmentation or mixup, the teacher's logits over the training set (and
   any ``--unlabeled`` text) are computed once (eval mode) into ``RUN/teacher_logits.safetensors`` and fed
   from there to stages that need no teacher features; augmented copies (``distill.augment``, cached in
   ``RUN/augmented/``) and mixed batches are labelled by the teacher online.
4. **Stages**, in order, each in ``RUN/stages/<n>-<name>/`` with its own checkpoints (``--resume`` continues
   the stage in progress; finished stages are reused). The last stage's best dev model is the student.
5. **Outputs**: ``RUN/model`` (``save_pretrained`` for Hugging Face students), ``metrics.json`` (teacher and
   student scores, retention, parameters, MACs, latency, MI's K), ``report.md``, the result table, and
   ``RUN/model.onnx`` with ``export_onnx``.

Usage::

    recipe = load_recipe("demo", DistillRecipe)
    result = distill(recipe, resume=False, overwrite=True)
    result.metrics["retention"]
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
from accelerate.utils import set_seed
from torch import nn
from torch.utils.data import DataLoader, Dataset

from distill.augment import AUGMENT_DIR, AugmentedTrainSet, AugmentPlan, TaskModels, plan_augmentation
from distill.config import DistillRecipe, StageSection, apply_overrides
from distill.objectives import KDLoss, prediction_loss
from distill.pipeline import (
    DistillCollate,
    DistillStep,
    IndexedExamples,
    IntermediateTerm,
    alignment_free,
    build_term,
    same_tokenizer,
    split_batch,
    teacher_logits,
)
from distill.students import StudentRequest, build_student, copy_teacher_layers
from distill.teachers import Teacher, TeacherMember, build_teacher, load_teacher_member, teacher_class
from shrink.bench import size_on_disk
from shrink.data import TaskData, make_collate
from shrink.digest import dataset_digest, state_digest, value_digest
from shrink.errors import UserError
from shrink.experiment import (Experiment, default_output_dir, fit, fix_selection, load_task, model_figures, open_run,
                               selected_on, train_and_report)
from shrink.modelcard import ModelCard
from shrink.models import load_model
from shrink.recipe import ModelSection, Recipe, TrainConfig, read_yaml
from shrink.report import print_table, publish
from shrink.runlock import LOCK_FILE
from shrink.runs import RunDir, atomic_dir, atomic_write_bytes, atomic_write_json
from shrink.timing import latency_columns
from shrink.train import evaluate_model, make_accelerator, process_state

TEACHER_LOGITS_FILE = "teacher_logits.safetensors"
STAGES_DIR = "stages"
STAGE_RESULT, STAGE_FINAL, STAGE_BEST = "metrics.json", "final", "best"
SAMPLE_SIZE = 2  # examples in the batch that sizes the intermediate objectives
# Keys of a teacher-phase recipe that do not change what is trained.
PHASE_IGNORED = {("output_dir",), ("train", "progress"), ("train", "verbosity")}


@dataclass
class Stage:
    """One planned stage: its section, resolved train config, KD loss and intermediate terms.

    Usage: ``plan.stages[0].uses_cache``
    """

    section: StageSection
    config: TrainConfig
    kd: KDLoss | None
    terms: list[IntermediateTerm]
    folder: str

    @property
    def uses_cache(self) -> bool:
        """True when the stage needs the teacher's logits only (no features), so cached logits serve."""
        return self.kd is not None and not self.terms


@dataclass
class DistillPlan:
    """Everything ``distill`` needs, resolved and validated, before any file is written.

    Usage: ``plan = plan_distillation(recipe); plan.members[0].trained``
    """

    recipe: DistillRecipe
    task: TaskData
    members: list[TeacherMember]
    student: Experiment
    teacher_collate: Any
    stages: list[Stage]
    cache_outputs: bool
    augment: AugmentPlan | None = None

    @property
    def num_labels(self) -> int:
        """Outputs per example (1 for regression)."""
        return 1 if self.task.is_regression else self.task.num_labels

    @property
    def distill_examples(self) -> Dataset:
        """The examples the student distils on, before augmentation: the training set, then unlabeled text."""
        return self.augment.originals(self.task.train) if self.augment is not None else self.task.train


@dataclass
class DistillResult:
    """What :func:`distill` returns: the metrics (as in metrics.json), the student and the run directory.

    Usage: ``result = distill(recipe); result.student(**result.tokenizer("good", return_tensors="pt"))``
    """

    metrics: dict[str, Any]
    student: nn.Module
    tokenizer: Any
    run: RunDir


# ------------------------------------------------------------------------------------------------ plan
def plan_distillation(recipe: DistillRecipe) -> DistillPlan:
    """Load data, teachers and student and build each stage's objectives; UserError on any bad input.

    Usage: ``plan = plan_distillation(load_recipe("demo", DistillRecipe))``
    """
    section, seed = recipe.distill, recipe.train.seed
    names = section.teacher_names()
    teacher_class(len(names), section.teacher_kind)
    if section.feature_teacher >= len(names):
        raise UserError(f"feature_teacher {section.feature_teacher} is not a teacher index; use 0..{len(names) - 1}")
    task = fix_selection(load_task(recipe), recipe.train)  # a holdout never holds augmented copies
    set_seed(seed)  # preset teachers and students start from seeded random weights
    members = [load_teacher_member(name, task, **section.teacher_args) for name in names]
    for member in members[1:]:
        if not same_tokenizer(members[0].tokenizer, member.tokenizer):
            raise UserError(f"ensemble teachers '{members[0].name}' and '{member.name}' tokenize differently; "
                            "use teachers that share a tokenizer")
    feature_member = members[section.feature_teacher]
    set_seed(seed)
    student, tokenizer = build_student(section.student_init, StudentRequest(
        recipe.model.name, task, feature_member.model, feature_member.tokenizer, section.student_layers,
        recipe.model.args))
    filled = section.fill_default_pipeline(task.is_regression, reads_hidden_states=all(
        hasattr(model, "config") for model in (student, feature_member.model)))
    if filled:  # the values themselves show in the stage line; naming them here again would go stale
        hint = "; --intermediate none for KD alone" if "intermediate" in filled else ""
        process_state().print(f"objectives left unset ({', '.join(filled)}) take the default pipeline's values "
                              f"(see the stage line){hint}")
    max_length = recipe.data.max_length
    teacher_collate = make_collate(task, feature_member.tokenizer, max_length)
    separate = not same_tokenizer(tokenizer, feature_member.tokenizer)
    collate = DistillCollate(make_collate(task, tokenizer, max_length), teacher_collate if separate else None)
    sample = IndexedExamples(task.dev)
    samples = split_batch(collate([sample[i] for i in range(min(SAMPLE_SIZE, len(sample)))]))[:2]
    stages = [plan_stage(position, stage, recipe, task, (student, feature_member.model), samples, separate)
              for position, stage in enumerate(section.stage_list())]
    augment = plan_augmentation(section.augment, task, TaskModels(student, tokenizer, members, section.feature_teacher,
                                                                  separate), recipe, section.stage_list())
    examples = augment.originals(task.train) if augment is not None else task.train
    augmented = (task.modality == "image" and recipe.data.augment) or (augment is not None and augment.dynamic)
    experiment = Experiment(recipe, dataclasses.replace(task, train=IndexedExamples(examples)), student,
                            tokenizer, collate)
    return DistillPlan(recipe, task, members, experiment, teacher_collate, stages,
                       section.cache_teacher_outputs and not augmented, augment)


def plan_stage(position: int, stage: StageSection, recipe: DistillRecipe, task: TaskData,
               models: tuple[nn.Module, nn.Module], samples: tuple[dict, dict], separate: bool) -> Stage:
    """One stage's KD loss and intermediate terms, sized on sample inputs of (student, teacher) ``models``.

    Usage: ``plan_stage(0, recipe.distill.stage_list()[0], recipe, task, (student, teacher), samples, False)``
    """
    set_seed(recipe.train.seed + position)  # each stage's projections and critics start the same on every run
    kd = None
    if stage.kd is not None and stage.kd.weight > 0:
        kd = prediction_loss(stage.kd.loss, stage.kd.temperature, 1 if task.is_regression else task.num_labels)
    terms = [build_term(entry, stage.reduction, *models, *samples) for entry in stage.intermediate]
    for entry, term in zip(stage.intermediate, terms):
        if separate and not alignment_free(term.objective):
            raise UserError(f"teacher and student tokenize differently, so '{entry.loss}' cannot compare token "
                            "positions; use pkd or mi with the mlp critic, or a student with the teacher's tokenizer")
    if kd is None and stage.hard_weight == 0 and not terms:
        raise UserError(f"stage '{stage.name}' has no objective; give it kd, hard_weight or intermediate entries")
    folder = f"{position + 1}-{re.sub(r'[^A-Za-z0-9_.-]+', '-', stage.name)}"
    return Stage(stage, apply_overrides(recipe.train, stage.train), kd, terms, folder)


# --------------------------------------------------------------------------------------------- teacher
def teacher_folder(run: RunDir, index: int, count: int) -> Path:
    """``RUN/teacher`` (or ``RUN/teacher-<n>`` per ensemble member) where a teacher is fine-tuned.

    Usage: ``teacher_folder(run, 0, 1)  # RUN/teacher``
    """
    return run / ("teacher" if count == 1 else f"teacher-{index + 1}")


def _phase_recipe(plan: DistillPlan, member: TeacherMember, folder: Path) -> Recipe:
    recipe = plan.recipe
    return Recipe(model=ModelSection(name=member.source, args=recipe.distill.teacher_args), data=recipe.data,
                  train=apply_overrides(recipe.train, recipe.distill.teacher_train), output_dir=str(folder))


def _comparable(tree: dict[str, Any]) -> dict[str, Any]:
    return {k: {kk: vv for kk, vv in v.items() if (k, kk) not in PHASE_IGNORED} if isinstance(v, dict) else v
            for k, v in tree.items() if (k,) not in PHASE_IGNORED}


def finetune_teacher(plan: DistillPlan, member: TeacherMember, folder: Path) -> dict[str, Any]:
    """Fine-tune ``member`` on the task into ``folder`` (a ``shrink train`` run), or reuse a finished one
    with the same recipe; continue an interrupted one. Returns the phase's metrics and loads the result.

    Usage: ``metrics = finetune_teacher(plan, plan.members[0], run / "teacher")``
    """
    recipe = _phase_recipe(plan, member, folder)
    saved = folder / "recipe.yaml"
    same = saved.is_file() and _comparable(read_yaml(saved)) == _comparable(recipe.model_dump(mode="json"))
    if same and RunDir(folder).is_complete():
        process_state().print(f"teacher phase: reusing the fine-tuned teacher in {folder}")
        metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    else:
        process_state().print(f"teacher phase: fine-tuning '{member.name}' on {plan.task.name} into {folder}")
        experiment = Experiment(recipe, plan.task, member.model, member.tokenizer, plan.teacher_collate)
        # An unfinished phase with this recipe continues from its last checkpoint; any other is replaced.
        metrics = train_and_report(experiment, resume=same, overwrite=not same)
    process_state().wait_for_everyone()
    member.model, member.trained = load_model(folder / "model"), True
    return metrics


@torch.no_grad()
def teacher_dev_metrics(plan: DistillPlan, teacher: Teacher) -> dict[str, float]:
    """The teacher's (ensemble's) dev metrics. Usage: ``teacher_dev_metrics(plan, teacher)["accuracy"]``."""
    accelerator = make_accelerator(plan.recipe.train)
    teacher.to(accelerator.device)
    loader = DataLoader(plan.task.dev, batch_size=plan.recipe.train.eval_batch_size or 64, shuffle=False,
                        collate_fn=plan.teacher_collate)
    return evaluate_model(teacher, accelerator.prepare(loader), plan.task.metrics, accelerator=accelerator)


def teacher_outputs_key(plan: DistillPlan, teacher: Teacher) -> str:
    """A digest of everything the cached teacher logits depend on: the teacher's kind, settings and weights,
    its tokenizer's vocabulary, the data settings (max length included) and the training examples themselves.

    Usage: ``teacher_outputs_key(plan, teacher) == saved_metadata["source"]``
    """
    section = plan.recipe.distill
    tokenizer = plan.members[teacher.feature_member].tokenizer
    return value_digest({
        "kind": type(teacher).__name__, "teacher_args": section.teacher_args,
        "feature_teacher": teacher.feature_member, "weights": state_digest(teacher),
        "vocabulary": value_digest(tokenizer.get_vocab()) if tokenizer is not None else None,
        "data": plan.recipe.data.model_dump(mode="json"), "examples": dataset_digest(plan.distill_examples)})


def cached_teacher_logits(plan: DistillPlan, teacher: Teacher, run: RunDir) -> torch.Tensor:
    """The teacher's logits over the training set, from ``RUN/teacher_logits.safetensors`` or computed once.

    Usage: ``logits = cached_teacher_logits(plan, teacher, run)  # [len(train), num_labels]``
    """
    path = run / TEACHER_LOGITS_FILE
    source = teacher_outputs_key(plan, teacher)
    if path.is_file():
        with safetensors.safe_open(str(path), "pt") as saved:
            if (saved.metadata() or {}).get("source") == source:
                return saved.get_tensor("logits")
    accelerator = make_accelerator(plan.recipe.train)
    logits = teacher_logits(teacher, plan.distill_examples, plan.student.collate,
                            plan.recipe.train.eval_batch_size or 64,
                            accelerator.device, progress=plan.recipe.train.progress)
    if accelerator.is_main_process:
        atomic_write_bytes(path, safetensors.torch.save({"logits": logits.contiguous()}, metadata={"source": source}))
    return logits


# ----------------------------------------------------------------------------------------------- stages
def run_stage(plan: DistillPlan, stage: Stage, teacher: Teacher, cache: torch.Tensor | None, run: RunDir,
              resume: bool) -> dict[str, Any]:
    """Train the student through one stage (or reuse the finished stage); returns the stage's metrics.

    Usage: ``run_stage(plan, plan.stages[0], teacher, None, run, resume=False)["best"]``
    """
    folder = run / STAGES_DIR / stage.folder
    if (folder / STAGE_RESULT).is_file():
        process_state().print(f"stage {stage.folder}: finished earlier, reusing it")
        plan.student.model = load_model(folder / STAGE_FINAL)
        return json.loads((folder / STAGE_RESULT).read_text(encoding="utf-8"))
    experiment = dataclasses.replace(plan.student, recipe=plan.recipe.model_copy(update={"train": stage.config}))
    augment = plan.augment
    augmented = None
    if augment is not None and augment.policy is not None:
        # copies carry gold labels only when no KD term labels them
        augmented = augment.train_set(plan.task.train, gold_copies=stage.kd is None, cache_folder=run / AUGMENT_DIR,
                                      config=stage.config)
        augmented.copies_of(0)  # the first round before training, so its cost shows up front
        experiment = dataclasses.replace(experiment, task=dataclasses.replace(experiment.task, train=augmented))
    section = stage.section
    step = DistillStep(experiment.model, teacher, kd=stage.kd, terms=stage.terms, num_labels=plan.num_labels,
                       kd_weight=section.kd.weight if section.kd else 0.0, hard_weight=section.hard_weight,
                       cached_logits=cache if stage.uses_cache else None,
                       mixup=augment.mixup if augment is not None else None)
    trains_params = any(p.requires_grad for p in step.parameters())
    process_state().print(f"stage {stage.folder}: {describe_stage(stage)}{describe_augmentation(augment)}")
    try:
        # A step without parameters goes in as a function: nothing of it to train or checkpoint.
        result = fit(experiment, RunDir(folder), resume, step=step if trains_params else step.forward)
    finally:
        step.close()
    metrics = {"stage": section.name, "best": result.best, "best_epoch": result.best_epoch, "final": result.final,
               "steps": result.steps, "train_seconds": result.train_seconds, "loss_terms": step.terms_seen.means(),
               "mi_k": step.mi_k, "teacher_outputs": step.teacher_outputs,
               "pairs": {f"{i}:{term.name}": term.objective.num_terms for i, term in enumerate(stage.terms)},
               "skipped_pairs": {f"{i}:{term.name}": term.objective.skipped for i, term in enumerate(stage.terms)
                                 if term.objective.skipped},
               "history": result.history, "augmentation": _costs(augmented)}
    if process_state().is_main_process:
        with atomic_dir(folder / STAGE_FINAL) as tmp:
            experiment.save(experiment.model, tmp)
        atomic_write_json(folder / STAGE_RESULT, metrics)
    process_state().wait_for_everyone()
    return metrics


def _costs(train: AugmentedTrainSet | None) -> list[dict[str, Any]]:
    return list(train.costs) if train is not None else []


def describe_augmentation(augment: AugmentPlan | None) -> str:
    """The stage line's note on augmentation ('' without). Usage: ``describe_augmentation(plan.augment)``."""
    if augment is None:
        return ""
    settings = augment.describe()
    parts = [f"{'+'.join(settings['policy'])} x{settings['copies']}"] if settings["policy"] else []
    parts += ["cutmix" if settings["cutmix"] else "mixup"] if settings["mixup"] else []
    parts += [f"{settings['unlabeled_examples']} unlabeled examples"] if settings["unlabeled_examples"] else []
    return "; augmented: " + ", ".join(parts)


def augmentation_metrics(augment: AugmentPlan | None, stages: list[dict[str, Any]]) -> dict[str, Any] | None:
    """metrics.json's ``augmentation``: the settings, each round's cost, and the cost per 1,000 sentences of the
    rounds made (not read from the cache) in this run. Usage: ``augmentation_metrics(plan.augment, stages)``.
    """
    if augment is None:
        return None
    rounds = [cost for stage in stages for cost in stage.get("augmentation", [])]
    made = [cost for cost in rounds if not cost["cached"]]
    sentences = sum(cost["sentences"] for cost in made)
    per_1000 = 1000 * sum(cost["seconds"] for cost in made) / sentences if sentences else None
    return {**augment.describe(), "rounds": rounds, "seconds_per_1000_sentences": per_1000}


def describe_stage(stage: Stage) -> str:
    """One line naming a stage's objectives. Usage: ``describe_stage(plan.stages[0])``."""
    section = stage.section
    parts = []
    if stage.kd is not None and section.kd is not None:
        parts.append(f"{section.kd.weight:g}*kd[{stage.kd.name}, T={stage.kd.temperature:g}]")
    for entry, term in zip(section.intermediate, stage.terms):
        skipped = term.objective.skipped
        note = f"; skipped {skipped}: summaries identical across examples" if skipped else ""
        parts.append(f"{entry.weight:g}*{term.name}[{term.objective.layer_map.pairs}{note}]")
    parts += [f"{section.hard_weight:g}*hard"] if section.hard_weight else []
    return " + ".join(parts) + f"; {stage.config.epochs:g} epochs"


# ----------------------------------------------------------------------------------------------- run
def carry_teachers(previous: Path | None, run: RunDir) -> None:
    """Link the fine-tuned teacher folders (and the cache of augmented copies) of the run that ``--overwrite``
    replaces into the new one (teacher recipes are checked before reuse; copies are keyed by content). Hard
    links: the replaced run stays whole until the new one is kept, and files are only ever replaced, never
    edited, so neither copy can change the other.

    Usage: ``carry_teachers(run.replaced, run)``
    """
    for folder in sorted([*previous.glob("teacher*"), previous / AUGMENT_DIR]) if previous is not None else ():
        if folder.is_dir() and not (run / folder.name).exists():
            shutil.copytree(folder, run / folder.name, copy_function=_link_or_copy,
                            ignore=shutil.ignore_patterns(LOCK_FILE))  # a lock file is written in place


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:  # a file system without hard links
        shutil.copy2(source, target)


def open_distill_run(recipe: DistillRecipe, resume: bool, overwrite: bool) -> RunDir:
    """Create or reopen the run directory (default ``runs/distill-<student>-<dataset>``), keeping teachers.

    Usage: ``run = open_distill_run(recipe, resume=False, overwrite=True)``
    """
    if recipe.output_dir is None:
        student = recipe.model.name or f"{recipe.distill.teacher_names()[0]}-copy"
        recipe.output_dir = default_output_dir(recipe.model_copy(update={"model": ModelSection(name=student)}),
                                               "distill")
    state = process_state()
    run = open_run(recipe, "distill", resume, overwrite)
    with ExitStack() as on_failure:
        on_failure.enter_context(run)
        carry_teachers(run.replaced, run)
        on_failure.pop_all()
    state.wait_for_everyone()  # every process sees the carried teachers before deciding to reuse them
    return run


def distill(recipe: DistillRecipe, resume: bool = False, overwrite: bool = False) -> DistillResult:
    """The whole ``distill`` command: plan, teacher phase, teacher outputs, stages, measurements, report.

    Usage: ``distill(load_recipe("demo", DistillRecipe), overwrite=True).metrics["student_dev"]``
    """
    plan = plan_distillation(recipe)
    with open_distill_run(recipe, resume, overwrite) as run:
        return _distill_in(plan, run, resume)


def _distill_in(plan: DistillPlan, run: RunDir, resume: bool) -> DistillResult:
    recipe = plan.recipe
    phases = {}
    for index, member in enumerate(plan.members):
        if not member.trained:
            phases[member.name] = finetune_teacher(plan, member, teacher_folder(run, index, len(plan.members)))
    section = recipe.distill
    teacher = build_teacher([m.model for m in plan.members], section.teacher_kind, section.feature_teacher)
    if section.student_init == "from_teacher" and phases:
        copy_teacher_layers(plan.student.model, teacher.feature_model)  # from the fine-tuned teacher
    teacher_dev = teacher_dev_metrics(plan, teacher)
    if process_state().is_main_process:
        print_table("teacher", [{"teacher": ",".join(m.name for m in plan.members),
                                 **{f"dev {k}": v for k, v in teacher_dev.items()}}])
    needs_cache = plan.cache_outputs and any(stage.uses_cache for stage in plan.stages)
    cache = cached_teacher_logits(plan, teacher, run) if needs_cache else None
    stage_metrics = [run_stage(plan, stage, teacher, cache, run, resume) for stage in plan.stages]
    best = run / STAGES_DIR / plan.stages[-1].folder / STAGE_BEST
    student = load_model(best) if best.is_dir() else plan.student.model.cpu()
    if not process_state().is_main_process:  # the main process measures and writes the results
        return DistillResult({}, student, plan.student.tokenizer, run)
    with atomic_dir(run / "model") as folder:
        plan.student.save(student, folder)
    metrics = report(plan, run, teacher.cpu(), student, teacher_dev, phases, stage_metrics)
    return DistillResult(metrics, student, plan.student.tokenizer, run)


def report(plan: DistillPlan, run: RunDir, teacher: Teacher, student: nn.Module, teacher_dev: dict[str, float],
           phases: dict[str, Any], stages: list[dict[str, Any]]) -> dict[str, Any]:
    """Measure both models, export ONNX if asked, print the table, write metrics.json and report.md.

    Usage: ``metrics = report(plan, run, teacher, student, teacher_dev, phases={}, stages=stage_metrics)``
    """
    recipe, primary = plan.recipe, plan.task.metrics[0]
    student_dev = stages[-1]["best"]
    if recipe.train.select_on != "dev":  # the stages chose their best epoch on a training holdout: score on dev
        student_dev = evaluate_model(student, plan.student.dev_loader(), plan.task.metrics)
    chosen_on = "dev" if recipe.train.select_on == "dev" else "holdout"
    figures = model_figures(plan.student, {"teacher": teacher, "student": student})  # timed alternately
    figures["student"]["model_bytes"] = size_on_disk(run / "model")
    retention = student_dev[primary] / teacher_dev[primary] if teacher_dev.get(primary) else None
    ks = [stage["mi_k"] for stage in stages if stage.get("mi_k")]
    metrics: dict[str, Any] = {
        "command": "distill", "teacher": [m.name for m in plan.members], "student": recipe.model.name,
        "student_init": recipe.distill.student_init, "dataset": plan.task.name, "primary_metric": primary,
        "teacher_dev": teacher_dev, "student_dev": student_dev, "retention": retention,
        "mi_k": max(ks) if ks else None, "teacher_phase": phases, "teacher_figures": figures["teacher"],
        "student_figures": figures["student"], "stages": stages,
        "augmentation": augmentation_metrics(plan.augment, stages),
    }
    if recipe.distill.export_onnx:
        metrics["onnx"] = export_student(plan, student, run)
    rows = [_row(role, name, dev, figures[role]) for role, name, dev in (
        ("teacher", ",".join(m.name for m in plan.members), teacher_dev),
        ("student", recipe.model.name or f"{recipe.distill.student_init} copy", student_dev))]
    rows[1]["retention"] = retention
    rows[1]["best epoch chosen on"] = selected_on(recipe.train)
    stage_rows = [{"stage": s["stage"], "steps": s["steps"], "best epoch": s["best_epoch"], "MI K": s["mi_k"],
                   "teacher outputs": s["teacher_outputs"], **{f"{chosen_on} {k}": v for k, v in s["best"].items()},
                   **{f"loss {k}": v for k, v in s["loss_terms"].items()}} for s in stages]
    intro = (f"Teacher {', '.join(metrics['teacher'])} -> student {rows[1]['model']} on {plan.task.name}; "
             f"retention = student / teacher {primary}.")
    kept = f", keeping {retention:.1%} of the teacher's {primary}" if retention is not None else ""
    card = ModelCard(method=f"Distilled from {', '.join(metrics['teacher'])} with `distill` (stages: "
                     f"{'; '.join(describe_stage(stage) for stage in plan.stages)}; best epoch chosen on "
                     f"{selected_on(recipe.train)}){kept}", base_model=metrics["teacher"][0],
                     dataset=plan.task.name, metrics=student_dev, tags=["distillation"])
    publish(run, metrics, "distill", intro, [("distillation stages", stage_rows), ("result", rows)], card=card)
    return metrics


def _row(role: str, name: str, dev: dict[str, float], figures: dict[str, Any]) -> dict[str, Any]:
    latency, size = figures["latency"], figures.get("model_bytes")
    return {"role": role, "model": name, **{f"dev {k}": v for k, v in dev.items()}, "params": figures["params"],
            "MACs": figures["macs"], "MB on disk": None if size is None else size / 1e6,
            **latency_columns(latency)}


def export_student(plan: DistillPlan, student: nn.Module, run: RunDir) -> dict[str, Any]:
    """Export the student to ``RUN/model.onnx`` (validated against PyTorch). Usage: ``export_student(plan, m, run)``."""
    from shrink.deploy_cli import TaskView

    view = TaskView(plan.task, plan.recipe.data.max_length, plan.student.tokenizer, plan.recipe.train.seed)
    return view.export(student, run / "model.onnx").to_dict()


__all__ = [
    "DistillPlan",
    "DistillResult",
    "Stage",
    "augmentation_metrics",
    "describe_augmentation",
    "cached_teacher_logits",
    "teacher_outputs_key",
    "carry_teachers",
    "describe_stage",
    "distill",
    "export_student",
    "finetune_teacher",
    "open_distill_run",
    "plan_distillation",
    "plan_stage",
    "report",
    "run_stage",
    "teacher_dev_metrics",
    "teacher_folder",
]
