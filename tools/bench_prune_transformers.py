r"""The pruning part of ``tools/bench_distill.py`` (``--only prune``): issue 15's rows on SST-2.

Two ways to shrink the fine-tuned MiniLM-L6 teacher (6 layers, 12 heads, FFN 1,536) to about half its MACs: depth,
the KD part's 3-layer student copied from the teacher and distilled with KD + hidden MSE (skip map); and width,
``prune --finetune-kd`` removing heads and FFN neurons (Taylor importance, heads ranked as groups, every layer
alike) to the student's MACs ratio, then recovering with logit KD + hidden-state MSE of every layer from the
unpruned teacher; and both, ``prune --drop-layers 2`` removing the two layers of least Block Influence first and
then widths to the same MACs (Minitron's combination); and width at depth's *measured* speed-up, ``prune
--latency-speedup`` on PyTorch at batch 1 to the depth student's speed-up over the teacher (measured once, kept in
OUT/sst2-depth-speedup.json so a resumed run prunes to the same target). All train on the same data for the same
epochs, each with the ``--sst2-seeds`` seeds. Rows: dev accuracy (mean and spread over seeds), retention (student /
teacher accuracy), MACs ratio and PyTorch latency at batch 1 and 32 of the first seed's models, timed in alternating
rounds. Goal: the most accurate row at >= 2x batch-1 speed-up keeps >= 98% of the teacher.

Usage::

    python tools/bench_distill.py --only prune --glue ../shared/data/glue --out runs/bench-distill
    python tools/bench_distill.py --only prune --sst2-train 4000 --sst2-teacher-epochs 1 --sst2-epochs 1
    python tools/bench_distill.py --only prune --out runs/bench-distill-16k-e2 --sst2-train 16000 \
        --sst2-teacher-epochs 1 --sst2-epochs 2 --sst2-seeds 2 --latency-seconds 5
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from glue_runs import KD_ROWS, run_once, seed_columns, student_flags, task_flags
from shrink.runs import atomic_write_json

TEACHER = "teacher (MiniLM-L6)"
DEPTH = "depth: 3-layer student, KD + MSE"


def pruned_rows(macs_ratio: float, depth_speedup: float) -> dict[str, tuple[str, list[str]]]:
    """The pruned rows, name -> (run folder, prune flags): three at the depth student's MACs ratio or speed-up."""
    at_macs = ["--speedup", f"{macs_ratio:.4f}"]
    return {"width: heads + FFN pruned, KD + MSE": ("sst2-prune-width", at_macs),
            "depth + width: 2 layers dropped, then heads + FFN, KD + MSE": ("sst2-prune-depth2-width",
                                                                           ["--drop-layers", "2", *at_macs]),
            "width at depth's measured speed-up, KD + MSE": ("sst2-prune-width-latency", [
                "--latency-speedup", f"{depth_speedup:.2f}", "--latency-runtime", "torch", "--latency-batch", "1"])}


def interleaved_latency(dirs: dict[str, Path], seq_len: int, batch_size: int = 1, rounds: int = 5,
                        min_time_s: float = 10.0) -> dict[str, dict[str, Any]]:
    """PyTorch latency of each saved model at ``batch_size``, timed in alternating rounds so machine noise hits
    all alike. Usage: ``interleaved_latency({"teacher": t, "student": s}, 64)["student"]["median_ms"]``
    """
    from shrink.bench import example_inputs
    from shrink.models import load_model
    from shrink.timing import time_interleaved

    models = {name: load_model(folder).eval() for name, folder in dirs.items()}
    inputs = example_inputs(next(iter(models.values())), batch_size, seq_len=seq_len)
    return time_interleaved({name: lambda model=model: model(**inputs) for name, model in models.items()},
                            min_time_s=min_time_s, rounds=rounds)


def prune_rows(args: argparse.Namespace, setting: dict[str, Any], out: Path
               ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The teacher, the depth-distilled student and the pruned models on SST-2, each row over the setting's seeds
    (mean and spread of dev accuracy; latency and architecture of the first seed's models): (table, results)."""
    base = task_flags("sst2", setting["data_dir"], setting["common"])
    teacher = run_once("train", ["--model", "minilm-l6", *base, *setting["teacher_args"]], out / "sst2-teacher")
    teacher_dir = out / "sst2-teacher" / "model"
    seeds = setting["seeds"]
    depth = {seed: run_once("distill", [*student_flags(out / "sst2-teacher", seed), *base, *setting["student_args"],
                                        *KD_ROWS["KD + MSE"]], out / f"sst2-kd-mse-s{seed}") for seed in seeds}
    first = seeds[0]
    macs_ratio = teacher["macs"] / depth[first]["student_figures"]["macs"]
    seq_len = int(setting["common"][setting["common"].index("--max-length") + 1])
    depth_dir = out / f"sst2-kd-mse-s{first}" / "model"
    rows = pruned_rows(macs_ratio, depth_speedup(out, teacher_dir, depth_dir, seq_len, args.latency_seconds))
    student = setting["student_args"]  # the pruned models finetune as the student trains
    epochs, lr = student[student.index("--epochs") + 1], student[student.index("--lr") + 1]
    grouping = ["--group-by-length"] if "--group-by-length" in student else []
    pruned = {name: {seed: run_once("prune", [
        "--base-model", str(teacher_dir), "--model", str(teacher_dir), *base, "--method", "taylor", "--finetune-kd",
        "--finetune-epochs", epochs, "--finetune-lr", lr, "--round-to", str(args.round_to), *grouping, *flags,
        "--set", "prune.curve_points=0", "--seed", str(seed)], out / f"{folder}-s{seed}") for seed in seeds}
        for name, (folder, flags) in rows.items()}
    dirs = {TEACHER: teacher_dir, DEPTH: depth_dir,
            **{name: out / f"{folder}-s{first}" / "model" for name, (folder, _) in rows.items()}}
    latency = {size: interleaved_latency(dirs, seq_len, size, min_time_s=args.latency_seconds) for size in (1, 32)}
    primary = teacher["primary_metric"]
    figures = {TEACHER: ([teacher["dev"][primary]], teacher["macs"]),
               DEPTH: ([run["student_dev"][primary] for run in depth.values()],
                       depth[first]["student_figures"]["macs"]),
               **{name: ([run["pruned"]["dev"][primary] for run in runs.values()], runs[first]["pruned"]["macs"])
                  for name, runs in pruned.items()}}
    teacher_score = teacher["dev"][primary]
    table = []
    for name, (scores, macs) in figures.items():
        table.append({"task": "sst2", "pipeline": name, **seed_columns(primary, scores),
                      "retention": statistics.mean(scores) / teacher_score, "MACs ratio": teacher["macs"] / macs,
                      **{f"b{size} ms": latency[size][name]["median_ms"] for size in (1, 32)},
                      **{f"b{size} speed-up": latency[size][TEACHER]["median_ms"]
                         / latency[size][name]["median_ms"] for size in (1, 32)}})
    best = max(table[1:], key=lambda row: (row["b1 speed-up"] >= 2.0, row[primary]))
    goal = {"task": "sst2", "best way at >= 2x": best["pipeline"], "retention": best["retention"],
            "b1 speed-up": best["b1 speed-up"], "goal met (>= 98%, >= 2x)":
            best["retention"] >= 0.98 and best["b1 speed-up"] >= 2.0}
    configs = {name: json.loads((dirs[name] / "config.json").read_text()) for name in rows}
    return table, {"table": table, "goal": goal, "latency": latency,
                   "pruned": {name: {"prune": runs[first]["prune"], "depth": runs[first].get("depth"),
                                     "layers": configs[name]["num_hidden_layers"],
                                     "pruned_heads": configs[name].get("pruned_heads"),
                                     "intermediate_size": configs[name]["intermediate_size"],
                                     "dev": {seed: run["pruned"]["dev"][primary] for seed, run in runs.items()}}
                              for name, runs in pruned.items()}}


def depth_speedup(out: Path, teacher_dir: Path, depth_dir: Path, seq_len: int, seconds: float) -> float:
    """The depth student's PyTorch batch-1 speed-up over the teacher, measured on the first call and read back
    from OUT/sst2-depth-speedup.json after (a resumed latency-target prune must keep its target)."""
    path = out / "sst2-depth-speedup.json"
    if not path.exists():
        stats = interleaved_latency({TEACHER: teacher_dir, DEPTH: depth_dir}, seq_len, 1, min_time_s=seconds)
        atomic_write_json(path, {"b1 speed-up": stats[TEACHER]["median_ms"] / stats[DEPTH]["median_ms"],
                                 "latency": stats})
    return json.loads(path.read_text())["b1 speed-up"]


def add_prune_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of the pruning part. Usage: ``add_prune_flags(parser)``."""
    parser.add_argument("--round-to", type=int, default=8, help="pruned FFN widths are multiples of this")
    parser.add_argument("--latency-seconds", type=float, default=10.0, help="timing per batch size and model")


__all__ = ["add_prune_flags", "interleaved_latency", "prune_rows"]
