"""AutoDistiller benchmark (issue 12): grid vs search, recommender leave-task-out, 1 vs 2 workers.

A small enumerable space (12 pipelines: KD kl/mse x hard-label weight 0/0.5 x intermediate none/pkd/MI-alpha
0.9) distils the pip-installed MiniLM-L6 (fine-tuned on the task subset first) into a 3-layer copy of it
on GLUE task subsets.

* **grid**: every pipeline once per task (the ground truth; also the prior table's rows);
* **search**: TPE + Hyperband over the grid's space with a time budget of a quarter of the grid's measured
  compute (less one epoch, the most a running trial overruns ``--timeout``), per seed; then the same search
  warm-started by ``--recommend`` learning from the *other* tasks' grids only (as on a new dataset);
  reports best-of-grid, best found and compute spent;
* **recommend**: for each task, a regressor trained on the *other* tasks' grids ranks this task's
  pipelines; reports the best real score among its top 3 against best-of-grid;
* **workers**: the same number of trials with one worker, then with two worker processes on one storage
  (``--storage``, PostgreSQL for the issue's measurement; SQLite by default); reports the wall-time ratio.

``--write-prior FILE`` writes the grids' trial tables as the prior table ``--recommend`` ships with.

Usage::

    python tools/bench_autodistill.py --out runs/bench-auto --tasks rte,sst2 --train 256 --dev 200 --seeds 3
    python tools/bench_autodistill.py --out runs/bench-auto --stages workers --storage postgresql://u@h/db
    python tools/bench_autodistill.py --out runs/bench-auto --stages grid --write-prior distill/auto/prior_trials.csv
    python tools/bench_autodistill.py --teacher sst2=runs/bench-distill-full/sst2-teacher \
        --teacher rte=runs/bench-distill-full/rte-teacher --train 2000 --max-length 64 --stages grid,recommend
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from distill.auto import AutoDistillRecipe, run_auto  # noqa: E402
from distill.auto.outputs import table_csv  # noqa: E402
from distill.auto.recommend import candidates, rank, read_trial_table  # noqa: E402
from distill.auto.space import build_space  # noqa: E402
from distill.auto.study import open_storage, open_study  # noqa: E402
from shrink.recipe import build_recipe  # noqa: E402
from shrink.report import print_table  # noqa: E402
from shrink.runs import atomic_write_json, atomic_write_text  # noqa: E402

TASK_FOLDERS = {"rte": "RTE", "sst2": "SST-2"}
GRID_SPACE = {"kd_loss": ["kl", "mse"], "temperature": [2.0], "hard_weight": [0.0, 0.5],
              "intermediate": ["none", "pkd", "mi"], "alpha": [0.9], "critic": ["mlp"], "layer_map": ["skip"],
              "inter_weight": [0.1], "lr": [1e-4],
              # no augmentation: without these two the grid enumerated every policy (thousands of pipelines)
              "augment_policy": ["none"], "mixup": [False]}


def given_teacher(task: str, args: argparse.Namespace) -> str | None:
    """The fine-tuned teacher ``--teacher TASK=DIR`` names for ``task`` (a path, resolved), or None."""
    for entry in args.teacher:
        name, _, folder = entry.partition("=")
        if name == task:
            return str(Path(folder).resolve())
    return None


def tuned_teacher(task: str, args: argparse.Namespace) -> str:
    """The teacher the grid used: the given one, else the one the grid fine-tuned on the task subset."""
    return given_teacher(task, args) or str((Path(args.out) / task / "grid" / "teacher").resolve())


def base_recipe(task: str, args: argparse.Namespace, teacher: str | None = None) -> dict[str, Any]:
    """The raw recipe every study of ``task`` starts from: the given teacher, else MiniLM-L6 fine-tuned first."""
    teacher = teacher or given_teacher(task, args) or "minilm-l6"
    return {
        "data": {"dataset": task, "data_dir": str(Path(args.data_root) / TASK_FOLDERS[task]),
                 "max_length": args.max_length, "max_train_samples": args.train, "max_eval_samples": args.dev},
        "train": {"epochs": args.epochs, "batch_size": 16, "lr": 1e-4, "warmup_ratio": 0.1, "progress": False,
                  "seed": 42},
        "distill": {"teacher": teacher, "student_init": "from_teacher", "student_layers": 3,
                    "teacher_train": {"epochs": 3, "lr": 5e-5}},
        # epochs fixed at --epochs in every study: the search's pruner, not its sampler, shortens trials
        "auto": {"space": {**GRID_SPACE, "epochs": [args.epochs]}},
    }


def study(raw: dict[str, Any], out: Path, **auto: Any) -> AutoDistillRecipe:
    raw = {**raw, "output_dir": str(out), "auto": {**raw["auto"], **auto}}
    return build_recipe(raw, AutoDistillRecipe, source="bench")


def run_grid(task: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every pipeline of the grid space once (epochs fixed at --epochs); returns the trial rows."""
    raw = base_recipe(task, args)
    folder = Path(args.out) / task / "grid"
    recipe = study(raw, folder, sampler="random", pruner="none", study_name="grid")
    space = build_space(recipe.distill_recipe(), False, recipe.auto.space)
    grid = candidates(space, 10_000)
    recipe.auto.trials = len(grid)
    folder.mkdir(parents=True, exist_ok=True)
    storage = open_storage(f"sqlite:///{(folder / 'study.db').resolve()}", recipe.auto)
    opened = open_study(recipe.auto, storage, "grid", space, ["maximize"])
    if not opened.trials:
        for params in grid:
            opened.enqueue_trial(params)
    run_auto(recipe, resume=(folder / "metrics.json").is_file())
    return read_trial_table(folder / "trials.csv")


def compute_s(rows: list[dict[str, Any]]) -> float:
    """Seconds of trial compute the study's rows spent (unfinished trials count nothing)."""
    return sum(float(r["wall_s"] or 0) for r in rows)


def best(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return max((r for r in rows if r["state"] == "complete"), key=lambda r: r["retention"])


def run_search(task: str, args: argparse.Namespace, grids: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """TPE + Hyperband per seed with a quarter of the grid's compute as its time budget (less one epoch, the most
    a running trial overruns it), cold and warm-started by the recommender trained on the other tasks' grids."""
    grid = grids[task]
    grid_compute = compute_s(grid)
    # --timeout stops a running trial at its next epoch's end: keep one grid epoch in hand for that overrun
    epoch_s = statistics.median(float(r["wall_s"]) for r in grid if r["state"] == "complete") / args.epochs
    teacher = tuned_teacher(task, args)
    others = [str((Path(args.out) / other / "grid" / "trials.csv").resolve()) for other in grids if other != task]
    starts = {"search": {}, "search-rec": {"recommend": True, "use_shipped_prior": False, "priors": others}}
    results = []
    for prefix, warm in starts.items():
        if warm and not others:
            continue  # the recommender needs another task's grid to learn from
        for seed in range(args.seeds):
            folder = Path(args.out) / task / f"{prefix}-{seed}"
            raw = base_recipe(task, args, teacher)
            recipe = study(raw, folder, trials=1000, timeout=grid_compute / 4 - epoch_s, seed=seed,
                           study_name=f"{prefix}-{seed}", **warm)
            outcome = run_auto(recipe, resume=(folder / "metrics.json").is_file())
            rows = read_trial_table(folder / "trials.csv")
            found = best(rows)
            results.append({"task": task, "warm start": "recommender" if warm else "-", "seed": seed,
                            "trials": len(rows), "pruned": sum(r["state"] == "pruned" for r in rows),
                            "best of grid": best(grid)["retention"], "best found": found["retention"],
                            "gap (points of dev)": 100 * (float(best(grid)["student_score"])
                                                          - float(found["student_score"])),
                            "compute / grid": compute_s(rows) / grid_compute,
                            "best trial params": found["params"], "study": str(outcome.folder)})
    return results


def leave_task_out(grids: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Rank each task's grid with a regressor trained on the other tasks' grids only."""
    results = []
    for task, rows in grids.items():
        train = [r for other, table in grids.items() if other != task for r in table
                 if r["retention"] is not None]
        done = [r for r in rows if r["state"] == "complete"]
        ranked = rank(train, [r["params"] for r in done], done[0]["meta_features"])
        by_params = {json.dumps(r["params"], sort_keys=True): r for r in done}
        top3 = [by_params[json.dumps(params, sort_keys=True)] for _, params in ranked[:3]]
        chosen = max(top3, key=lambda r: float(r["student_score"]))
        results.append({"task": task, "trained on": ",".join(t for t in grids if t != task),
                        "best of grid dev": float(best(rows)["student_score"]),
                        "best of top-3 dev": float(chosen["student_score"]),
                        "gap (points)": 100 * (float(best(rows)["student_score"]) - float(chosen["student_score"])),
                        "rank of grid best": 1 + [json.dumps(p, sort_keys=True) for _, p in ranked].index(
                            json.dumps(best(rows)["params"], sort_keys=True))})
    return results


def run_workers(task: str, args: argparse.Namespace) -> dict[str, Any]:
    """Wall time of ``--worker-trials`` trials with one worker, then with two, on one storage."""
    folder = Path(args.out) / task / "workers"
    folder.mkdir(parents=True, exist_ok=True)
    tuned = Path(tuned_teacher(task, args))
    raw = base_recipe(task, args, str(tuned) if (tuned / "model").is_dir() or (tuned / "config.json").is_file()
                      else "minilm-l6")
    raw["auto"]["pruner"] = "none"
    recipe_file = folder / "recipe.yaml"
    recipe_file.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    storage = args.storage or f"sqlite:///{(folder / 'workers.db').resolve()}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    walls = {}
    for count in (1, 2):
        name = f"workers{count}-{uuid.uuid4().hex[:6]}"
        command = [sys.executable, "-m", "distill", "--auto", "--recipe", str(recipe_file), "--storage", storage,
                   "--study-name", name, "--trials", str(args.worker_trials), "--out", str(folder / name)]
        started = time.perf_counter()
        procs = [subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL) for _ in range(count)]
        codes = [p.wait() for p in procs]
        walls[count] = time.perf_counter() - started
        if any(codes):
            raise SystemExit(f"a worker failed ({codes}); see {folder / name}")
    return {"task": task, "storage": storage.split("://")[0], "trials": args.worker_trials,
            "1 worker s": walls[1], "2 workers s": walls[2], "ratio 2/1": walls[2] / walls[1],
            "cpu cores": os.cpu_count()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/bench-autodistill")
    parser.add_argument("--tasks", default="rte,sst2")
    parser.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data" / "glue"))
    parser.add_argument("--train", type=int, default=256, help="training examples per task")
    parser.add_argument("--dev", type=int, default=200, help="dev examples per task")
    parser.add_argument("--max-length", type=int, default=48)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--stages", default="grid,search,recommend,workers")
    parser.add_argument("--storage", help="storage of the workers stage (default: SQLite in --out)")
    parser.add_argument("--worker-trials", type=int, default=4)
    parser.add_argument("--write-prior", help="write the grids' trial tables to this CSV (the shipped prior)")
    parser.add_argument("--teacher", action="append", default=[], metavar="TASK=DIR",
                        help="a teacher already fine-tuned on TASK (e.g. on the full training set: a `shrink train` "
                             "run); default: MiniLM-L6 fine-tuned on the --train subset, which stays near chance")
    args = parser.parse_args()
    stages, tasks = args.stages.split(","), args.tasks.split(",")
    results: dict[str, Any] = {"settings": vars(args)}
    grids: dict[str, list[dict[str, Any]]] = {}
    if {"grid", "search", "recommend"} & set(stages) or args.write_prior:  # these build on the grids
        grids = {task: run_grid(task, args) for task in tasks}
        results["grid"] = [{"task": t, "pipelines": len(rows), "best of grid": best(rows)["retention"],
                            "compute s": compute_s(rows)} for t, rows in grids.items()]
    if "search" in stages:
        results["search"] = run_search(tasks[0], args, grids)
    if "recommend" in stages and len(tasks) > 1:
        results["recommend"] = leave_task_out(grids)
    if "workers" in stages:
        results["workers"] = run_workers(tasks[0], args)
    if args.write_prior:
        shipped = [{**row, "run_dir": ""} for rows in grids.values() for row in rows]  # paths of this machine
        atomic_write_text(args.write_prior, table_csv(shipped))
    atomic_write_json(Path(args.out) / f"bench-{'-'.join(stages)}.json", results)
    for key in ("grid", "search", "recommend", "workers"):
        if key in results:
            rows = results[key] if isinstance(results[key], list) else [results[key]]
            print_table(f"autodistill {key}", [{k: v for k, v in r.items() if k not in ("best trial params", "study")}
                                                for r in rows])


if __name__ == "__main__":
    main()
