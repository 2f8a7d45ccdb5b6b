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
from shrink.cliargs import add_training_flags, recipe_overrides
from shrink.errors import cli_entry


def _train(args: argparse.Namespace) -> int:
    from shrink.experiment import prepare_experiment, train_and_report
    from shrink.recipe import load_recipe

    recipe = load_recipe(args.recipe, overrides=recipe_overrides(args))
    train_and_report(prepare_experiment(recipe), resume=args.resume, overwrite=args.overwrite)
    return 0


def _recipes(args: argparse.Namespace) -> int:
    from shrink.recipe import list_recipes, recipe_path

    for name in list_recipes():
        print(f"{name:32s} {recipe_path(name)}")
    return 0


def _models(args: argparse.Namespace) -> int:
    from shrink.models import model_names

    for kind, names in model_names().items():
        print(f"{kind}: {', '.join(names)}")
    return 0


def _datasets(args: argparse.Namespace) -> int:
    from shrink.data import DATASETS

    print(", ".join(DATASETS.names()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree of the ``shrink`` command."""
    from shrink.deploy_cli import configure_bench_parser, configure_export_parser, run_bench, run_export

    parser = argparse.ArgumentParser(prog="shrink", description="shrink: model compression core commands")
    parser.add_argument("--version", action="version", version=f"shrink {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train or fine-tune a model (teachers, base models to prune)")
    add_training_flags(train)
    train.set_defaults(func=_train)
    export = sub.add_parser("export", help="export a run's model to ONNX, validate it, optionally quantize")
    configure_export_parser(export)
    export.set_defaults(func=run_export)
    bench = sub.add_parser("bench", help="parameters, MACs, size, latency and accuracy of runs / ONNX files")
    configure_bench_parser(bench)
    bench.set_defaults(func=run_bench)
    for name, func, text in (("recipes", _recipes, "list the shipped recipes"),
                             ("models", _models, "list the model zoo and aliases"),
                             ("datasets", _datasets, "list the dataset loaders")):
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
