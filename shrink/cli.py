"""The ``shrink`` command: ``train``, ``export``, ``bench`` and the listings ``recipes``, ``models``, ``datasets``.

Usage::

    shrink train --model resnet20 --dataset fashion-mnist --epochs 1 --out runs/r20
    shrink train --model bert-base --task sst2 --data-dir glue/SST-2
    shrink export runs/r20 --onnx out/model.onnx
    shrink bench runs/r20 out/model.onnx
"""
from __future__ import annotations

import argparse
from typing import Sequence

from shrink import __version__
from shrink.cliargs import HelpFormatter, add_training_flags, help_style, recipe_overrides, usage_examples
from shrink.errors import cli_entry


def _train(args: argparse.Namespace) -> int:
    from shrink.experiment import prepare_experiment, train_and_report
    from shrink.recipe import load_recipe

    recipe = load_recipe(args.recipe, overrides=recipe_overrides(args))
    train_and_report(prepare_experiment(recipe), resume=args.resume, overwrite=args.overwrite)
    return 0


def _recipes(args: argparse.Namespace) -> int:
    from shrink.recipe import describe_recipe, list_recipes

    for name in list_recipes():
        command, summary = describe_recipe(name)
        print(f"{name:24s} {command:13s} {summary}")
    return 0


def _models(args: argparse.Namespace) -> int:
    from shrink.models.create import model_catalog

    for row in model_catalog():
        params = row["params"]
        size = "?" if params is None else f"{params / 1e6:.1f}M" if params >= 1e6 else f"{params / 1e3:.0f}K"
        print(f"{row['name']:16s} {size:>6s}  {row['family']:9s}  {row['needs']}")
    return 0


def _datasets(args: argparse.Namespace) -> int:
    from shrink.data import DATASETS

    width = max(map(len, DATASETS.names()))
    for name in DATASETS.names():
        aliases = DATASETS.aliases_of(name)
        print(f"{name:{width}s}  {DATASETS.summary(name)}" + (f" (also: {', '.join(aliases)})" if aliases else ""))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree of the ``shrink`` command."""
    from shrink.deploy_cli import __doc__ as deploy_doc
    from shrink.deploy_cli import configure_bench_parser, configure_export_parser, run_bench, run_export

    parser = argparse.ArgumentParser(prog="shrink", description="shrink: model compression core commands",
                                     epilog=usage_examples(__doc__), formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"shrink {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    text = "train or fine-tune a model (teachers, base models to prune)"
    train = sub.add_parser("train", help=text, description=text, **help_style(__doc__, "shrink train"))
    add_training_flags(train)
    train.set_defaults(func=_train)
    text = "export a run's model to ONNX, validate it, optionally quantize"
    export = sub.add_parser("export", help=text, description=text,
                            **help_style(deploy_doc, "shrink export", positionals="SOURCE "))
    configure_export_parser(export)
    export.set_defaults(func=run_export)
    text = "parameters, MACs, size, latency and accuracy of runs / ONNX files"
    bench = sub.add_parser("bench", help=text, description=text,
                           **help_style(deploy_doc, "shrink bench", positionals="TARGET [TARGET ...] "))
    configure_bench_parser(bench)
    bench.set_defaults(func=run_bench)
    for name, func, text in (("recipes", _recipes, "list the shipped recipes: command and purpose"),
                             ("models", _models, "list the models: size and what each needs"),
                             ("datasets", _datasets, "list the datasets: what each is and needs")):
        sub.add_parser(name, help=text).set_defaults(func=func)
    return parser


@cli_entry
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``shrink`` console script. Usage: ``main(["train", "--recipe", "demo"])``."""
    args = build_parser().parse_args(argv)
    quiet_libraries()
    return args.func(args)


def quiet_libraries() -> None:
    """Our own progress bar and tables are the output; the libraries' per-file bars are noise."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
