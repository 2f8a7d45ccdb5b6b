"""What a study leaves in its folder: the trial table, the best pipeline as a recipe, plots, metrics, report.

``STUDY/trials.csv`` (state, params, scores, latency, wall time, meta-features: a table the recommender can
learn from), ``STUDY/best_recipe.yaml`` (``distill --recipe`` reruns it), Optuna's matplotlib plots as PNG
(optimisation history, parameter importances; the Pareto front when multi-objective), ``metrics.json`` and
``report.md``. Every worker rewrites them (atomically) when it stops, so the last one leaves the whole study.

Usage::

    outputs = write_outputs(study, space, Path("runs/auto-demo"), recipe.auto, "sqlite:///...")
"""
from __future__ import annotations

import csv
import io
import json
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from distill.auto.config import AutoSection
from distill.auto.recommend import TABLE_COLUMNS
from distill.auto.space import SearchSpace, apply_params
from shrink.recipe import save_recipe
from shrink.report import markdown_table, print_table
from shrink.runs import atomic_write_bytes, atomic_write_json, atomic_write_text

BEST_RECIPE, TABLE_FILE = "best_recipe.yaml", "trials.csv"
SHOWN_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING)


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """One trial-table row per trial (see recommend.TABLE_COLUMNS). Usage: ``trial_rows(study)[0]["state"]``."""
    meta = study.user_attrs.get("meta_features", {})
    rows = []
    for trial in study.get_trials(deepcopy=False, states=SHOWN_STATES):
        attrs = trial.user_attrs
        rows.append({"task": study.user_attrs.get("task"), "study": study.study_name, "number": trial.number,
                     "state": trial.state.name.lower(), "retention": attrs.get("retention"),
                     "student_score": attrs.get("student_score"), "teacher_score": attrs.get("teacher_score"),
                     "latency": attrs.get("latency"), "size": attrs.get("size"), "wall_s": attrs.get("wall_s"),
                     "params": trial.params, "meta_features": meta, "run_dir": attrs.get("run_dir")})
    return rows


def table_csv(rows: list[dict[str, Any]]) -> str:
    """Rows as CSV text, params and meta-features as JSON. Usage: ``table_csv(trial_rows(study))``."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=TABLE_COLUMNS)
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "params": json.dumps(row["params"], sort_keys=True),
                         "meta_features": json.dumps(row["meta_features"], sort_keys=True)})
    return out.getvalue()


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The best complete trial; multi-objective: the Pareto-front trial with the highest score."""
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return None
    if len(study.directions) == 1:
        return study.best_trial
    return max(study.best_trials, key=lambda trial: trial.values[0])


def write_plots(study: optuna.Study, folder: Path) -> dict[str, str]:
    """Optuna's matplotlib plots as PNG; a plot the study cannot draw yet is named with the reason."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as views

    multi = len(study.directions) > 1
    names = {"pareto_front": lambda: views.plot_pareto_front(study, target_names=["retention", "cost"])} if multi \
        else {"optimization_history": lambda: views.plot_optimization_history(study),
              "param_importances": lambda: views.plot_param_importances(study)}
    written = {}
    for name, draw in names.items():
        try:
            with warnings.catch_warnings():  # importance estimates on few trials warn per parameter
                warnings.simplefilter("ignore")
                axes = draw()
        except (ValueError, RuntimeError, ZeroDivisionError) as err:  # too few finished trials for this plot
            written[name] = f"not drawn: {err}"
            continue
        figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
        plt.close(figure)
        atomic_write_bytes(folder / f"{name}.png", buffer.getvalue())
        written[name] = f"{name}.png"
    return written


def write_outputs(study: optuna.Study, space: SearchSpace, folder: Path, auto: AutoSection,
                  storage: str) -> dict[str, Any]:
    """Write the table, best recipe, plots, metrics.json and report.md; print the result; return metrics.

    Usage: ``write_outputs(study, space, folder, recipe.auto, storage_spec)["best"]["retention"]``
    """
    from distill.auto.study import describe_storage

    rows = trial_rows(study)
    atomic_write_text(folder / TABLE_FILE, table_csv(rows))
    best = best_trial(study)
    if best is not None:
        save_recipe(apply_params(space, best.params, str(folder / "best")), folder / BEST_RECIPE)
    counts = {state.name.lower(): sum(1 for r in rows if r["state"] == state.name.lower()) for state in SHOWN_STATES}
    metrics: dict[str, Any] = {
        "command": "distill --auto", "study": study.study_name, "storage": describe_storage(storage),
        "task": study.user_attrs.get("task"), "objectives": auto.objectives, "trials": counts,
        "meta_features": study.user_attrs.get("meta_features"),
        "best": None if best is None else {"number": best.number, "params": best.params, "values": best.values,
                                           "retention": best.user_attrs.get("retention"),
                                           "run_dir": best.user_attrs.get("run_dir"), "recipe": BEST_RECIPE},
        "pareto": [{"number": t.number, "values": t.values, "params": t.params} for t in study.best_trials]
        if len(study.directions) > 1 else None,
        "compute_s": sum(r["wall_s"] or 0.0 for r in rows),
    }
    metrics["plots"] = write_plots(study, folder)
    shown = [{"trial": r["number"], "state": r["state"], "retention": r["retention"], "dev": r["student_score"],
              **({"latency ms": r["latency"]} if "latency" in auto.objectives else {}),
              **({"size bytes": r["size"]} if "size" in auto.objectives else {}), "wall s": r["wall_s"],
              "pipeline": _pipeline(r["params"])} for r in rows]
    atomic_write_json(folder / "metrics.json", metrics)
    summary = [{"study": study.study_name, "trials": len(rows), **counts,
                "best trial": None if best is None else best.number,
                "best retention": None if best is None else best.user_attrs.get("retention"),
                "recipe": BEST_RECIPE if best is not None else "none (no complete trial)"}]
    plots = "".join(f"- {name}: {'![](' + where + ')' if where.endswith('.png') else where}\n"
                    for name, where in metrics["plots"].items())
    atomic_write_text(folder / "report.md", f"# distill --auto\n\nStudy `{study.study_name}` in "
                      f"`{metrics['storage']}`; objective: retention = student / teacher dev score"
                      f"{' and ' + ', '.join(auto.objectives[1:]) if len(auto.objectives) > 1 else ''}.\n\n"
                      f"## Trials\n\n{markdown_table(shown)}\n## Result\n\n{markdown_table(summary)}\n"
                      f"Rerun the best pipeline: `distill --recipe {folder / BEST_RECIPE}`\n\n## Plots\n\n{plots}")
    print_table("trials", shown)
    print_table(f"distill --auto: {folder}", summary)
    return metrics


def _pipeline(params: dict[str, Any]) -> str:
    return ", ".join(f"{k.split('/')[0]}={v:.3g}" if isinstance(v, float) else f"{k.split('/')[0]}={v}"
                     for k, v in params.items())


__all__ = ["BEST_RECIPE", "TABLE_FILE", "best_trial", "table_csv", "trial_rows", "write_outputs", "write_plots"]
