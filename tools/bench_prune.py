"""Benchmarks of ``prune``: what the metanetwork costs, and what pruning buys.

Part ``cost``: the metanetwork (8 layers, width 64) on the graph of a full-width ResNet-56 (3x32x32, after
the spec's 1.32x light prune, as in its cost figures): forward time, forward + backward time, one
meta-training step on 2 x 64 images, and the process's peak resident memory after each. The reference
code takes ~33 s per forward, ~71 s forward + backward, ~102 s and ~6 GB per meta-step on a 2-core CPU.
Goals: forward <= 3 s, step <= 2 GB.

Part ``accuracy``: one dense model trained on the task in the spec's regime (SGD, momentum 0.9, weight decay
5e-4, lr 0.1, cosine, no clipping), then pruned to one MACs target by each method, once per ``--seeds``
seed (the finetuning seed), each through the ``prune`` command's own code (``prune.cli.run_prune``), every
method with the same post-dense budget:

* ``metanet``: meta-train a metanetwork on a collection of ``--data-models`` networks (trained from
  scratch like the dense one, lightly pruned, finetuned), then light-prune the dense model, finetune it
  ``--light-epochs``, apply the metanetwork, finetune ``--metanet-epochs``, prune, finetune
  ``--finetune-epochs``;
* ``group-l2`` and ``random``: prune the dense model and finetune for as many epochs as metanet spends
  after the dense model (light + metanet + finetune), so that no comparison is won by extra epochs.

Meta-training's ``metatrain.json`` records, per epoch, the held-out networks' share of the group norm in
their strongest 40% of channels (``concentration``): the table reports it before (epoch 0) and at the
kept epoch, which is how far meta-training made the networks easy to prune.

``--round-to N`` prunes every width to a multiple of N (rows named "... rN"; the metanet row reuses the
metanetwork meta-trained by the run without it, when there is one).

``--latency-speedup T`` adds a group-l2 row pruned until its measured ONNX Runtime speed-up at batch 64
reaches T (``prune --latency-speedup``, with fast widths), and a group-l2 row pruned by MACs to the MACs
speed-up that row reached: the latency target must not cost accuracy against plain MACs pruning at equal
MACs. Goal: measured speed-up >= 1.9x at batch 64 for T = 2.

A last, latency-only row thins the dense model uniformly (the same channel fraction everywhere) to the
target: what the runtime makes of fewer MACs alone. Each pruned model and the dense one are exported to
ONNX and timed with ONNX Runtime at batch 1 and 64
(rounds alternate between the models, medians are kept). Goals: metanet's drop <= 0.3 points and metanet
>= group-l2; latency speed-up >= 1.8x at 2.5x MACs. Dev accuracy is the task's dev split (Fashion-MNIST's
test split); no choice is made on it (finetuning keeps the last epoch, meta-training selects on a part of
the training split). Runs are saved under ``--out`` and reused when the tool is run again.

Usage::

    python tools/bench_prune.py --out runs/bench-prune                     # both parts, ResNet-20 on Fashion-MNIST
    python tools/bench_prune.py --out runs/bench-prune --only cost
    python tools/bench_prune.py --out runs/bench-prune --only accuracy --round-to 8   # after the first
    python tools/bench_prune.py --out runs/bench-prune --only accuracy --methods group-l2 --latency-speedup 2
    python tools/bench_prune.py --out runs/bench-prune --model resnet56 --base-epochs 30 --finetune-epochs 20
    python tools/bench_prune.py --out runs/bench-prune-short --only accuracy --methods group-l2 --seeds 7 \
        --optimizer adamw --lr 2e-3 --finetune-lr 1e-3 --base-epochs 3 --finetune-epochs 3 --light-epochs 0 \
        --metanet-epochs 0 --max-grad-norm 1                        # the earlier short protocol, one row
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch_pruning as tp

from prune.cli import run_prune
from prune.config import PruneRecipe
from prune.metanet import MetaNetwork
from prune.metatrain import DataModel, meta_step
from prune.pruner import protected_modules, prune_model
from shrink.bench import (compare_latency, count_macs, count_parameters, example_inputs, image_shape_of,
                          zero_image)
from shrink.cliargs import typed_list
from shrink.deploy_cli import export_source
from shrink.export import export_onnx
from shrink.experiment import fit, prepare_experiment
from shrink.models import build_model, load_model, save_model
from shrink.onnx_runtime import OnnxModel
from shrink.recipe import build_recipe, read_yaml
from shrink.report import print_table
from shrink.runs import RunDir, atomic_write_json

REFERENCE_COST = {"forward_s": 33.0, "forward_backward_s": 71.0, "step_s": 102.0, "step_peak_gb": 6.0}
LATENCY_BATCHES = (1, 64)
UNIFORM = "uniform widths (latency only)"


# --------------------------------------------------------------------------------------------- cost
def peak_rss_gb() -> float:
    """The process's peak resident memory so far, in GB (Linux reports kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def timed(fn: Callable[[], Any], rounds: int) -> float:
    """Median wall time of ``rounds`` calls of ``fn``, in seconds."""
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def metanet_cost(hidden: int, layers: int, images: int, rounds: int) -> dict[str, Any]:
    """Forward, forward + backward and one meta-step of the metanetwork on the light-pruned ResNet-56 graph."""
    torch.manual_seed(0)
    example = torch.zeros(1, 3, 32, 32)
    model = build_model("resnet56", num_classes=10)
    prune_model(model, example, speedup=1.32)
    item = DataModel.from_model(model, example)
    data, blocks = item.graph.data, item.graph.layout.blocks
    metanet = MetaNetwork(item.graph.layout.node_dim, item.graph.layout.edge_dim, hidden, layers)
    optimizer = torch.optim.AdamW(metanet.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    batches = [{"pixel_values": torch.randn(images, 3, 32, 32, generator=generator),
                "labels": torch.randint(0, 10, (images,), generator=generator)} for _ in range(2)]
    before = peak_rss_gb()

    def forward_backward() -> None:
        x, e = metanet(data.x, data.edge_index, data.edge_attr, blocks)
        (x.square().mean() + e.square().mean()).backward()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        meta_step(metanet, item, batches)
        optimizer.step()

    figures: dict[str, Any] = {"nodes": int(data.num_nodes), "edges": int(data.num_edges), "hidden": hidden,
                               "layers": layers, "images_per_step": f"2x{images}", "threads": torch.get_num_threads(),
                               "rss_before_gb": before}
    figures["forward_s"] = timed(lambda: metanet(data.x, data.edge_index, data.edge_attr, blocks), rounds)
    figures["forward_peak_gb"] = peak_rss_gb()
    figures["forward_backward_s"] = timed(forward_backward, rounds)
    figures["step_s"] = timed(step, rounds)
    figures["step_peak_gb"] = peak_rss_gb()
    return figures


def cost_rows(figures: dict[str, Any]) -> list[dict[str, Any]]:
    """The cost table: ours against the reference's figures, with the goal where the issue sets one."""
    goals = {"forward_s": "<= 3 s", "step_peak_gb": "<= 2 GB"}
    return [{"measure": key, "shrink": round(figures[key], 3), "reference": ref,
             "reference / shrink": round(ref / figures[key], 1), "goal": goals.get(key, "")}
            for key, ref in REFERENCE_COST.items()]


# ----------------------------------------------------------------------------------------- accuracy
def base_recipe(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """The recipe every run shares (model, data, training settings of the dense model)."""
    return {
        "model": {"name": args.model},
        "data": {"dataset": args.dataset, "data_dir": args.data_dir, "max_train_samples": args.max_train_samples},
        "train": {"epochs": args.base_epochs, "batch_size": args.batch_size, "lr": args.lr, "weight_decay": 5e-4,
                  "optimizer": args.optimizer, "momentum": 0.9, "max_grad_norm": args.max_grad_norm, "schedule": "cosine",
                  "warmup_ratio": 0.02, "seed": args.seed, "progress": args.progress},
        "output_dir": str(out / "dense-run"),
    }


def dense_model(args: argparse.Namespace, out: Path) -> Path:
    """Train the dense model once (last epoch kept) and save it to ``OUT/dense``; reused when present."""
    folder = out / "dense"
    if not folder.is_dir():
        experiment = prepare_experiment(build_recipe(base_recipe(args, out), PruneRecipe))
        fit(experiment, None)
        save_model(experiment.model, folder)
    return folder


def method_runs(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Each benchmarked row's ``prune:`` section: every method gets metanet's post-dense epochs in all."""
    finetune = {"epochs": args.finetune_epochs, "lr": args.finetune_lr}
    shared = {"speedup": args.speedup, "finetune": finetune, "export_onnx": True, "curve_points": 4,
              "round_to": args.round_to, "max_layer_ratio": args.max_layer_ratio}
    matched = {**shared, "finetune": {**finetune, "epochs": args.finetune_epochs + args.light_epochs
                                      + args.metanet_epochs}}
    metanet = {**shared, "method": "metanet",
               "metanet_finetune": {"epochs": args.metanet_epochs, "lr": args.finetune_lr},
               "meta": {"data_models": args.data_models, "held_out": 1, "epochs": args.meta_epochs,
                        "lr": args.meta_lr, "milestones": args.meta_milestones,
                        "batches_per_step": args.meta_batches, "reg": args.meta_reg,
                        "batch_stats": args.meta_batch_stats,
                        "light_finetune": {"epochs": args.light_epochs, "lr": args.finetune_lr}}}
    first_seed_metanet = run_folder(Path(args.out), "metanet" + cap_suffix(args), args.seeds[0]) / "metanet"
    if args.round_to and first_seed_metanet.is_dir():
        metanet["metanet"] = str(first_seed_metanet)  # reuse the unrounded run's metanetwork
    runs = {"metanet": metanet, "group-l2": {**matched, "method": "group-l2"}, "random": {**matched, "method": "random"}}
    chosen = {name + row_suffix(args): section for name, section in runs.items() if name in args.methods}
    if args.latency_speedup:  # without --round-to, prune rounds to the runtime's fast widths
        chosen[latency_row(args)] = {**matched, "method": "group-l2", "speedup": None,
                                     "latency_speedup": args.latency_speedup, "latency_batch": LATENCY_BATCHES[-1]}
    return chosen


def cap_suffix(args: argparse.Namespace) -> str:
    """`` capR`` in a capped row's name, so that capped and uncapped rows can share OUT."""
    return f" cap{args.max_layer_ratio:g}" if args.max_layer_ratio else ""


def row_suffix(args: argparse.Namespace) -> str:
    """`` capR rN`` in a row's name: what sets its rows apart from other invocations' rows in the same OUT."""
    return cap_suffix(args) + (f" r{args.round_to}" if args.round_to else "")


def latency_row(args: argparse.Namespace) -> str:
    """The name of the row pruned to a measured ONNX Runtime speed-up (group-l2; fast widths unless rounded)."""
    return f"group-l2 latency {args.latency_speedup}x{row_suffix(args)}"


def macs_matched_row(args: argparse.Namespace) -> str:
    """The name of the group-l2 row pruned by MACs to the MACs the latency row reached."""
    return f"group-l2 at the latency row's MACs{row_suffix(args)}"


def table_path(args: argparse.Namespace, out: Path) -> Path:
    """``OUT/bench_prune[-capR][-rN][-latencyX].json``: one file per kind of invocation, none overwriting another."""
    latency = f" latency{args.latency_speedup:g}x" if args.latency_speedup else ""
    return out / f"bench_prune{(row_suffix(args) + latency).replace(' ', '-')}.json"


def run_folder(out: Path, name: str, seed: int) -> Path:
    """Where row ``name``'s run with finetuning ``seed`` lives: ``OUT/<name, spaces as dashes>-s<seed>``."""
    return out / f"{name.replace(' ', '-')}-s{seed}"


def post_dense_epochs(section: dict[str, Any]) -> float:
    """Training epochs a row spends after the dense model: every phase its ``prune:`` section runs."""
    phases = (section["finetune"], section.get("metanet_finetune", {}), section.get("meta", {}).get("light_finetune", {}))
    return sum(phase.get("epochs", 0) for phase in phases)


def run_method(args: argparse.Namespace, out: Path, dense: Path, name: str, section: dict[str, Any],
               seed: int) -> Path:
    """One ``prune`` run with finetuning ``seed`` (reused when finished earlier, resumed when interrupted);
    returns its folder."""
    folder = run_folder(out, name, seed)
    if RunDir(folder).is_complete():
        return folder
    raw = {**base_recipe(args, out), "output_dir": str(folder),
           "prune": {**section, "base_model": str(dense)}}
    raw["train"]["seed"] = seed
    if section["method"] == "metanet" and seed != args.seeds[0] and not section.get("metanet"):
        # the collection is trained once, by the first seed's run, for all seeds
        raw["prune"]["meta"] = {**section["meta"],
                                "collection": str(run_folder(out, name, args.seeds[0]) / "collection")}
    started = time.perf_counter()
    run_prune(build_recipe(raw, PruneRecipe), resume=folder.is_dir())
    atomic_write_json(folder / "bench_seconds.json", {"seconds": time.perf_counter() - started})
    return folder


def uniform_reference(dense: Path, out: Path, target: float, round_to: int | None) -> tuple[Path, int, float]:
    """The dense model thinned *uniformly* (every layer keeps the same channel fraction) to >= ``target`` MACs
    speed-up, exported to ONNX for latency only (untrained): how fast the runtime makes fewer MACs alone.
    Returns (ONNX path, parameters, MACs speed-up)."""
    model = load_model(dense).eval()
    example = zero_image(model)
    base = count_macs(model, example)

    def thinned(ratio: float) -> torch.nn.Module:
        thin = load_model(dense).eval()
        pruner = tp.pruner.BasePruner(thin, example, importance=tp.importance.GroupMagnitudeImportance(p=2),
                                      pruning_ratio=ratio, round_to=round_to,
                                      ignored_layers=protected_modules(thin, (), example))
        pruner.step()
        return thin

    low, high = 0.0, 0.9
    for _ in range(12):  # bisect the channel ratio to the smallest one that reaches the target
        middle = (low + high) / 2
        low, high = (middle, high) if base / count_macs(thinned(middle), example) < target else (low, middle)
    model = thinned(high)
    path = out / f"uniform{f'-r{round_to}' if round_to else ''}-onnx" / "model.onnx"
    if not path.exists():
        export_onnx(model, path, example_batch={"pixel_values": torch.randn(4, *example.shape[1:])})
    return path, count_parameters(model), base / count_macs(model, example)


def onnx_latency(models: dict[str, Path], image_shape: tuple[int, ...], rounds: int) -> dict[str, dict[str, float]]:
    """Median ONNX Runtime latency (ms) per model and batch size, rounds alternating between the models."""
    sessions = {name: OnnxModel(path) for name, path in models.items()}
    latency = compare_latency({name: (model, lambda b, m=model: example_inputs(m, b, image_shape=image_shape))
                               for name, model in sessions.items()}, LATENCY_BATCHES, min_time_s=2.0 * rounds,
                              rounds=rounds)
    return {name: {batch: stats["median_ms"] for batch, stats in by_batch.items()} for name, by_batch in latency.items()}


def spread(values: list[float]) -> str:
    """``mean ± sample std`` (just the value for one seed)."""
    mean = statistics.mean(values)
    return f"{mean:.2f} ± {statistics.stdev(values):.2f}" if len(values) > 1 else f"{mean:.2f}"


def accuracy_part(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Train the dense model, prune it with every method and seed, export and time the first seed's models;
    rows (mean ± std over seeds) for the table."""
    dense = dense_model(args, out)
    sections = method_runs(args)
    runs = {(name, seed): run_method(args, out, dense, name, section, seed)
            for seed in args.seeds for name, section in sections.items()}
    if args.latency_speedup:  # the same MACs as the latency row reached, by MACs target
        first = json.loads((runs[latency_row(args), args.seeds[0]] / "metrics.json").read_text())
        # the latency row's section with a MACs target instead: fast widths come only with a latency target
        matched = macs_matched_row(args)
        sections[matched] = {**sections[latency_row(args)], "latency_speedup": None,
                             "speedup": round(first["speedup"], 4)}
        runs.update({(matched, seed): run_method(args, out, dense, matched, sections[matched], seed)
                     for seed in args.seeds})
    results = {key: json.loads((folder / "metrics.json").read_text()) for key, folder in runs.items()}
    dense_onnx = out / "dense-onnx" / "model.onnx"
    if not dense_onnx.exists():
        export_source(dense, dense_onnx)
    first = next(iter(results.values()))
    metric = first["primary_metric"]
    dense_score = 100 * first["base"]["dev"][metric]
    uniform, uniform_params, uniform_speedup = uniform_reference(dense, out, args.speedup, args.round_to)
    latency = onnx_latency({"dense": dense_onnx, **{name: runs[name, args.seeds[0]] / "model.onnx" for name in sections},
                            UNIFORM: uniform}, image_shape_of(load_model(dense)), args.latency_rounds)

    def timing(name: str) -> dict[str, float]:
        return {**{f"ORT b{b} ms": latency[name][str(b)] for b in LATENCY_BATCHES},
                **{f"latency speed-up b{b}": latency["dense"][str(b)] / latency[name][str(b)] for b in LATENCY_BATCHES}}

    rows = [{"model": f"dense {args.model}", "post-dense epochs": 0, "pruned, before finetune": "-",
             f"dev {metric}": f"{dense_score:.2f}",
             "drop (points)": "0", "MACs speed-up": 1.0, "params": first["base"]["params"], **timing("dense")}]
    for name, section in sections.items():
        scores = [100 * results[name, seed]["pruned"]["dev"][metric] for seed in args.seeds]
        before = [100 * results[name, seed]["dev_before_finetune"][metric] for seed in args.seeds]
        metrics = results[name, args.seeds[0]]
        rows.append({"model": name, "post-dense epochs": post_dense_epochs(section),
                     "pruned, before finetune": spread(before), f"dev {metric}": spread(scores),
                     "drop (points)": spread([dense_score - score for score in scores]),
                     "MACs speed-up": metrics["speedup"], "params": metrics["pruned"]["params"], **timing(name)})
    rows.append({"model": UNIFORM, "MACs speed-up": uniform_speedup, "params": uniform_params, **timing(UNIFORM)})
    seconds = {f"{name} s{seed}": json.loads((folder / "bench_seconds.json").read_text())["seconds"]
               for (name, seed), folder in runs.items() if (folder / "bench_seconds.json").exists()}
    figures: dict[str, Any] = {"rows": rows, "latency_ms": latency, "wall_seconds": seconds,
                               "dev": {f"{name} s{seed}": metrics["pruned"]["dev"][metric]
                                       for (name, seed), metrics in results.items()}}
    metanet_name = next((name for name, section in sections.items() if section["method"] == "metanet"), None)
    if metanet_name is not None:
        figures["metatrain"] = {}
        for seed in args.seeds:  # a row may have been run with another row's metanetwork (its recipe says)
            given = read_yaml(runs[metanet_name, seed] / "recipe.yaml")["prune"].get("metanet")
            folder = Path(given or runs[metanet_name, seed] / "metanet")
            figures["metatrain"][seed] = json.loads((folder / "metatrain.json").read_text())
    return figures


# ---------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options. Usage: ``parse_args(["--out", "runs/bench-prune", "--only", "cost"])``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/bench-prune", help="folder for the runs and bench_prune*.json")
    parser.add_argument("--only", choices=("cost", "accuracy"), help="run one part (default: both)")
    parser.add_argument("--hidden", type=int, default=64, help="metanetwork width for the cost part")
    parser.add_argument("--layers", type=int, default=8, help="metanetwork layers for the cost part")
    parser.add_argument("--cost-rounds", type=int, default=3)
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--max-train-samples", type=int, default=None)
    parser.add_argument("--speedup", type=float, default=2.5)
    parser.add_argument("--round-to", type=int, default=None,
                        help="prune widths to multiples of N (runs named '... rN'; metanet reuses OUT/metanet's GNN)")
    parser.add_argument("--max-layer-ratio", type=float, default=None,
                        help="no layer loses more than this fraction of its original channels (default: no cap, the "
                             "spec's); rows named '... capR', so capped and uncapped rows can share OUT")
    parser.add_argument("--methods", type=lambda text: text.split(","), default=["metanet", "group-l2", "random"],
                        help="comma-separated rows to run: metanet, group-l2, random")
    parser.add_argument("--optimizer", choices=("sgd", "adamw"), default="sgd")
    parser.add_argument("--max-grad-norm", type=float, default=None, help="gradient clipping (the spec has none)")
    parser.add_argument("--base-epochs", type=float, default=15)
    parser.add_argument("--finetune-epochs", type=float, default=15)
    parser.add_argument("--light-epochs", type=float, default=1)
    parser.add_argument("--metanet-epochs", type=float, default=1)
    parser.add_argument("--finetune-lr", type=float, default=0.01)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--data-models", type=int, default=3, help="collection size (the last is held out)")
    parser.add_argument("--meta-epochs", type=int, default=20)
    parser.add_argument("--meta-lr", type=float, default=1e-3)
    parser.add_argument("--meta-milestones", type=typed_list(int, "meta-epochs"), default=[3],
                        help="meta-epochs after which the lr drops 10x (the spec's 3 is for its 100 epochs; with "
                             "few meta-epochs a later drop lets the norms move)")
    parser.add_argument("--meta-batches", type=int, default=20, help="training batches per meta-step")
    parser.add_argument("--meta-reg", type=float, default=10.0,
                        help="regulariser weight (the spec's 10); if reg_to_ce_grad in metatrain.json shows it "
                             "dwarfing the task loss (~50x on briefly AdamW-trained networks), lower it")
    parser.add_argument("--meta-batch-stats", action="store_true",
                        help="meta-steps normalise BatchNorm with batch statistics, not the data models' stale "
                             "running ones")
    parser.add_argument("--latency-rounds", type=int, default=5)
    parser.add_argument("--latency-speedup", type=float, default=None,
                        help="add a group-l2 row pruned to this measured ONNX Runtime speed-up at batch 64 (fast "
                             "widths, or --round-to's), and a group-l2 row pruned by MACs to the MACs it reached")
    parser.add_argument("--seed", type=int, default=7, help="seed of the dense model and the collection")
    parser.add_argument("--seeds", type=typed_list(int, "seeds"), default=[7, 8],
                        help="finetuning seeds of every method (mean ± std in the table)")
    parser.add_argument("--progress", action="store_true", help="show training progress bars")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the chosen parts; print the tables; write them to ``OUT/bench_prune*.json`` (:func:`table_path`)."""
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"args": vars(args)}
    if args.only in (None, "cost"):
        result["cost"] = metanet_cost(args.hidden, args.layers, 64, args.cost_rounds)
        print_table("metanetwork cost on the light-pruned ResNet-56 graph (this CPU)", cost_rows(result["cost"]))
    if args.only in (None, "accuracy"):
        result["accuracy"] = accuracy_part(args, out)
        rounding = f", widths rounded to multiples of {args.round_to}" if args.round_to else ""
        print_table(f"{args.model} on {args.dataset}, target {args.speedup}x MACs{rounding}",
                    result["accuracy"]["rows"])
        for seed, meta in result["accuracy"].get("metatrain", {}).items():
            kept = meta["history"][meta["best_epoch"]]
            print(f"meta-training (seed {seed}): held-out data model pruned without finetuning, validation accuracy "
                  f"{meta['history'][0]['score']:.4f} with the untrained metanetwork (epoch 0), {kept['score']:.4f} "
                  f"at the kept epoch {meta['best_epoch']}; norm share of the top 40% channels "
                  f"{meta['history'][0].get('concentration', float('nan')):.3f} -> "
                  f"{kept.get('concentration', float('nan')):.3f}")
    atomic_write_json(table_path(args, out), result)
    print(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
