"""``distill --moe``: the whole Meta-DMoE flow into one run directory.

1. **Plan** (:func:`plan_meta_dmoe`): the multi-domain data split leave-domains-out (``test_domains`` held
   out whole, a seeded slice of every source domain kept for model selection), ``domain -> expert`` (each
   loaded expert's ``domains.json``, else the seeded clusters of step 0), the experts (loaded, or built
   to be trained), the student, the aggregator. Bad input fails here, before the run directory exists.
2. **Experts**: each trained with the core engine on its cluster into ``RUN/experts/expert-<k>`` (model
   selection on its cluster's held-out source data); all are saved to ``RUN/moe/experts/expert-<k>``.
3. **Aggregator** pre-training (CE, all N tokens, all source data), then the **student's ERM** with the
   core engine into ``RUN/erm``.
4. **Meta-training** (second order), keeping the step whose TTA accuracy on held-out source data is best.
5. **Outputs**: ``RUN/model`` (the meta-trained student), ``RUN/moe/`` (experts, aggregator, projector,
   ``meta.json``: alpha, support, mask, ``domain -> expert``, input settings), ``metrics.json`` (target
   and source accuracies of ERM, the teacher, the student unadapted and adapted), ``report.md``.

Usage: ``result = run_meta_dmoe(recipe, resume=False, overwrite=True); result["target"]["meta_adapted"]``
"""
from __future__ import annotations

import copy
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from accelerate.utils import set_seed
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from distill.config import DistillRecipe, apply_overrides
from distill.moe.adapt import MetaStudent, evaluate_domains
from distill.moe.aggregator import Aggregator
from distill.moe.config import MoESection
from distill.moe.experts import CachedFeatures, collate_cached, feature_size
from distill.moe.metatrain import check_first_order, meta_train
from distill.pipeline import same_tokenizer
from distill.teachers import MetaDMoETeacher, load_teacher_member, model_source
from shrink.data import TaskData, make_collate
from shrink.data.domains import DomainSplit, split_by_domains, split_domains
from shrink.data.transforms import Normalize
from shrink.errors import UserError
from shrink.experiment import Experiment, fit, load_for_task, load_task, open_run
from shrink.models import load_model, save_model
from shrink.recipe import ModelSection, Recipe, TrainConfig
from shrink.report import publish
from shrink.runs import RunDir, atomic_write_bytes, atomic_write_json
from shrink.train import Trainer, evaluate_model, process_state

MOE_DIR, EXPERTS_DIR, ERM_DIR = "moe", "experts", "erm"
DOMAINS_FILE, META_FILE = "domains.json", "meta.json"
AGGREGATOR_WEIGHTS, AGGREGATOR_CONFIG, PROJECTOR_WEIGHTS = "aggregator.safetensors", "aggregator.json", \
    "projector.safetensors"


@dataclass
class MoEPlan:
    """Everything ``distill --moe`` needs, loaded and checked before the run directory exists."""

    recipe: DistillRecipe
    task: TaskData
    split: DomainSplit
    domain_to_expert: dict[str, int]
    experts: list[nn.Module]
    trained: bool
    student: nn.Module
    tokenizer: Any
    collate: Any
    aggregator: Aggregator

    @property
    def section(self) -> MoESection:
        """The recipe's ``moe:`` section."""
        return self.recipe.moe


def plan_meta_dmoe(recipe: DistillRecipe) -> MoEPlan:
    """Load and check data, experts, student and aggregator; UserError on bad input.

    Usage: ``plan = plan_meta_dmoe(recipe)``
    """
    section = recipe.moe
    if not section.test_domains:
        raise UserError("name the held-out (target) domains with --test-domains A,B (DomainBed's leave-domains-out)")
    # Deterministic inputs (spec Q5): tokens and TTA must not depend on augmentation draws.
    recipe = recipe.model_copy(update={"data": recipe.data.model_copy(update={"augment": False})})
    task = load_task(recipe)
    split = split_by_domains(task, section.test_domains, section.holdout_fraction, seed=recipe.train.seed)
    count = len(section.experts) or section.train_experts
    domain_to_expert = given_clusters(section.domain_to_expert, split.sources, count) or \
        expert_domains(section.experts, split.sources) or split_domains(split.sources, count, section.cluster_seed)
    set_seed(recipe.train.seed)
    if section.experts:
        members = [load_teacher_member(name, task) for name in section.experts]
        experts = [member.model for member in members]
        expert_tokenizers = [member.tokenizer for member in members]
    else:
        name = section.expert_model or recipe.model.name
        built = [load_for_task(name, task, task.tokenizer, **(section.expert_args or recipe.model.args))
                 for _ in range(count)]
        experts, expert_tokenizers = [model for model, _ in built], [tok for _, tok in built]
    student, tokenizer = load_for_task(recipe.model.name, task, task.tokenizer, **recipe.model.args)
    for expert_tokenizer in expert_tokenizers:
        if not same_tokenizer(expert_tokenizer, tokenizer):
            raise UserError("the experts and the student tokenize differently; Meta-DMoE feeds them one batch, "
                            "so use experts and a student that share a tokenizer")
    agg = section.aggregator
    aggregator = Aggregator(feature_size(experts[0]), task.num_labels, agg.depth, agg.heads, agg.mlp_ratio, agg.dropout)
    collate = make_collate(task, tokenizer, recipe.data.max_length)
    check_first_order(section.meta.first_order, section.meta.freeze_aggregator)
    return MoEPlan(recipe, task, split, domain_to_expert, experts, not section.experts, student, tokenizer, collate,
                   aggregator)


def given_clusters(clusters: dict[str, int], sources: list[str], count: int) -> dict[str, int] | None:
    """The recipe's own ``domain -> expert`` map, checked to cover the source domains with experts 0..count-1."""
    if not clusters:
        return None
    missing = [domain for domain in sources if domain not in clusters]
    unknown = sorted(set(clusters) - set(sources))
    idle = sorted(set(range(count)) - set(clusters.values()))
    if missing or unknown or idle or any(not 0 <= e < count for e in clusters.values()):
        raise UserError(f"moe.domain_to_expert must map every source domain to an expert 0..{count - 1}, each expert "
                        f"getting one at least (missing: {missing or '-'}; not source domains: {unknown or '-'}; "
                        f"experts without domains: {idle or '-'})")
    return dict(clusters)


def expert_domains(names: list[str], sources: list[str]) -> dict[str, int] | None:
    """``domain -> expert`` from each named expert's ``domains.json`` (written when ``distill --moe`` trained
    it); None when any expert lacks one (the seeded clusters then stand in).

    Usage: ``expert_domains(["runs/m/moe/experts/expert-1", ...], split.sources)``
    """
    found: dict[str, int] = {}
    for index, name in enumerate(names):
        path = next((p for p in (Path(name) / DOMAINS_FILE, Path(model_source(name)) / DOMAINS_FILE) if p.is_file()),
                    None)
        if path is None:
            return None
        try:
            domains = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise UserError(f"cannot read {path}: {err}; remove it to use the seeded domain clusters") from None
        found.update({str(domain): index for domain in domains if str(domain) in sources})
    return found


def domain_subsets(dataset: Dataset, domains: list[str]) -> dict[str, Dataset]:
    """``dataset`` cut into one Subset per domain (``domains[i]`` is the domain of ``dataset[i]``)."""
    order = list(dict.fromkeys(domains))
    return {name: Subset(dataset, [i for i, d in enumerate(domains) if d == name]) for name in order}


# ------------------------------------------------------------------------------------------------ phases
def phase_recipe(plan: MoEPlan, model_name: str, args: dict, overrides: Any, folder: Path) -> Recipe:
    """A ``shrink train`` recipe for one phase (expert or ERM) with ``overrides`` of ``train:``."""
    recipe = plan.recipe
    return Recipe(model=ModelSection(name=model_name, args=args), data=recipe.data,
                  train=apply_overrides(recipe.train, overrides), output_dir=str(folder))


def train_phase(plan: MoEPlan, model: nn.Module, recipe: Recipe, train: Dataset, dev: Dataset, folder: Path,
                resume: bool) -> nn.Module:
    """Train ``model`` with the core engine on ``train`` (best epoch chosen on ``dev``, held-out source data)
    into ``folder``; returns the best model."""
    task = dataclasses.replace(plan.task, train=train, dev=dev)
    experiment = Experiment(recipe.model_copy(update={"train": recipe.train.model_copy(update={"select_on": "dev"})}),
                            task, model, plan.tokenizer, plan.collate)
    fit(experiment, RunDir(folder), resume)
    process_state().wait_for_everyone()
    return load_model(folder / "best") if (folder / "best").is_dir() else model


def train_experts(plan: MoEPlan, run: RunDir, resume: bool) -> list[nn.Module]:
    """Each expert trained on its cluster of source domains (or reused when ``resume`` finds it saved)."""
    section, split = plan.section, plan.split
    experts = []
    for index, model in enumerate(plan.experts):
        saved = run / MOE_DIR / EXPERTS_DIR / f"expert-{index + 1}"
        if resume and saved.is_dir():
            experts.append(load_model(saved))
            continue
        cluster = {d for d, e in plan.domain_to_expert.items() if e == index}
        train = Subset(split.train, [i for i, d in enumerate(split.train_domains) if d in cluster])
        dev = Subset(split.val, [i for i, d in enumerate(split.val_domains) if d in cluster])
        process_state().print(f"expert {index + 1}/{len(plan.experts)}: training on domains "
                              f"{', '.join(sorted(cluster))}")
        recipe = phase_recipe(plan, section.expert_model or plan.recipe.model.name,
                              section.expert_args or plan.recipe.model.args, section.expert_train,
                              run / EXPERTS_DIR / f"expert-{index + 1}")
        experts.append(train_phase(plan, model, recipe, train, dev, run / EXPERTS_DIR / f"expert-{index + 1}", resume))
    return experts


class AggregatorPretraining(nn.Module):
    """The aggregator (and projections) as a classifier of cached expert features (``expert_<n>`` inputs),
    for the core engine; the experts themselves are not run again. Usage: ``Trainer(AggregatorPretraining(t), ...)``
    """

    def __init__(self, teacher: MetaDMoETeacher) -> None:
        super().__init__()
        self.teacher = teacher

    def train(self, mode: bool = True) -> AggregatorPretraining:
        self.training = mode
        self.teacher.aggregator.train(mode)
        self.teacher.pool.projections.train(mode)
        return self

    def forward(self, **features: torch.Tensor) -> torch.Tensor:
        tokens = self.teacher.pool.project([features[f"expert_{n}"] for n in range(len(self.teacher.members))])
        return self.teacher.aggregator(tokens)


def pretrain_aggregator(plan: MoEPlan, teacher: MetaDMoETeacher) -> dict[str, float]:
    """CE on all source data with all N experts' tokens (no mask), the experts' features computed once;
    returns held-out source metrics."""
    agg = plan.section.aggregator
    config = TrainConfig(epochs=agg.epochs, lr=agg.lr, batch_size=agg.batch_size, weight_decay=0.0,
                         schedule="constant", warmup_ratio=0.0, seed=plan.recipe.train.seed,
                         progress=plan.recipe.train.progress, verbosity=plan.recipe.train.verbosity)
    train, val = (CachedFeatures.compute(teacher.pool, data, plan.collate)
                  for data in (plan.split.train, plan.split.val))
    trainer = Trainer(AggregatorPretraining(teacher), train, val, collate=collate_cached, metrics=plan.task.metrics,
                      config=config)
    result = trainer.fit()
    nn.Module.train(teacher, False)
    return result.final


def target_accuracy(model: nn.Module, datasets: dict[str, Dataset], collate: Any) -> dict[str, float]:
    """Plain (unadapted) accuracy of ``model`` per domain, and their mean."""
    scores = {name: evaluate_model(model, DataLoader(data, batch_size=256, collate_fn=collate), ("accuracy",))[
        "accuracy"] for name, data in datasets.items()}
    scores["mean"] = sum(scores.values()) / max(len(scores), 1)
    return scores


# ----------------------------------------------------------------------------------------------- saving
def save_moe(plan: MoEPlan, run: RunDir, student: MetaStudent, teacher: MetaDMoETeacher) -> None:
    """``RUN/model`` and ``RUN/moe/``: everything ``distill adapt`` needs, as safetensors + JSON."""
    if not process_state().is_main_process:
        return
    moe = run / MOE_DIR
    for index, expert in enumerate(teacher.members):
        folder = moe / EXPERTS_DIR / f"expert-{index + 1}"
        save_model(expert, folder, tokenizer=plan.tokenizer)
        atomic_write_json(folder / DOMAINS_FILE, sorted(d for d, e in plan.domain_to_expert.items() if e == index))
    atomic_write_bytes(moe / AGGREGATOR_WEIGHTS, safetensors.torch.save(
        {k: v.contiguous() for k, v in teacher.aggregator.state_dict().items()}))
    projections = {k: v.contiguous() for k, v in teacher.pool.projections.state_dict().items()}
    if student.projector is not None:
        projections.update({f"student.{k}": v.contiguous() for k, v in student.projector.state_dict().items()})
    atomic_write_bytes(moe / PROJECTOR_WEIGHTS, safetensors.torch.save(projections))
    atomic_write_json(moe / AGGREGATOR_CONFIG, teacher.aggregator.config)
    atomic_write_json(moe / META_FILE, {
        "alpha": student.alpha, "support": student.support, "mask": teacher.mask,
        "domain_to_expert": plan.domain_to_expert, "experts": len(teacher.members), "modality": plan.task.modality,
        "image_shape": plan.task.image_shape, "normalize": image_normalization(plan.task.dev),
        "label_names": plan.task.label_names, "max_length": plan.recipe.data.max_length,
        "student_projector": student.projector is not None})
    save_model(student.model, run / "model", tokenizer=plan.tokenizer)


def image_normalization(dataset: Dataset) -> list[list[float]] | None:
    """The (mean, std) an image dataset normalises with, found through its wrappers; None for text."""
    while not hasattr(dataset, "transform"):
        inner = getattr(dataset, "dataset", None)
        if inner is None:
            return None
        dataset = inner
    transforms = getattr(dataset.transform, "transforms", [dataset.transform])
    normalize = next((t for t in transforms if isinstance(t, Normalize)), None)
    return None if normalize is None else [normalize.mean.flatten().tolist(), normalize.std.flatten().tolist()]


# ------------------------------------------------------------------------------------------------- run
def run_meta_dmoe(recipe: DistillRecipe, resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Plan, open the run directory and run every phase; returns the metrics. Usage: see the module docstring."""
    plan = plan_meta_dmoe(recipe)
    with open_run(plan.recipe, "distill-moe", resume, overwrite) as run:
        return _run_in(plan, run, resume)


def _run_in(plan: MoEPlan, run: RunDir, resume: bool) -> dict[str, Any]:
    section, split, started = plan.section, plan.split, time.perf_counter()
    seconds: dict[str, float] = {}
    experts = train_experts(plan, run, resume) if plan.trained else plan.experts
    seconds["experts"] = time.perf_counter() - started
    teacher = MetaDMoETeacher(experts, aggregator=plan.aggregator, domain_to_expert=plan.domain_to_expert,
                              mask=section.meta.mask)
    clock = time.perf_counter()
    process_state().print(f"aggregator: pre-training over {len(experts)} experts on every source domain")
    pretrain_aggregator(plan, teacher)
    seconds["aggregator"] = time.perf_counter() - clock
    clock = time.perf_counter()
    erm = train_phase(plan, plan.student, phase_recipe(plan, plan.recipe.model.name, plan.recipe.model.args,
                                                       section.student_train, run / ERM_DIR),
                      split.train, split.val, run / ERM_DIR, resume)
    seconds["erm"] = time.perf_counter() - clock
    val = domain_subsets(split.val, split.val_domains)
    target = {"erm": target_accuracy(erm, split.targets, plan.collate),
              "teacher_before": target_accuracy(teacher, split.targets, plan.collate)}
    source = {"erm": target_accuracy(erm, val, plan.collate)["mean"]}
    student = MetaStudent(copy.deepcopy(erm), teacher, section.meta.alpha, section.meta.support)
    clock = time.perf_counter()
    meta = meta_train(student, teacher, split.train, split.train_domains, plan.collate, section.meta,
                      select=lambda: evaluate_domains(student, val, plan.collate)["mean"],
                      progress=plan.recipe.train.progress, verbosity=plan.recipe.train.verbosity)
    seconds["meta"] = time.perf_counter() - clock
    target["teacher_after"] = target_accuracy(teacher, split.targets, plan.collate)
    target["meta_unadapted"] = evaluate_domains(student, split.targets, plan.collate, adapt=False)
    target["meta_adapted"] = evaluate_domains(student, split.targets, plan.collate)
    source["meta_adapted"] = evaluate_domains(student, val, plan.collate)["mean"]
    save_moe(plan, run, student, teacher)
    seconds["total"] = time.perf_counter() - started
    metrics = {
        "command": "distill --moe", "dataset": plan.task.name, "student": plan.recipe.model.name,
        "test_domains": section.test_domains, "source_domains": split.sources,
        "domain_to_expert": plan.domain_to_expert, "experts": len(experts), "experts_trained": plan.trained,
        "primary_metric": "accuracy", "target": target, "source_tta_vs_erm": source,
        "meta": {"best_step": meta.best_step, "selection_score": meta.best_score, "steps": meta.steps,
                 "history": meta.history, "alpha": section.meta.alpha, "support": section.meta.support,
                 "query": section.meta.query, "mask": section.meta.mask, "first_order": section.meta.first_order},
        "selected_on": "held-out source data (training-domain validation): TTA accuracy", "seconds": seconds}
    rows = [{"domain": name, **{kind: target[kind][name] for kind in target}} for name in target["erm"]]
    summary = [{"student": plan.recipe.model.name, "experts": len(experts),
                "target ERM": target["erm"]["mean"], "target teacher": target["teacher_before"]["mean"],
                "target meta unadapted": target["meta_unadapted"]["mean"],
                "target meta + TTA": target["meta_adapted"]["mean"], "source ERM": source["erm"],
                "source meta + TTA": source["meta_adapted"], "best meta step": meta.best_step,
                "minutes": seconds["total"] / 60}]
    intro = (f"Meta-DMoE on {plan.task.name}: {len(experts)} experts over source domains "
             f"{', '.join(split.sources)}; held-out targets {', '.join(section.test_domains)}. Models were chosen "
             "on held-out source data only; target labels score the result. Adapt the student to a new domain "
             f"with `distill adapt {run.path} --data NEW_DOMAIN`; unadapted it is not meant to be used.")
    if process_state().is_main_process:
        publish(run, metrics, "distill --moe", intro, [("target accuracy per domain", rows), ("result", summary)])
    return metrics


__all__ = ["MoEPlan", "expert_domains", "plan_meta_dmoe", "run_meta_dmoe"]
