"""What the GLUE benchmarks share (tools/bench_distill.py, bench_augment.py, bench_prune_transformers.py): one run
per folder, reused when complete and resumed when interrupted; the flags every row of a task shares; the KD rows;
a results file that keeps the tasks of earlier invocations.

Usage::

    from glue_runs import run_once, student_flags, task_flags
    base = task_flags("rte", data_dir, ["--max-length", "128"])
    teacher = run_once("train", ["--model", "minilm-l6", *base], out / "rte-teacher")
    row = run_once("distill", [*student_flags(out / "rte-teacher", seed=1), *base], out / "rte-kd-s1")
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from shrink.runs import RunDir, atomic_write_json

KD_ROWS: dict[str, list[str]] = {
    "no distillation": ["--kd-weight", "0", "--hard-weight", "1", "--intermediate", "none"],
    "KD": ["--kd-loss", "kl", "--temperature", "2", "--intermediate", "none"],
    "KD + MSE": ["--kd-loss", "kl", "--temperature", "2", "--intermediate", "hidden_mse", "--layer-map", "skip"],
    "KD + MI-alpha": ["--kd-loss", "kl", "--temperature", "2", "--intermediate", "mi", "--alpha", "0.9",
                      "--critic", "mlp", "--layer-map", "skip"],
}


def run_once(command: str, args: list[str], out: Path) -> dict[str, Any]:
    """Run ``shrink train``, ``distill`` or ``prune`` into ``out`` unless a complete run is there; return its metrics."""
    if not RunDir(out).is_complete():
        if command == "distill":
            from distill.cli import main
        elif command == "prune":
            from prune.cli import main
        else:
            from shrink.cli import main
            args = ["train", *args]
        started = (out / "recipe.yaml").exists()  # an interrupted run continues from its checkpoint
        main([*args, "--out", str(out), "--resume" if started else "--overwrite", "--no-progress"])
    return json.loads((out / "metrics.json").read_text())


def task_flags(task: str, data_dir: Path, common: list[str]) -> list[str]:
    """The flags every run of ``task`` shares, teacher and students alike."""
    # the best epoch is chosen on a training holdout, so the dev scores compared are not selected on
    return ["--task", task, "--data-dir", str(data_dir), "--select-on", "train-holdout", *common]


def student_flags(teacher_run: Path, seed: int) -> list[str]:
    """A 3-layer student copied from the teacher of the run folder ``teacher_run``, trained with ``seed``."""
    return ["--teacher", str(teacher_run), "--student-init", "from_teacher", "--student-layers", "3",
            "--seed", str(seed)]


def seed_columns(primary: str, scores: list[float]) -> dict[str, Any]:
    """A table row's seed count, mean ``primary`` score and spread (sample standard deviation; 0 for one seed).
    Usage: ``{"pipeline": name, **seed_columns("accuracy", [0.85, 0.86])}``"""
    return {"seeds": len(scores), primary: statistics.mean(scores),
            "spread": statistics.stdev(scores) if len(scores) > 1 else 0.0}


def write_results(path: Path, results: dict[str, Any]) -> dict[str, Any]:
    """Merge ``results`` into the JSON at ``path`` (an earlier invocation's other tasks stay) and return the whole."""
    merged = {**(json.loads(path.read_text()) if path.exists() else {}), **results}
    atomic_write_json(path, merged)
    return merged


__all__ = ["KD_ROWS", "run_once", "seed_columns", "student_flags", "task_flags", "write_results"]
