"""Command-line flags shared by every command that trains (``shrink train``, ``distill``, ``prune``, ...).

Each flag maps to a dotted recipe key, so a flag overrides the recipe and the recipe fills in the rest.

Usage::

    parser = argparse.ArgumentParser()
    add_training_flags(parser)
    args = parser.parse_args(argv)
    recipe = load_recipe(args.recipe, overrides=recipe_overrides(args))
"""
from __future__ import annotations

import argparse
import textwrap
from typing import Any, Callable

import yaml

from shrink.errors import UserError


def typed_list(kind: Callable[[str], Any], what: str) -> Callable[[str], list[Any]]:
    """A converter of comma-separated values for list-valued flags; a bad item is argparse's one-line error.

    Usage: ``typed_list(int, "whole numbers")("14,13,14,13") == [14, 13, 14, 13]``
    """
    def convert(text: str) -> list[Any]:
        try:
            return [kind(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {what}, got '{text}'") from None

    return convert


float_list = typed_list(float, "numbers")  # e.g. --milestones 60,90


def name_list(text: str) -> list[str]:
    """A comma-separated list of names. Usage: ``name_list("tensorboard,mlflow") == ["tensorboard", "mlflow"]``."""
    return [part.strip() for part in text.split(",") if part.strip()]


# flag dest -> (recipe key, type (a str -> value converter), help)
FlagTable = dict[str, tuple[str, Callable[[str], Any], str]]

TRAINING_FLAGS: FlagTable = {
    "model": ("model.name", str, "zoo name (resnet56, vit-tiny, ...), HF alias (bert-base, tinybert), hub id or directory"),
    "dataset": ("data.dataset", str, "dataset or GLUE task (sst2, rte, fashion-mnist, cifar10, text-files, ...)"),
    "data_dir": ("data.data_dir", str, "folder holding the dataset's files"),
    "text_column": ("data.text_column", str, "text column of CSV/TSV/JSONL files"),
    "text_pair_column": ("data.text_pair_column", str, "second text column (sentence pairs)"),
    "label_column": ("data.label_column", str, "label column of CSV/TSV/JSONL files"),
    "max_length": ("data.max_length", int, "tokens per example (text)"),
    "max_train_samples": ("data.max_train_samples", int, "use a seeded subset of the training split"),
    "max_eval_samples": ("data.max_eval_samples", int, "use a seeded subset of the dev split"),
    "epochs": ("train.epochs", float, "training epochs"),
    "max_steps": ("train.max_steps", int, "stop after this many optimizer steps"),
    "batch_size": ("train.batch_size", int, "per-process batch size"),
    "optimizer": ("train.optimizer", str, "adamw or sgd (with --momentum)"),
    "lr": ("train.lr", float, "peak learning rate"),
    "momentum": ("train.momentum", float, "SGD momentum"),
    "weight_decay": ("train.weight_decay", float, "weight decay"),
    "warmup_ratio": ("train.warmup_ratio", float, "fraction of steps spent warming up"),
    "schedule": ("train.schedule", str, "learning-rate schedule: linear, cosine, constant or multistep"),
    "milestones": ("train.milestones", float_list, "multistep: comma-separated epochs where the lr drops by gamma"),
    "grad_accum": ("train.grad_accum", int, "gradient accumulation steps"),
    "max_grad_norm": ("train.max_grad_norm", float, "gradient clipping norm"),
    "mixed_precision": ("train.mixed_precision", str, "no, bf16 or fp16 (GPU)"),
    "seed": ("train.seed", int, "random seed (data order, init, dropout)"),
    "select_on": ("train.select_on", str, "where the best epoch is chosen: dev (default) or train-holdout "
                  "(a seeded 10%% of the training data, so the dev split is only reported)"),
    "checkpoint_every": ("train.checkpoint_every", int, "also checkpoint every N optimizer steps"),
    "report_to": ("train.report_to", name_list, "experiment trackers for loss, lr and dev metrics: tensorboard, "
                  "wandb and/or mlflow (comma-separated; TensorBoard and MLflow write to RUN/logs)"),
    "out": ("output_dir", str, "run directory"),
}


# Help groups of the shared flags, by the recipe section their key is in; the rest is about the run itself.
SECTION_GROUPS = {"data": "data", "model": "model", "train": "training"}
RUN_GROUP = "recipe, run directory and output"
RUN_KEYS = ("output_dir", "train.report_to", "train.checkpoint_every")
EXAMPLES_HEADING = "examples:"


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, except that the examples epilog keeps its lines as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith(EXAMPLES_HEADING):
            return "\n".join(indent + line for line in text.splitlines())
        return super()._fill_text(text, width, indent)


def usage_examples(doc: str | None, prefix: str = "") -> str:
    """The command lines of ``doc``'s ``Usage::`` block (those starting with ``prefix``) as a help epilog.

    A command's module docstring is the one place its examples are written; ``--help`` shows the same.
    Usage: ``usage_examples(__doc__, prefix="shrink train")``
    """
    _, found, block = (doc or "").partition("Usage::")
    if not found:
        return ""
    lines = textwrap.dedent(block.strip("\n")).splitlines()
    commands = [line for line in lines if line.strip() and line.startswith(prefix)]
    return "\n".join([EXAMPLES_HEADING, *(f"  {line}" for line in commands)]) if commands else ""


def help_style(doc: str | None, prefix: str = "", positionals: str = "") -> dict[str, Any]:
    """ArgumentParser keywords for a readable ``--help``: a short usage line and the examples of ``doc``.

    Usage: ``argparse.ArgumentParser(prog="prune", description="...", **help_style(__doc__))``
    """
    return {"usage": f"%(prog)s {positionals}[options]", "epilog": usage_examples(doc, prefix),
            "formatter_class": HelpFormatter}


def flag_group(parser: argparse.ArgumentParser, title: str) -> argparse._ArgumentGroup:
    """The help group ``title`` of ``parser``, made on first use. Usage: ``flag_group(parser, "data")``."""
    for group in parser._action_groups:
        if group.title == title:
            return group
    return parser.add_argument_group(title)


def add_flag_table(parser: argparse.ArgumentParser, table: FlagTable, title: str | None = None) -> None:
    """Add one ``--flag`` per entry of ``table`` (dest -> (recipe key, type, help)), in help group ``title``.

    Usage: ``add_flag_table(parser, {"speedup": ("prune.speedup", float, "target MACs speed-up")}, "pruning")``
    """
    target = flag_group(parser, title) if title else parser
    for dest, (key, kind, text) in table.items():
        target.add_argument("--" + dest.replace("_", "-"), dest=dest, type=kind, help=f"{text} [{key}]")


def table_overrides(args: argparse.Namespace, table: FlagTable) -> dict[str, Any]:
    """The recipe overrides of the flags of ``table`` that were given. Usage: ``table_overrides(args, table)``."""
    return {key: getattr(args, dest) for dest, (key, _, _) in table.items() if getattr(args, dest, None) is not None}


def add_training_flags(parser: argparse.ArgumentParser) -> None:
    """Add --recipe, the recipe-override flags, --set, --resume, --overwrite, --no-progress, --quiet, --verbose,
    in help groups after any the command made first (its own flags come first in ``--help``)."""
    for title in (*SECTION_GROUPS.values(), RUN_GROUP):  # made in the order --help shows them
        flag_group(parser, title)
    run_group = flag_group(parser, RUN_GROUP)
    run_group.add_argument("--recipe", help="recipe name (see `shrink recipes`) or YAML file")
    for dest, (key, kind, text) in TRAINING_FLAGS.items():
        flag = "--" + dest.replace("_", "-")
        aliases = ["--task"] if dest == "dataset" else ["--output-dir"] if dest == "out" else []
        title = RUN_GROUP if key in RUN_KEYS else SECTION_GROUPS[key.split(".")[0]]
        flag_group(parser, title).add_argument(flag, *aliases, dest=dest, type=kind, help=f"{text} [{key}]")
    run_group.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                           help="override any recipe key, e.g. --set train.warmup_ratio=0.1")
    run_group.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    run_group.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    flag_group(parser, SECTION_GROUPS["train"]).add_argument(
        "--group-by-length", action=argparse.BooleanOptionalAction, default=None,
        help="text: batch examples of similar length together (less padding, often 2-3x faster epochs on short "
             "sentences; batch order stays seeded) [train.group_by_length]")
    run_group.add_argument("--no-progress", action="store_true",
                           help="no progress bar (bars appear only on a terminal; elsewhere one line per epoch)")
    loudness = run_group.add_mutually_exclusive_group()
    loudness.add_argument("--quiet", action="store_const", const="quiet", dest="verbosity",
                          help="neither bars nor per-epoch lines: only the results and errors")
    loudness.add_argument("--verbose", action="store_const", const="verbose", dest="verbosity",
                          help="per-epoch lines also beside the progress bars")


def recipe_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Dotted recipe overrides from the parsed flags (unset flags are left out)."""
    overrides = table_overrides(args, TRAINING_FLAGS)
    if getattr(args, "no_progress", False):
        overrides["train.progress"] = False
    if getattr(args, "group_by_length", None) is not None:
        overrides["train.group_by_length"] = args.group_by_length
    if getattr(args, "verbosity", None):
        overrides["train.verbosity"] = args.verbosity
    for item in getattr(args, "set", []):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set expects KEY=VALUE (e.g. train.lr=0.001), got '{item}'")
        try:
            overrides[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise UserError(f"--set {key.strip()}: '{value}' is not a plain YAML value ({str(err).splitlines()[0]}); "
                            "quote text, write lists as [a, b]") from None
    return overrides


def require_positive(args: argparse.Namespace, *names: str) -> None:
    """UserError for the first flag among ``names`` given a value below 1 (unset flags pass).

    Usage: ``require_positive(args, "batch_size", "rounds")``
    """
    for name in names:
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise UserError(f"--{name.replace('_', '-')} must be a positive number, got {value}")
