"""The pruning part of ``tools/bench_distill.py`` (``--only prune``): issue 15's rows on SST-2.

Two ways to shrink the fine-tuned MiniLM-L6 teacher (6 layers, 12 heads, FFN 1,536) to about half its MACs:
depth, the KD part's 3-layer student copied from the teacher and distilled with KD + hidden MSE (skip map);
and width, ``prune --finetune-kd`` removing heads and FFN neurons (Taylor importance, heads ranked as groups,
every layer alike) to the student's MACs ratio, then recovering with logit KD + hidden-state MSE of every layer
from the unpruned teacher. Both train on the same data for the same epochs. Rows: dev accuracy, retention
(student / teacher accuracy), MACs ratio and PyTorch latency at batch 1 and 32, the three models timed in
alternating rounds. Goal: the better of the two keeps >= 98% of the teacher at >= 2x measured speed-up.

Usage::

    python tools/bench_distill.py --only prune --glue ../shared/data/glue --out runs/bench-distill
    python tools/bench_distill.py --only prune --sst2-train 4000 --sst2-teacher-epochs 1 --sst2-epochs 1
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Callable

RunOnce = Callable[[str, list[str], Path], dict[str, Any]]
DEPTH, WIDTH = "depth: 3-layer student, KD + MSE", "width: heads + FFN pruned, KD + MSE"


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


def prune_rows(run_once: RunOnce, args: argparse.Namespace, setting: dict[str, Any], out: Path
               ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The teacher, the depth-distilled student and the width-pruned model on SST-2: (table, results)."""
    from bench_distill import ROWS

    base = ["--task", "sst2", "--data-dir", str(setting["data_dir"]), "--select-on", "train-holdout",
            *setting["common"]]
    teacher = run_once("train", ["--model", "minilm-l6", *base, *setting["teacher_args"]], out / "sst2-teacher")
    teacher_dir = out / "sst2-teacher" / "model"
    depth = run_once("distill", ["--teacher", str(out / "sst2-teacher"), "--student-init", "from_teacher",
                                 "--student-layers", "3", *base, *setting["student_args"], *ROWS["KD + MSE"],
                                 "--seed", "1"], out / "sst2-kd-mse-s1")
    macs_ratio = teacher["macs"] / depth["student_figures"]["macs"]
    epochs, lr = setting["student_args"][1], setting["student_args"][3]
    width = run_once("prune", ["--base-model", str(teacher_dir), "--model", str(teacher_dir), *base,
                               "--method", "taylor", "--speedup", f"{macs_ratio:.4f}", "--finetune-kd",
                               "--finetune-epochs", epochs, "--finetune-lr", lr, "--round-to", str(args.round_to),
                               "--set", "prune.curve_points=0", "--seed", "1"], out / "sst2-prune-width")
    seq_len = int(setting["common"][setting["common"].index("--max-length") + 1])
    dirs = {"teacher": teacher_dir, "depth": out / "sst2-kd-mse-s1" / "model", "width": out / "sst2-prune-width" / "model"}
    latency = {size: interleaved_latency(dirs, seq_len, size, min_time_s=args.latency_seconds) for size in (1, 32)}
    primary = teacher["primary_metric"]
    scores = {"teacher": teacher["dev"][primary], "depth": depth["student_dev"][primary],
              "width": width["pruned"]["dev"][primary]}
    macs = {"teacher": teacher["macs"], "depth": depth["student_figures"]["macs"], "width": width["pruned"]["macs"]}
    table = []
    for key, name in (("teacher", "teacher (MiniLM-L6)"), ("depth", DEPTH), ("width", WIDTH)):
        table.append({"task": "sst2", "pipeline": name, primary: scores[key], "retention": scores[key] / scores["teacher"],
                      "MACs ratio": teacher["macs"] / macs[key],
                      **{f"b{size} ms": latency[size][key]["median_ms"] for size in (1, 32)},
                      **{f"b{size} speed-up": latency[size]["teacher"]["median_ms"] / latency[size][key]["median_ms"]
                         for size in (1, 32)}})
    best = max(table[1:], key=lambda row: row[primary])
    goal = {"task": "sst2", "better way": best["pipeline"], "retention": best["retention"],
            "b1 speed-up": best["b1 speed-up"], "goal met (>= 98%, >= 2x)":
            best["retention"] >= 0.98 and best["b1 speed-up"] >= 2.0}
    config = json.loads((dirs["width"] / "config.json").read_text())
    return table, {"table": table, "goal": goal, "latency": latency, "width_prune": width["prune"],
                   "pruned_heads": config.get("pruned_heads"), "intermediate_size": config["intermediate_size"]}


def add_prune_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of the pruning part. Usage: ``add_prune_flags(parser)``."""
    parser.add_argument("--round-to", type=int, default=8, help="pruned FFN widths are multiples of this")
    parser.add_argument("--latency-seconds", type=float, default=10.0, help="timing per batch size and model")


__all__ = ["add_prune_flags", "interleaved_latency", "prune_rows"]
