"""The ``prune`` command: a trained network in, a physically smaller one out, with accuracy before and after.

Stages (each saved in the run directory and reused by ``--resume``): the base model (``RUN/base``, trained
first unless ``--base-model`` is given); for ``--method metanet`` the metanetwork (``--metanet``, or meta-trained
into ``RUN/metanet`` from ``RUN/collection``), the lightly pruned target (``RUN/light``) and its transformed,
finetuned version (``RUN/transformed``); then pruning to the target with the named criterion, finetuning
(optionally with KD from the base model) into ``RUN/model``, the measurements, ``metrics.json``,
``report.md``, ``accuracy_vs_speedup.png`` and, with ``--export-onnx``, ``RUN/model.onnx``. Each training phase
(the base, the data models, the finetunes) checkpoints into ``RUN/phases/`` while it runs, so ``--resume``
continues it mid-way; the folder goes once the pruned model is saved. Meta-training checkpoints each
meta-epoch there too (:mod:`prune.metacheckpoint`).
``prune metatrain`` runs only the metanetwork stage.

Usage::

    prune --model resnet56 --dataset cifar10 --data-dir data/cifar-10-batches-py --speedup 2.5 --method group-l2
    prune --recipe resnet56-cifar10 --data-dir data/cifar-10-batches-py --method metanet
    prune metatrain --recipe resnet56-cifar10 --data-dir data/cifar-10-batches-py --out runs/meta
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import itertools
import json
import math
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from prune.config import PruneRecipe, PruneSection
from prune.graph import network_to_graph
from prune.importance import CRITERIA
from prune.latency import FastWidths, LatencyGoal, MeasuredSpeedup, runnable
from prune.metanet import MetaNetwork, apply_metanet, load_metanet
from prune.metatrain import (CALIBRATION_EXAMPLES, example_input, given_collection, light_prune, recalibrate_batchnorm,
                             shuffled_loader, train_metanet)
from prune.pruner import (PHASES_DIR, PruneResult, checkpointed_fit, finetune, layer_widths, protected_modules,
                          prune_model, torch_pruning_macs)
from prune.transformers import check_depth, is_transformer, prune_depth, pruning_start
from shrink.bench import compare_latency, count_macs, count_parameters, example_inputs, size_on_disk
from shrink.cli import quiet_libraries
from shrink.cliargs import (FlagTable, add_flag_table, add_training_flags, flag_group, help_style, recipe_overrides,
                            table_overrides)
from shrink.errors import UserError, cli_entry
from shrink.experiment import Experiment, model_figures, open_run, prepare_experiment
from shrink.models import load_model, save_model
from shrink.onnx_runtime import OnnxModel
from shrink.recipe import load_recipe
from shrink.modelcard import ModelCard
from shrink.report import publish
from shrink.runs import RunDir, atomic_write_json
from shrink.timing import latency_columns
from shrink.train import evaluate_model, forward_logits, supervised_loss

PRUNE_INFO = "prune.json"
PLOT_FILE = "accuracy_vs_speedup.png"

# flag dest -> (recipe key, type, help), as shrink.cliargs.TRAINING_FLAGS
PRUNE_FLAGS: FlagTable = {
    "method": ("prune.method", str, f"importance criterion: {', '.join(CRITERIA.names())}"),
    "speedup": ("prune.speedup", float, "target MACs speed-up over the base model (default 2.0)"),
    "param_ratio": ("prune.param_ratio", float, "target parameter ratio base / pruned (instead of --speedup)"),
    "latency_speedup": ("prune.latency_speedup", float, "target measured speed-up over the base model (on "
                        "--latency-runtime at --latency-batch) instead of a MACs target"),
    "latency_batch": ("prune.latency_batch", int, "batch size of the latency target and of the result's second "
                      "latency column (default 64)"),
    "latency_runtime": ("prune.latency_runtime", str, "where latency is measured: onnxruntime (default) or torch"),
    "protect": ("prune.protect", str, "comma-separated layers never pruned (the classifier always is protected)"),
    "iterative_steps": ("prune.iterative_steps", int, "each step prunes 1/N of the channels, globally ranked"),
    "round_to": ("prune.round_to", int, "keep pruned widths multiples of N (8 or 16: faster kernels)"),
    "max_layer_ratio": ("prune.max_layer_ratio", float, "no layer loses more than this fraction of its original "
                        "channels (default: no cap, as the spec; global ranking can cut a layer to 1 channel)"),
    "base_model": ("prune.base_model", str, "a trained model folder (default: train --model first)"),
    "metanet": ("prune.metanet", str, "a saved metanetwork folder (default for --method metanet: meta-train one)"),
    "finetune_epochs": ("prune.finetune.epochs", float, "finetuning epochs after pruning"),
    "finetune_lr": ("prune.finetune.lr", float, "finetuning learning rate after pruning"),
    "kd_weight": ("prune.kd_weight", float, "weight of KD from the unpruned model while finetuning (0: none)"),
    "kd_hidden_weight": ("prune.kd_hidden_weight", float, "with --finetune-kd: weight of the hidden-state MSE of "
                         "every transformer block against the unpruned model's"),
    "head_pace": ("prune.head_pace", float, "transformers: heads go at this fraction of the FFN neurons' pace "
                  "(0: keep every head; default 1)"),
    "drop_layers": ("prune.drop_layers", int, "transformers: first remove the N whole blocks (layers) whose output "
                    "differs least from their input on training data, then prune widths on to the target"),
    "data_models": ("prune.meta.data_models", int, "networks trained for meta-training (last held out)"),
    "collection": ("prune.meta.collection", str, "a folder of trained model folders to meta-train on instead"),
    "meta_epochs": ("prune.meta.epochs", int, "meta-training epochs"),
}


def build_parser(metatrain: bool = False) -> argparse.ArgumentParser:
    """The argparse parser of ``prune`` (or of ``prune metatrain``). Usage: ``build_parser().parse_args([])``."""
    if metatrain:
        parser = argparse.ArgumentParser(
            prog="prune metatrain", description="Only meta-train the graph metanetwork (into RUN/metanet), on a "
            "collection of trained networks; `prune --method metanet --metanet RUN/metanet` then uses it.",
            **help_style(__doc__, prefix="prune metatrain"))
    else:
        parser = argparse.ArgumentParser(
            prog="prune", description="Structured pruning to a MACs speed-up with Torch-Pruning; --method metanet "
            "first applies a graph metanetwork. 'prune metatrain ...' only meta-trains the metanetwork.",
            **help_style(__doc__))
    add_flag_table(parser, PRUNE_FLAGS, "pruning")
    group = flag_group(parser, "pruning")
    group.add_argument("--fast-widths", action=argparse.BooleanOptionalAction, default=None,
                       help="round pruned widths down to the fastest nearby widths by measured layer latency "
                            "(cached per machine; default: on with --latency-speedup unless --round-to is given) "
                            "[prune.fast_widths]")
    group.add_argument("--export-onnx", action="store_true", help="also export the pruned model to RUN/model.onnx")
    group.add_argument("--finetune-kd", action="store_true", help="recover by distillation from the unpruned "
                       "model: logit KD (--kd-weight, 1 when unset) and, for transformers, hidden-state MSE of every "
                       "block [prune.finetune_kd]")
    add_training_flags(parser)
    return parser


def recipe_from_args(args: argparse.Namespace) -> PruneRecipe:
    """The validated PruneRecipe: the recipe file (or defaults), then the flags.

    Usage: ``recipe_from_args(build_parser().parse_args(["--model", "resnet20", "--speedup", "2"]))``
    """
    overrides = recipe_overrides(args)
    overrides.update(table_overrides(args, PRUNE_FLAGS))
    if args.protect is not None:
        overrides["prune.protect"] = [name.strip() for name in args.protect.split(",") if name.strip()]
    if args.export_onnx:
        overrides["prune.export_onnx"] = True
    if args.fast_widths is not None:
        overrides["prune.fast_widths"] = args.fast_widths
    if args.finetune_kd:
        overrides["prune.finetune_kd"] = True
    return load_recipe(args.recipe, PruneRecipe, overrides)


# ------------------------------------------------------------------------------------------- stages
def cached(folder: Path, make: Callable[[], nn.Module], log: Callable[[str], None] = print) -> nn.Module:
    """The model saved in ``folder`` by an earlier run, or ``make()`` saved there now.

    Usage: ``base = cached(run / "base", lambda: train_base(experiment))``
    """
    if folder.is_dir():
        log(f"{folder.name}: reusing the saved model")
        return load_model(folder).eval()
    model = make()
    save_model(model, folder)
    return model.eval()


def trained_model(experiment: Experiment, checkpoints: Path) -> nn.Module:
    """Train the experiment's model with ``train:`` (last epoch kept), checkpointed into ``checkpoints``.

    Usage: ``trained_model(experiment, run / PHASES_DIR / "base")``
    """
    checkpointed_fit(experiment, checkpoints)
    return experiment.model


def metanet_for(recipe: PruneRecipe, experiment: Experiment, run: RunDir) -> MetaNetwork:
    """The given metanetwork, the one meta-trained earlier in this run, or a freshly meta-trained one."""
    if recipe.prune.metanet:
        return load_metanet(recipe.prune.metanet)
    if (run / "metanet").is_dir():
        return load_metanet(run / "metanet")
    return train_metanet(recipe, experiment, run.path)


def transformed_start(recipe: PruneRecipe, experiment: Experiment, run: RunDir, base: nn.Module) -> nn.Module:
    """Spec steps 4-6: light prune + finetune, one metanetwork forward, finetune."""
    metanet = metanet_for(recipe, experiment, run)
    light = cached(run / "light", lambda: light_prune(experiment, copy.deepcopy(base), recipe,
                                                      checkpoints=run / PHASES_DIR / "light"))

    def transform() -> nn.Module:
        moved = apply_metanet(metanet, light, example_input(experiment))
        recalibrate_batchnorm(moved, shuffled_loader(experiment.task.train, recipe, experiment))
        finetune(experiment, moved, recipe.prune.metanet_finetune.apply(recipe.train),
                 checkpoints=run / PHASES_DIR / "transformed")
        return moved

    return cached(run / "transformed", transform)


def gradient_fn(experiment: Experiment) -> Callable[[nn.Module], None]:
    """A backward pass of the CE on the first training batch (for gradient criteria such as taylor)."""
    loader = DataLoader(experiment.task.train, batch_size=experiment.recipe.train.batch_size,
                        collate_fn=experiment.collate)
    batch = next(iter(loader))

    def backward(model: nn.Module) -> None:
        supervised_loss(forward_logits(model, batch), batch["labels"]).backward()

    return backward


def curve_hook(experiment: Experiment, target: float, points: int) -> Callable[[nn.Module, dict], None]:
    """Adds the dev metric (no finetuning) to the pruning steps that cross ``points`` evenly spaced ratios."""
    marks = [1 + (target - 1) * (index + 1) / points for index in range(points)]
    metric = experiment.task.metrics[0]

    def hook(model: nn.Module, entry: dict) -> None:
        reached = entry["param_ratio"] if "param_ratio" in experiment.recipe.prune.target() else entry["speedup"]
        if marks and reached >= marks[0]:
            while marks and reached >= marks[0]:
                marks.pop(0)
            entry[metric] = evaluate_model(model, experiment.dev_loader(), experiment.task.metrics)[metric]

    return hook


def fast_widths(section: PruneSection, model: nn.Module) -> bool:
    """Whether pruned widths are rounded by measured layer latency: conv/linear channel groups only (a
    transformer loses whole heads and FFN neurons in every block alike); UserError when asked for one."""
    if section.fast_widths and is_transformer(model):
        raise UserError("--fast-widths rounds the channel groups of CNNs; transformers lose whole heads and FFN "
                        "neurons in every block alike: leave --fast-widths out")
    return section.uses_fast_widths and not is_transformer(model)


def prune_and_finetune(recipe: PruneRecipe, experiment: Experiment, start: nn.Module, base: nn.Module,
                       base_counts: tuple[int, int], checkpoints: Path | None = None
                       ) -> tuple[nn.Module, dict[str, Any]]:
    """Prune a copy of ``start`` to the target (relative to the base) and finetune it (checkpointed into
    ``checkpoints`` when given); the pruning record."""
    section = recipe.prune
    pruned, pruner = pruning_start(start, section.head_pace)  # transformers: heads and FFN neurons
    depth = None
    if section.drop_layers:
        depth = prune_depth(pruned, section.drop_layers, calibration_batches(recipe, experiment))
        influence = ", ".join(f"{depth.influence[index]:.3f}" for index in depth.dropped)
        macs = count_macs(pruned, example_input(experiment))
        print(f"depth: removed blocks {depth.dropped} of {len(depth.influence)} (the lowest Block Influence: "
              f"{influence}); {base_counts[0] / macs:.2f}x fewer MACs before width pruning")
    target = section.target()
    grads = gradient_fn(experiment) if CRITERIA.get(section.method).needs_grad else None
    widths = FastWidths(example_input(experiment), section.method, batch=section.latency_batch,
                        protect=section.protect, grad_fn=grads) if fast_widths(section, start) else None
    goal = None
    if section.latency_speedup is not None:
        meter = MeasuredSpeedup(base, batch_maker(recipe, experiment, base), section.latency_batch,
                                section.latency_runtime)
        goal = LatencyGoal(meter, section.latency_speedup, widths=widths)
    result: PruneResult = prune_model(
        pruned, example_input(experiment), criterion=section.method, **target, protect=section.protect,
        iterative_steps=section.iterative_steps, round_to=section.round_to,
        max_layer_ratio=section.max_layer_ratio, base_widths=layer_widths(base) if section.max_layer_ratio else None,
        grad_fn=grads, base=base_counts, pruner=pruner,
        on_step=curve_hook(experiment, next(iter(target.values())), section.curve_points),
        latency_goal=goal, widths=widths,
    )
    before = evaluate_model(pruned, experiment.dev_loader(), experiment.task.metrics)
    kd_weight, hidden_weight = section.distillation()
    trained = finetune(experiment, pruned, section.finetune.apply(recipe.train), teacher=base,
                       kd_weight=kd_weight, temperature=section.kd_temperature, hidden_weight=hidden_weight,
                       teacher_blocks=depth.kept if depth else None, checkpoints=checkpoints)
    info = {"prune": result.as_dict(), "dev_before_finetune": before, "finetune_history": trained.history}
    if depth is not None:
        info["depth"] = dataclasses.asdict(depth)
    return pruned, info


def calibration_batches(recipe: PruneRecipe, experiment: Experiment) -> Iterator[dict[str, Tensor]]:
    """About ``CALIBRATION_EXAMPLES`` shuffled training examples in batches (the same ones on every run), on which
    blocks are ranked before whole ones are removed."""
    count = math.ceil(CALIBRATION_EXAMPLES / recipe.train.batch_size)
    return itertools.islice(shuffled_loader(experiment.task.train, recipe, experiment), count)


def pruned_model(recipe: PruneRecipe, experiment: Experiment, run: RunDir, start: nn.Module, base: nn.Module,
                 base_counts: tuple[int, int]) -> tuple[nn.Module, dict[str, Any]]:
    """``RUN/model`` and its pruning record (``RUN/prune.json``), reused when both were saved earlier."""
    if (run / "model").is_dir() and (run / PRUNE_INFO).exists():
        print("model: reusing the saved pruned model")
        return load_model(run / "model").eval(), json.loads((run / PRUNE_INFO).read_text())
    model, info = prune_and_finetune(recipe, experiment, start, base, base_counts, run / PHASES_DIR / "finetune")
    save_model(model, run / "model")
    atomic_write_json(run / PRUNE_INFO, info)
    shutil.rmtree(run / PHASES_DIR, ignore_errors=True)  # every phase is saved as a model now
    return model.eval(), info


# ------------------------------------------------------------------------------------------ results
def plot_curve(path: Path, history: Sequence[dict[str, Any]], metric: str, base_score: float,
               final: tuple[float, float]) -> None:
    """Dev metric against speed-up while pruning (no finetuning), the base and the finetuned result."""
    from matplotlib.figure import Figure

    points = [(entry["speedup"], entry[metric]) for entry in history if metric in entry]
    figure = Figure(figsize=(6, 4))
    axes = figure.subplots()
    axes.plot([1.0, *(x for x, _ in points)], [base_score, *(y for _, y in points)], marker="o",
              label="pruned, before finetuning")
    axes.scatter([final[0]], [final[1]], color="tab:red", zorder=3, label="pruned + finetuned")
    axes.axhline(base_score, color="gray", linestyle="--", label="base")
    axes.set_xlabel("MACs speed-up (base / pruned)")
    axes.set_ylabel(f"dev {metric}")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def batch_maker(recipe: PruneRecipe, experiment: Experiment, model: nn.Module) -> Callable[[int], dict[str, Tensor]]:
    """Seeded dummy batches of a given size shaped as the task's inputs (for timing)."""
    return lambda size: example_inputs(model, size, image_shape=experiment.task.image_shape,
                                       seq_len=recipe.data.max_length)


def measured(recipe: PruneRecipe, experiment: Experiment, run: RunDir, models: dict[str, nn.Module]
             ) -> dict[str, dict[str, Any]]:
    """Parameters, MACs and latency at batch 1 and ``latency_batch`` on ``latency_runtime`` of each model, the
    models timed in alternating rounds (the pruned model's ONNX file is reused when it was exported)."""
    section = recipe.prune
    figures = model_figures(experiment, models, batch_sizes=())
    exported = run / "model.onnx"
    with tempfile.TemporaryDirectory(prefix="shrink-prune-") as folder:
        runners = {}
        for role, model in models.items():
            make_batch = batch_maker(recipe, experiment, model)
            reuse = section.latency_runtime == "onnxruntime" and role == "pruned" and exported.is_file()
            runners[role] = (OnnxModel(exported, torch.get_num_threads()) if reuse
                             else runnable(model, section.latency_runtime, Path(folder) / role, make_batch), make_batch)
        latency = compare_latency(runners, sorted({1, section.latency_batch}))  # batch 1 once when both are 1
    for role in models:
        figures[role]["latency"], figures[role]["runtime"] = latency[role], section.latency_runtime
    return figures


def export(recipe: PruneRecipe, experiment: Experiment, model: nn.Module, run: RunDir) -> dict[str, Any]:
    """Export the pruned model to ``RUN/model.onnx`` (checked against PyTorch)."""
    from shrink.deploy_cli import TaskView

    view = TaskView(experiment.task, recipe.data.max_length, None, recipe.train.seed)
    return view.export(model, run / "model.onnx").to_dict()


def report(recipe: PruneRecipe, experiment: Experiment, run: RunDir, models: dict[str, nn.Module],
           info: dict[str, Any]) -> dict[str, Any]:
    """Measure the base and pruned models; print the table; write metrics.json, report.md and the plot."""
    metric = experiment.task.metrics[0]
    exported = export(recipe, experiment, models["pruned"], run) if recipe.prune.export_onnx else None
    rows, figures = [], measured(recipe, experiment, run, models)  # base and pruned timed alternately
    for role, model in models.items():
        dev = evaluate_model(model, experiment.dev_loader(), experiment.task.metrics)
        figures[role] = {"dev": dev, **figures[role],
                         "macs_torch_pruning": torch_pruning_macs(model, example_input(experiment))}
        rows.append({"model": role, **{f"dev {k}": v for k, v in dev.items()}, "params": figures[role]["params"],
                     "MACs": figures[role]["macs"], "MACs (Torch-Pruning)": figures[role]["macs_torch_pruning"],
                     **latency_columns(figures[role]["latency"])})
    figures["pruned"]["model_bytes"] = size_on_disk(run / "model")
    speedup = figures["base"]["macs"] / figures["pruned"]["macs"]
    latency_speedups = {b: figures["base"]["latency"][b]["median_ms"] / v["median_ms"]
                        for b, v in figures["pruned"]["latency"].items()}
    rows[-1]["MACs speed-up"] = speedup
    rows[-1].update({f"latency speed-up b{b}": value for b, value in latency_speedups.items()})
    plot_curve(run / PLOT_FILE, info["prune"]["history"], metric, figures["base"]["dev"][metric],
               (speedup, figures["pruned"]["dev"][metric]))
    metrics: dict[str, Any] = {
        "command": "prune", "model": recipe.prune.base_model or recipe.model.name, "dataset": experiment.task.name,
        "method": CRITERIA.canonical(recipe.prune.method), "target": recipe.prune.target(),
        "primary_metric": metric, "speedup": speedup,
        "speedup_torch_pruning": figures["base"]["macs_torch_pruning"] / figures["pruned"]["macs_torch_pruning"],
        "param_ratio": figures["base"]["params"] / figures["pruned"]["params"],
        "latency_speedup": latency_speedups, "latency_runtime": recipe.prune.latency_runtime,
        "base": figures["base"], "pruned": figures["pruned"], **info,
    }
    if exported is not None:
        metrics["onnx"] = exported
    intro = (f"{metrics['model']} on {experiment.task.name}, method `{metrics['method']}`, target "
             f"{metrics['target']}; MACs speed-up = base MACs / pruned MACs (convs and linears, PyTorch's FLOP "
             "counter; Torch-Pruning's count, which papers quote, adds BatchNorm, ReLU and pooling); latency "
             f"speed-up = base / pruned median latency on {recipe.prune.latency_runtime}, measured here.")
    card = ModelCard(method=f"{metrics['model']} pruned with `prune` (method {metrics['method']}) to {speedup:.2f}x "
                     f"fewer MACs, dev {metric} {figures['pruned']['dev'][metric]:.4f} against the base model's "
                     f"{figures['base']['dev'][metric]:.4f}", base_model=metrics["model"],
                     dataset=experiment.task.name, metrics=figures["pruned"]["dev"], tags=["pruning"])
    publish(run, metrics, f"prune ({metrics['method']})", intro, [("result", rows)],
            footer=f"![accuracy against speed-up]({PLOT_FILE})\n", card=card)
    return metrics


def run_prune(recipe: PruneRecipe, resume: bool = False, overwrite: bool = False, only_metanet: bool = False
              ) -> dict[str, Any]:
    """The whole ``prune`` command (or ``prune metatrain`` with ``only_metanet``); returns metrics.json's content.

    Usage: ``run_prune(load_recipe("resnet56-cifar10", PruneRecipe))``
    """
    uses_metanet = only_metanet or CRITERIA.get(recipe.prune.method).uses_metanet
    experiment = prepare_experiment(recipe, model_name=recipe.prune.base_model)
    # a --protect layer the model lacks, or fast widths for a transformer, are refused now, not after training
    protected_modules(experiment.model, recipe.prune.protect, example_input(experiment))
    fast_widths(recipe.prune, experiment.model)
    if recipe.prune.drop_layers:
        check_depth(experiment.model, recipe.prune.drop_layers)
    if uses_metanet:  # refuse a network the graph cannot read, or a bad metanetwork folder, before any work
        network_to_graph(experiment.model, example_input(experiment))
        if recipe.prune.metanet:
            load_metanet(recipe.prune.metanet)
        elif recipe.prune.meta.collection:
            given_collection(recipe.prune.meta.collection, recipe.prune.meta.held_out)
    with open_run(recipe, "metatrain" if only_metanet else "prune", resume, overwrite) as run:
        if only_metanet:
            metanet_for(recipe, experiment, run)
            metrics = {"command": "prune metatrain", "metanet": str(run / "metanet")}
            run.finish(metrics, f"# prune metatrain\n\nMetanetwork: `{run / 'metanet'}`\n")
            return metrics
        return _prune_in(recipe, experiment, run, uses_metanet)


def _prune_in(recipe: PruneRecipe, experiment: Experiment, run: RunDir, uses_metanet: bool) -> dict[str, Any]:
    if recipe.prune.base_model:
        base = experiment.model.eval()
    else:
        base = cached(run / "base", lambda: trained_model(experiment, run / PHASES_DIR / "base"))
    base_counts = (count_macs(base, example_input(experiment)), count_parameters(base))
    start = transformed_start(recipe, experiment, run, base) if uses_metanet else base
    pruned, info = pruned_model(recipe, experiment, run, start, base, base_counts)
    return report(recipe, experiment, run, {"base": base, "pruned": pruned}, info)


@cli_entry
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``prune`` console script. Usage: ``main(["--model", "resnet20", "--speedup", "2"])``."""
    words = list(argv if argv is not None else sys.argv[1:])
    only_metanet = bool(words) and words[0] == "metatrain"
    args = build_parser(metatrain=only_metanet).parse_args(words[1:] if only_metanet else words)
    quiet_libraries()
    recipe = recipe_from_args(args)
    run_prune(recipe, resume=args.resume, overwrite=args.overwrite, only_metanet=only_metanet)
    return 0


__all__ = ["PRUNE_FLAGS", "build_parser", "main", "recipe_from_args", "run_prune"]
