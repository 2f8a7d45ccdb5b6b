"""The ``assemble`` command: Deep Model Assembling, every phase a run directory inside one run folder.

``assemble --model vit-small --modules 4 --dataset D`` runs the whole procedure (meta pretraining, the K
incubations, assembly, finetuning, the summary table), skipping phases already complete and resuming an
interrupted one. ``--phase meta|incubate|assemble|finetune`` runs one phase; ``assemble incubate --module i``
(or ``--phase incubate --module i``) incubates one module, so K processes or machines sharing the run folder
incubate concurrently. See :mod:`assemble.phases` for the folder layout.

Usage::

    assemble --model vit-tiny --modules 4 --dataset cifar100 --data-dir data/cifar-100-python --out runs/a
    assemble --recipe vit-assemble --phase meta --out runs/a
    assemble incubate --module 2 --recipe vit-assemble --out runs/a      # one process per module
    assemble --recipe vit-assemble --out runs/a --export-onnx            # assemble + finetune + summary
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Sequence

from assemble.config import PHASES, AssembleRecipe
from assemble.phases import open_root, preflight, prepare_assembly, run_phases
from assemble.summary import summarize
from shrink.cli import quiet_libraries
from shrink.cliargs import (FlagTable, add_flag_table, add_training_flags, flag_group, help_style, recipe_overrides,
                            table_overrides, typed_list)
from shrink.errors import UserError, cli_entry
from shrink.recipe import load_recipe


GROUP = "assembling"  # the help group of the method's own flags, shown first
# flag dest -> (recipe key, type, help), as shrink.cliargs.TRAINING_FLAGS
ASSEMBLE_FLAGS: FlagTable = {
    "modules": ("assemble.modules", int, "K equal modules (must divide the model's blocks; default 4)"),
    "depths": ("assemble.depths", typed_list(int, "whole numbers"), "per-module block counts instead, e.g. 14,13,14,13 (sum = blocks)"),
    "meta_depth": ("assemble.meta_depth", int, "blocks per meta-model module (default 1)"),
    "meta_model": ("assemble.meta_model", str, "meta phase folder of another run to incubate against"),
    "meta_epochs": ("assemble.meta.epochs", float, "meta-model pretraining epochs"),
    "incubate_epochs": ("assemble.incubate.epochs", float, "incubation epochs per module"),
    "finetune_epochs": ("assemble.finetune.epochs", float, "finetuning epochs of the assembled model"),
    "meta_lr": ("assemble.meta.lr", float, "meta pretraining learning rate"),
    "incubate_lr": ("assemble.incubate.lr", float, "incubation learning rate"),
    "finetune_lr": ("assemble.finetune.lr", float, "finetuning learning rate"),
    "incubate_drop_path": ("assemble.incubate.drop_path", float, "incubation drop-path (over the hybrid's depth)"),
    "finetune_drop_path": ("assemble.finetune.drop_path", float, "finetuning drop-path"),
    "e2e_epochs": ("assemble.e2e.epochs", float, "with --run-e2e: E2E epochs (default: equal FLOPs)"),
}


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of ``assemble``. Usage: ``build_parser().parse_args(["--modules", "4"])``."""
    parser = argparse.ArgumentParser(
        prog="assemble", description="Deep Model Assembling: pretrain a meta model, incubate K modules "
        "independently, assemble, finetune. 'assemble incubate --module i ...' incubates one module (one process "
        "or machine per module).", **help_style(__doc__, prefix="assemble"))
    add_flag_table(parser, ASSEMBLE_FLAGS, GROUP)
    group = flag_group(parser, GROUP)
    group.add_argument("--phase", choices=PHASES, help="run one phase (default: all, skipping complete ones)")
    group.add_argument("--module", type=int, help="incubate only this module (0..K-1)")
    group.add_argument("--run-e2e", action="store_true", help="also train the target end to end (RUN/e2e)")
    group.add_argument("--export-onnx", action="store_true", help="also export the final model to RUN/model.onnx")
    add_training_flags(parser)
    return parser


def recipe_from_args(args: argparse.Namespace) -> AssembleRecipe:
    """The validated AssembleRecipe: the recipe file (or defaults), then the flags."""
    overrides: dict[str, Any] = recipe_overrides(args)
    overrides.update(table_overrides(args, ASSEMBLE_FLAGS))
    if args.export_onnx:
        overrides["assemble.export_onnx"] = True
    if args.run_e2e:
        overrides["assemble.run_e2e"] = True
    return load_recipe(args.recipe, AssembleRecipe, overrides)


def selected_phase(words: list[str], args: argparse.Namespace) -> str | None:
    """The phase asked for (``assemble incubate ...``, ``--phase``, or ``--module`` alone: incubation)."""
    phase = words[0] if words and words[0] in PHASES else None
    if phase and args.phase and args.phase != phase:
        raise UserError(f"'assemble {phase}' and --phase {args.phase} disagree; give one")
    phase = phase or args.phase
    if args.module is not None:
        if phase not in (None, "incubate"):
            raise UserError(f"--module selects a module to incubate; it does not apply to --phase {phase}")
        phase = "incubate"
    return phase


@cli_entry
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``assemble`` console script. Usage: ``main(["--recipe", "vit-assemble"])``."""
    words = list(argv if argv is not None else sys.argv[1:])
    args = build_parser().parse_args(words[1:] if words and words[0] in PHASES else words)
    phase = selected_phase(words, args)
    quiet_libraries()
    assembly = prepare_assembly(recipe_from_args(args))
    phases = [phase] if phase else list(PHASES)
    preflight(assembly, phases, args.module)
    open_root(assembly, overwrite=args.overwrite)
    run_phases(assembly, phases, args.module)
    if phase in (None, "finetune"):
        summarize(assembly)
    return 0


__all__ = ["ASSEMBLE_FLAGS", "build_parser", "main", "recipe_from_args"]
