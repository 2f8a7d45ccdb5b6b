"""The ``distill`` command: knowledge distillation from a teacher (or an ensemble) into a student.

Flags override the recipe. Objective flags (``--kd-loss``, ``--alpha``, ``--layer-map``, ...) apply to every
stage of a multi-stage recipe that has that objective; training flags (``--epochs``, ``--lr``) win over the
stages' own ``train`` overrides.

Usage::

    distill --demo
    distill --teacher bert-base --student tinybert --task sst2 --data-dir glue/SST-2   # KD + MI-alpha, the default
    distill --recipe tinybert-sst2 --teacher runs/bert-base-sst2 --data-dir glue/SST-2
    distill --recipe demo --teacher bert-tiny --augment embedding,swap --aug-p 0.3 --aug-copies 4 --mixup
    distill --teacher runs/bert-base-sst2 --student tinybert --task sst2 --data-dir glue/SST-2 --unlabeled raw.txt
    distill --teacher resnet56 --student resnet20 --dataset fashion-mnist --data-dir /usr/share/datasets/fashion-mnist
    distill --moe --train-experts 2 --student convnet --dataset rotated-fashion-mnist --test-domains 0,75
    distill adapt runs/moe --data new_site.csv --out runs/moe-site
    distill --auto --recipe demo --trials 12 --storage postgresql://host/db   # AutoDistiller; start N for N workers
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Sequence

from shrink.cli import quiet_libraries
from shrink.cliargs import (FlagTable, add_flag_table, add_training_flags, flag_group, help_style, name_list,
                            recipe_overrides, table_overrides)
from shrink.errors import UserError, cli_entry
from shrink.recipe import build_recipe, read_yaml, recipe_path

DEMO_RECIPE = "demo"

# flag dest -> (recipe key, type, help), as shrink.cliargs.TRAINING_FLAGS
DISTILL_FLAGS: FlagTable = {
    "teacher": ("distill.teacher", str, "teacher: alias, hub id, directory or run directory; a,b,c is an ensemble"),
    "student": ("model.name", str, "student: preset (bert-tiny), alias (tinybert), hub id, zoo name or directory"),
    "student_init": ("distill.student_init", str, "pretrained (default), from_teacher (copy teacher layers) or random"),
    "student_layers": ("distill.student_layers", int, "layers of a from_teacher copy (default: half the teacher's)"),
    "teacher_kind": ("distill.teacher_kind", str, "teacher registry name (default: single, or ensemble for a,b)"),
    "feature_teacher": ("distill.feature_teacher", int, "ensemble member whose features are distilled (0-based)"),
    "teacher_epochs": ("distill.teacher_train.epochs", float, "epochs when a teacher without task head is fine-tuned"),
    "teacher_lr": ("distill.teacher_train.lr", float, "learning rate of that teacher phase"),
}
# Per-stage objective flags: dest -> (key inside a stage, type, help)
STAGE_FLAGS: FlagTable = {
    "kd_loss": ("kd.loss", str, "prediction-layer loss: ce, kl or mse (regression: mse)"),
    "temperature": ("kd.temperature", float, "KD temperature T"),
    "kd_weight": ("kd.weight", float, "weight of the KD term (0: none)"),
    "hard_weight": ("hard_weight", float, "weight of the gold-label term (reference: 0)"),
    "reduction": ("reduction", str, "sum (reference) or mean over layer pairs"),
}
# Per-entry intermediate flags: dest -> (key inside an intermediate entry, type, help)
INTERMEDIATE_FLAGS: FlagTable = {
    "intermediate": ("loss", str, "intermediate loss (mi, hidden_mse, cos, pkd, ...; 'none' removes them); "
                                  "adds one entry when the recipe has none (default for Hugging Face models: "
                                  "mi, alpha 0.9, mlp critic, skip map, with KD kl at T = 2)"),
    "layer_map": ("layer_map", str, "skip, last, emd, tinybert, ... or explicit pairs like 0:0,6:2,12:4"),
    "alpha": ("alpha", float, "MI-alpha's alpha in [0, 1] (0.9 default of the reference)"),
    "critic": ("critic", str, "MI critic: mlp or transformer"),
    "inter_weight": ("weight", float, "weight of each intermediate term"),
    "inter_lr_scale": ("lr_scale", float, "learning-rate multiplier of the intermediate terms' own parameters "
                                          "(MI critics, projections; 10 in the default pipeline, else 1)"),
}


def policy_names(text: str) -> list[str]:
    """``--augment``'s augmenter names; ``none`` is no augmentation. Usage: ``policy_names("mlm,swap")``."""
    return [] if text.strip() == "none" else name_list(text)


# Augmentation flags (distill.augment); --mixup is a switch added beside them.
AUGMENT_FLAGS: FlagTable = {
    "augment": ("distill.augment.policy", policy_names, "augmenters applied in order to make each copy: mlm, "
                "embedding, tinybert, backtranslate, swap, delete (e.g. mlm,swap; none: no copies)"),
    "aug_p": ("distill.augment.aug_p", float, "share of words each augmenter edits, in (0, 1] (default 0.3)"),
    "aug_copies": ("distill.augment.copies", int, "augmented copies per training example (default 1; tinybert: "
                                                  "TinyBERT's N for the task)"),
    "unlabeled": ("distill.augment.unlabeled", str, "UTF-8 file of in-domain text, one example (or tab-separated "
                                                    "pair) per line, labelled by the teacher and distilled on"),
}


# Meta-DMoE (distill --moe): dest -> (recipe key, type, help)
MOE_FLAGS: FlagTable = {
    "experts": ("moe.experts", name_list, "Meta-DMoE: expert run or model directories, comma-separated"),
    "train_experts": ("moe.train_experts", int, "Meta-DMoE: train N experts on seeded clusters of source domains"),
    "domain_column": ("data.domain_column", str, "column giving each example's domain (CSV/TSV/JSONL, metadata-csv)"),
    "test_domains": ("moe.test_domains", name_list, "Meta-DMoE: held-out target domains, comma-separated"),
    "meta_steps": ("moe.meta.steps", int, "Meta-DMoE: meta-training steps (outer updates)"),
    "inner_lr": ("moe.meta.alpha", float, "Meta-DMoE: inner (and test-time) SGD rate alpha"),
    "support": ("moe.meta.support", int, "Meta-DMoE: unlabeled support examples per task (and at test time)"),
    "query": ("moe.meta.query", int, "Meta-DMoE: labelled query examples per task"),
}


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of ``distill``. Usage: ``build_parser().parse_args(["--demo"])``."""
    parser = argparse.ArgumentParser(prog="distill", description="Distill a teacher into a student (Distiller, "
                                     "MI-alpha, TinyBERT stages, vision KD); writes one run directory",
                                     **help_style(__doc__))
    parser.add_argument("--demo", action="store_true",
                        help=f"run the shipped {DEMO_RECIPE} recipe offline (replaces its previous run unless --resume)")
    for table, title in ((DISTILL_FLAGS, "teacher and student"), (STAGE_FLAGS, "prediction-layer objective"),
                         (INTERMEDIATE_FLAGS, "intermediate objective"), (MOE_FLAGS, "Meta-DMoE"),
                         (AUGMENT_FLAGS, "augmentation")):
        add_flag_table(parser, table, title)
    flag_group(parser, "teacher and student").add_argument(
        "--export-onnx", action="store_true", help="also export the student to RUN/model.onnx")
    flag_group(parser, "Meta-DMoE").add_argument(
        "--moe", action="store_true", help="Meta-DMoE: experts + aggregator teacher, meta-distilled student that "
        "adapts to a new domain (`distill adapt`); needs --experts or --train-experts")
    flag_group(parser, "augmentation").add_argument(
        "--mixup", action="store_true", help="mixup on word embeddings (text) or pixels (images): lambda ~ "
        "Beta(0.4, 0.4), batch doubled [distill.augment.mixup]")
    add_auto_flags(parser)
    add_training_flags(parser)
    return parser


# AutoDistiller (distill --auto): dest -> (recipe key, type, help)
AUTO_FLAGS: FlagTable = {
    "trials": ("auto.trials", int, "trials the study runs, over all its workers"),
    "timeout": ("auto.timeout", float, "stop this worker after so many seconds (a running trial stops at its next epoch's end)"),
    "storage": ("auto.storage", str, "Optuna storage: an RDB URL (postgresql://...) or a journal file; "
                                     "default: SQLite in the study folder"),
    "study_name": ("auto.study_name", str, "study to create or join (default: the study folder's name)"),
    "top_k": ("auto.top_k", int, "recommended pipelines enqueued first with --recommend"),
}


def add_auto_flags(parser: argparse.ArgumentParser) -> None:
    """The --auto flags. Usage: ``add_auto_flags(parser)``."""
    group = parser.add_argument_group("AutoDistiller (--auto)")
    group.add_argument("--auto", action="store_true", help="search the pipeline with Optuna (see auto: in recipes)")
    for dest, (_, kind, help_text) in AUTO_FLAGS.items():
        group.add_argument(f"--{dest.replace('_', '-')}", dest=dest, type=kind, help=help_text)
    group.add_argument("--objectives", help="score (default), or score,latency / score,size: a Pareto front")
    group.add_argument("--recommend", action="store_true", default=None,
                       help="enqueue the pipelines a model of past trials ranks best as the first trials")
    group.add_argument("--prior", action="append", dest="priors", help="a trials.csv to learn from (repeatable)")


def auto_recipe_from_args(args: argparse.Namespace) -> Any:
    """The AutoDistillRecipe of ``distill --auto``: the distill recipe and flags, plus the auto flags.

    Usage: ``auto_recipe_from_args(build_parser().parse_args(["--auto", "--demo", "--trials", "4"]))``
    """
    from distill.auto import AutoDistillRecipe

    overrides = table_overrides(args, AUTO_FLAGS)
    if args.objectives:
        overrides["auto.objectives"] = name_list(args.objectives)
    overrides.update({"auto.recommend": args.recommend, "auto.priors": args.priors})
    return recipe_from_args(args, AutoDistillRecipe, overrides)


def recipe_from_args(args: argparse.Namespace, schema: Any = None, extra: dict[str, Any] | None = None) -> Any:
    """The validated DistillRecipe: the recipe file (or the demo's, or defaults), then the flags.

    Usage: ``recipe_from_args(build_parser().parse_args(["--demo", "--epochs", "1"]))``
    """
    from distill.config import DistillRecipe

    name = args.recipe or (DEMO_RECIPE if args.demo else None)
    path = recipe_path(name) if name else None
    raw = read_yaml(path) if path else {}
    overrides = recipe_overrides(args)
    overrides.update(table_overrides(args, DISTILL_FLAGS))
    overrides.update(table_overrides(args, MOE_FLAGS))
    overrides.update(table_overrides(args, AUGMENT_FLAGS))
    if args.mixup:
        overrides["distill.augment.mixup"] = True
    overrides.update(extra or {})
    if args.export_onnx:
        overrides["distill.export_onnx"] = True
    apply_stage_flags(raw, args, [key.split(".", 1)[1] for key in overrides if key.startswith("train.")])
    return build_recipe(raw, schema or DistillRecipe, overrides, source=str(path) if path else "flags")


def apply_stage_flags(raw: dict[str, Any], args: argparse.Namespace, train_keys: Sequence[str]) -> None:
    """Apply the objective flags to every stage of the raw recipe (or its single stage), and let training
    flags win over the stages' own ``train`` overrides.

    Usage: ``apply_stage_flags(raw, args, ["epochs"])``
    """
    section = raw.setdefault("distill", {})
    if not isinstance(section, dict):
        return  # not a mapping: validation names the problem
    stages = [stage for stage in section.get("stages") or [] if isinstance(stage, dict)]
    for stage in stages or [section]:
        for dest, (key, _, _) in STAGE_FLAGS.items():
            value = getattr(args, dest)
            if value is None:
                continue
            if key.startswith("kd."):
                kd = stage.get("kd", {})
                if (stages and kd is None) or not isinstance(kd, (dict, type(None))):
                    continue  # a stage without a KD term keeps none; a malformed one is left to validation
                stage["kd"] = {**(kd or {}), key.split(".", 1)[1]: value}
            else:
                stage[key] = value
        _apply_intermediate_flags(stage, args, single=not stages)
        train = stage.get("train") or {}
        for key in train_keys:
            train.pop(key, None)


def _apply_intermediate_flags(stage: dict[str, Any], args: argparse.Namespace, single: bool) -> None:
    entries = stage.get("intermediate") or []
    tuned = [dest for dest in INTERMEDIATE_FLAGS if dest != "intermediate" and getattr(args, dest) is not None]
    if args.intermediate == "none":
        entries, stage["intermediate"] = [], []  # chosen, so the default pipeline adds none
    elif args.intermediate is not None and not entries and single:
        entries = [{}]
    elif tuned and single and "intermediate" not in stage:
        from distill.config import DEFAULT_INTERMEDIATE

        entries = [dict(DEFAULT_INTERMEDIATE)]  # --alpha and the like tune the default pipeline's MI-alpha
    for entry in entries:
        for dest, (key, _, _) in INTERMEDIATE_FLAGS.items():
            value = getattr(args, dest)
            if value is not None and value != "none":
                entry[key] = value
    if entries or "intermediate" in stage:
        stage["intermediate"] = entries


@cli_entry
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``distill`` console script. Usage: ``main(["--demo"])``."""
    from distill.run import distill

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["adapt"]:
        from distill.moe.adapt_cli import adapt_command

        return adapt_command(argv[1:])
    args = build_parser().parse_args(argv)
    quiet_libraries()
    if args.auto:
        from distill.auto import run_auto

        run_auto(auto_recipe_from_args(args), resume=args.resume)
        return 0
    stray = [f"--{dest.replace('_', '-')}" for dest in (*AUTO_FLAGS, "objectives", "recommend", "priors")
             if getattr(args, dest) is not None]
    if stray:
        raise UserError(f"{', '.join(stray)} belong to the pipeline search; add --auto or drop them")
    recipe = recipe_from_args(args)
    if args.moe and recipe.moe is None:
        raise UserError("--moe needs experts: pass --experts DIR1,DIR2,... or --train-experts N")
    if recipe.moe is not None:
        from distill.moe.run import run_meta_dmoe

        run_meta_dmoe(recipe, resume=args.resume, overwrite=args.overwrite)
        return 0
    distill(recipe, resume=args.resume, overwrite=args.overwrite or (args.demo and not args.resume))
    return 0


__all__ = ["AUGMENT_FLAGS", "AUTO_FLAGS", "DISTILL_FLAGS", "INTERMEDIATE_FLAGS", "MOE_FLAGS", "STAGE_FLAGS",
           "add_auto_flags", "apply_stage_flags", "auto_recipe_from_args", "build_parser", "main",
           "policy_names", "recipe_from_args"]
