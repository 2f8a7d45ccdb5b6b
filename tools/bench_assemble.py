"""Benchmark of ``assemble``: Deep Model Assembling against end-to-end training at equal compute.

For each dataset, model and seed, through the ``assemble`` command's own code (:mod:`assemble.phases`): meta
pretraining, the K incubations, assembly, finetuning, then a fresh target trained end to end for the epochs
whose FLOPs equal the whole assembly's (measured per stage; one E2E epoch costs one finetuning epoch). Rows:
accuracy of the meta model, the hybrids (min), the assembly before finetuning, ours after finetuning and
compute-matched E2E; FLOPs, block-epochs and wall-clock of both; and, with ``--concurrent``, the wall-clock
of the K incubations launched together as K ``assemble incubate --module i`` processes on a copy of the
meta model (process start-up included; on a machine with fewer free cores than K they share the cores).

Settings (the spec's small-scale configurations, section 7; AdamW lr 2e-3, wd 0.05, batch 64, cosine,
warm-up 5 epochs, meta 40 epochs, incubation 20 per module, finetune 20 with warm-up 0 and drop-path 0.1;
no label smoothing or noise augmentation, which the toolkit's image pipeline does not have):

* ``digits``: scikit-learn's bundled 8x8 digits (718 train / 1,079 dev), patch 2 (16 tokens + CLS): the
  fastest setting. ``fashion-mnist``: 28x28, patch 4 (49 tokens + CLS), from its idx files.
* ``deep``: deep-narrow ViT, 48 blocks, width 32, 2 heads (spec config B); ``wide``: 16 blocks, width 64,
  4 heads (config A). K = 4. The spec's expectation: assembly beats compute-matched E2E on the deep
  model (where 48-block E2E training is slow), not on the moderate one; both are reported either way.
  ``small``: the test suite's setting (8 blocks, width 32, MLP ratio 2; batch 32; meta 20, incubation 10,
  finetune 6 epochs), minutes on a CPU.

Usage::

    python tools/bench_assemble.py --out runs/bench-assemble --datasets digits --seeds 0 1
    python tools/bench_assemble.py --out runs/bench-assemble-small --models small --seeds 0 1 --concurrent
    python tools/bench_assemble.py --out runs/bench-assemble --datasets fashion-mnist --max-train-samples 10000 \
        --concurrent
    python tools/bench_assemble.py --out runs/bench-assemble-quick --models wide --scale 0.25  # 1/4 of the epochs
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from assemble.config import AssembleRecipe  # noqa: E402
from assemble.phases import PHASES, open_root, prepare_assembly, run_phases  # noqa: E402
from assemble.summary import summarize  # noqa: E402
from shrink.recipe import build_recipe  # noqa: E402
from shrink.report import markdown_table, print_table  # noqa: E402

SPEC_EPOCHS = {"meta": 40, "incubate": 20, "finetune": 20}
# name -> (ViT shape, epochs per phase, batch size)
MODELS = {"deep": ({"depth": 48, "dim": 32, "heads": 2}, SPEC_EPOCHS, 64),
          "wide": ({"depth": 16, "dim": 64, "heads": 4}, SPEC_EPOCHS, 64),
          "small": ({"depth": 8, "dim": 32, "heads": 2, "mlp_ratio": 2.0}, {"meta": 20, "incubate": 10, "finetune": 6},
                    32)}
PATCH = {"digits": 2, "fashion-mnist": 4}


def recipe_for(dataset: str, model: str, seed: int, args: argparse.Namespace, out: Path) -> AssembleRecipe:
    """The spec's small-scale recipe for one run. Usage: ``recipe_for("digits", "deep", 0, args, out)``."""
    shape, phase_epochs, batch_size = MODELS[model]
    epochs = {phase: max(1.0, round(value * args.scale, 2)) for phase, value in phase_epochs.items()}
    return build_recipe({
        "model": {"name": "vit-micro", "args": {**shape, "patch_size": PATCH[dataset]}},
        "data": {"dataset": dataset, "max_train_samples": args.max_train_samples,
                 "max_eval_samples": args.max_eval_samples, "augment": False},
        "train": {"lr": 2e-3, "batch_size": batch_size, "weight_decay": 0.05, "schedule": "cosine",
                  "warmup_ratio": 0.125,
                  "seed": seed, "progress": False, "verbosity": "quiet", "max_grad_norm": None},  # warm-up: 5 of 40
        "assemble": {"modules": 4, "meta": {"epochs": epochs["meta"]},
                     "incubate": {"epochs": epochs["incubate"], "warmup_ratio": 0.25, "drop_path": 0.1},
                     "finetune": {"epochs": epochs["finetune"], "warmup_ratio": 0.0, "drop_path": 0.1},
                     "run_e2e": True, "e2e": {"drop_path": 0.1}},
        "output_dir": str(out),
    }, AssembleRecipe)


def concurrent_incubation_s(root: Path, modules: int, threads: int) -> tuple[float, float]:
    """Wall-clock of the K incubations launched at once as processes, on a copy of ``root``'s meta model:
    from launch to the last exit (start-up included), and the longest one's training time."""
    copy = root.parent / f"{root.name}-concurrent"
    shutil.rmtree(copy, ignore_errors=True)
    copy.mkdir()
    shutil.copy(root / "recipe.yaml", copy / "recipe.yaml")
    shutil.copytree(root / "meta", copy / "meta")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(threads)}
    started = time.perf_counter()
    jobs = [subprocess.Popen([sys.executable, "-m", "assemble", "incubate", "--module", str(i), "--recipe",
                              str(copy / "recipe.yaml"), "--out", str(copy), "--quiet"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for i in range(modules)]
    for job in jobs:
        _, err = job.communicate()
        if job.returncode:
            raise RuntimeError(f"incubation process failed: {err.strip().splitlines()[-1] if err else job.returncode}")
    total = time.perf_counter() - started
    trained = [json.loads((copy / f"incubate-{i}" / "metrics.json").read_text())["wall_clock_s"]
               for i in range(modules)]
    return total, max(trained)


def one_run(dataset: str, model: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Assemble, finetune and train compute-matched E2E once (reused when already complete)."""
    out = args.out / f"{dataset}-{model}-s{seed}"
    recipe = recipe_for(dataset, model, seed, args, out)
    assembly = prepare_assembly(recipe)
    assembly.trainer.track_dev = False  # the history keeps losses; dev is scored once per phase
    open_root(assembly)
    if not (out / "metrics.json").is_file():
        run_phases(assembly, list(PHASES))
        summarize(assembly)
    metrics = json.loads((out / "metrics.json").read_text())
    cost = metrics["cost"]
    row = {"dataset": dataset, "model": model, "seed": seed, "meta": metrics["meta_dev"]["accuracy"],
           "hybrid min": min(h["accuracy"] for h in metrics["hybrid_dev"]),
           "assembled": metrics["dev_before_finetune"]["accuracy"], "ours": metrics["dev"]["accuracy"],
           "e2e": metrics["e2e"]["dev"]["accuracy"], "e2e epochs": metrics["e2e"]["epochs"],
           "ours GFLOPs": cost["ours"]["train_flops"] / 1e9, "e2e GFLOPs": metrics["e2e"]["train_flops"] / 1e9,
           "ours block-epochs": cost["ours"]["block_epochs"], "e2e block-epochs": metrics["e2e"]["block_epochs"],
           "ours s": cost["ours_wall_clock_s"], "ours s (MT parallel)": cost["ours_wall_clock_concurrent_s"],
           "e2e s": metrics["e2e"]["wall_clock_s"], "MT s (sum)": sum(cost["incubation_wall_clock_s"])}
    if args.concurrent:
        row["MT s (K processes)"], row["MT s (K processes, longest training)"] = concurrent_incubation_s(
            out, assembly.builder.modules, args.threads)
    return row


def mean_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (dataset, model): the mean of every number over the seeds."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["dataset"], row["model"]), []).append(row)
    means = []
    for (dataset, model), group in groups.items():
        mean = {"dataset": dataset, "model": model, "seeds": len(group)}
        for key, value in group[0].items():
            if isinstance(value, float) and key != "seed":
                mean[key] = statistics.mean(row[key] for row in group)
        means.append(mean)
    return means


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench-assemble"))
    parser.add_argument("--datasets", nargs="+", default=["digits"], choices=sorted(PATCH))
    parser.add_argument("--models", nargs="+", default=["deep", "wide"], choices=sorted(MODELS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every phase's epochs (quick runs)")
    parser.add_argument("--max-train-samples", type=int, help="a seeded subset of the training split")
    parser.add_argument("--max-eval-samples", type=int, help="a seeded subset of the dev split")
    parser.add_argument("--concurrent", action="store_true", help="also time the K incubations as K processes")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (1: the spec's setup)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for dataset in args.datasets:
        for model in args.models:
            for seed in args.seeds:
                rows.append(one_run(dataset, model, seed, args))
                write_tables(args, rows)  # after every run: a long benchmark stopped early keeps its rows
    print_table("assemble vs compute-matched E2E, per seed", rows)
    print_table("means over seeds", mean_rows(rows))


def write_tables(args: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    """bench.json and bench.md in ``--out``: the rows so far and their means over seeds."""
    means = mean_rows(rows)
    (args.out / "bench.json").write_text(json.dumps({"rows": rows, "means": means, "args": {
        key: str(value) for key, value in vars(args).items()}}, indent=2) + "\n")
    (args.out / "bench.md").write_text("# assemble benchmark\n\n## Per seed\n\n" + markdown_table(rows)
                                       + "\n## Means\n\n" + markdown_table(means))


if __name__ == "__main__":
    main()
