"""The final table of ``assemble``: each phase's accuracy, cost and wall-clock, against end-to-end training.

End-to-end training of the same target costs, per epoch, what one finetuning epoch costs (same model, all
parameters trained), so the finetune phase gives the E2E reference: the epochs of E2E training that equal the
assembly's FLOPs and their estimated wall-clock (finetune seconds per epoch). With ``assemble.run_e2e`` the
baseline is also trained (RUN/e2e) and measured. Incubation's wall-clock is given summed (one process) and as
its longest module (the modules run concurrently on separate processes or machines).

Usage::

    metrics = summarize(assembly)   # writes RUN/model, RUN/metrics.json, RUN/report.md (and RUN/model.onnx)
"""
from __future__ import annotations

from typing import Any

from assemble.phases import (E2E, FINETUNE, META, Assembly, copy_final_model, e2e_phase, final_model, ours_cost,
                             phase_records)
from shrink.report import publish
from shrink.runs import RunDir
from shrink.train import process_state

COST_KEYS = ("block_epochs", "cost_units", "train_flops")


def e2e_per_epoch(records: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Cost of one end-to-end epoch of the target: one finetuning epoch."""
    finetune = records[FINETUNE]
    return {key: finetune[key] / finetune["epochs"] for key in (*COST_KEYS, "wall_clock_s")}


def matched_e2e_epochs(assembly: Assembly) -> float:
    """E2E epochs whose FLOPs equal meta + incubation + finetuning (the compute-matched baseline)."""
    records = phase_records(assembly)
    return ours_cost(records)["train_flops"] / e2e_per_epoch(records)["train_flops"]


def _row(name: str, record: dict[str, Any], metric: str, trains: str) -> dict[str, Any]:
    return {"phase": name, "trains": trains, "epochs": record.get("epochs"),
            "block-epochs": record.get("block_epochs"), "cost units (M)": _scaled(record.get("cost_units"), 1e6),
            "train GFLOPs": _scaled(record.get("train_flops"), 1e9), "wall-clock s": record.get("wall_clock_s"),
            f"dev {metric}": record.get("dev", {}).get(metric)}


def _scaled(value: float | None, unit: float) -> float | None:
    return None if value is None else value / unit


def summarize(assembly: Assembly) -> dict[str, Any]:
    """Run the E2E baseline when asked, then write the summary of the finished phases; returns metrics.json."""
    section = assembly.recipe.assemble
    if section.run_e2e:
        e2e_phase(assembly, section.e2e.epochs or round(matched_e2e_epochs(assembly), 2))
    if not process_state().is_main_process:  # the main process writes the summary
        return {}
    records = phase_records(assembly)
    metric = assembly.experiment.task.metrics[0]
    modules = [records[f"incubate-{i}"] for i in range(assembly.builder.modules)]
    ours = ours_cost(records)
    per_epoch = e2e_per_epoch(records)
    incubation_s = [record["wall_clock_s"] for record in modules]
    ours_s = records[META]["wall_clock_s"] + sum(incubation_s) + records[FINETUNE]["wall_clock_s"]
    concurrent_s = records[META]["wall_clock_s"] + max(incubation_s) + records[FINETUNE]["wall_clock_s"]
    matched = ours["train_flops"] / per_epoch["train_flops"]
    rows = [_row(META, records[META], metric, "meta model"),
            *(_row(f"incubate-{i}", record, metric, f"module {i} (hybrid accuracy)")
              for i, record in enumerate(modules)),
            {**_row("assemble", records["assemble"], metric, "nothing (before finetuning)")},
            _row(FINETUNE, records[FINETUNE], metric, "all"),
            {"phase": "ours (total)", "trains": "meta + modules + finetune",
             "block-epochs": ours["block_epochs"], "cost units (M)": ours["cost_units"] / 1e6,
             "train GFLOPs": ours["train_flops"] / 1e9, "wall-clock s": ours_s,
             f"dev {metric}": records[FINETUNE]["dev"][metric]},
            {"phase": "ours, incubations concurrent", "trains": "longest module counts",
             "wall-clock s": concurrent_s},
            {"phase": "E2E at equal FLOPs (estimate)", "trains": "all", "epochs": matched,
             "block-epochs": per_epoch["block_epochs"] * matched, "cost units (M)": ours["cost_units"] / 1e6,
             "train GFLOPs": ours["train_flops"] / 1e9, "wall-clock s": per_epoch["wall_clock_s"] * matched}]
    if E2E in records:
        rows.append(_row("E2E (trained)", records[E2E], metric, "all"))
    copy_final_model(assembly)
    metrics: dict[str, Any] = {
        "command": "assemble", "model": assembly.recipe.model.name, "dataset": assembly.experiment.task.name,
        "primary_metric": metric, "signature": assembly.signature(), "dev": records[FINETUNE]["dev"],
        "dev_before_finetune": records["assemble"]["dev"], "meta_dev": records[META]["dev"],
        "hybrid_dev": [record["dev"] for record in modules],
        "cost": {"ours": ours, "e2e_per_epoch": per_epoch, "e2e_epochs_at_equal_flops": matched,
                 "ours_wall_clock_s": ours_s, "ours_wall_clock_concurrent_s": concurrent_s,
                 "incubation_wall_clock_s": incubation_s},
        "phases": {name: {key: value for key, value in record.items() if key != "history"}
                   for name, record in records.items()},
    }
    if E2E in records:
        metrics["e2e"] = {key: records[E2E][key] for key in ("epochs", "dev", "wall_clock_s", *COST_KEYS)}
    if section.export_onnx:
        metrics["onnx"] = export_final(assembly)
    intro = (f"{assembly.recipe.model.name} assembled from {assembly.builder.modules} modules (target depths "
             f"{assembly.builder.target_depths}, meta depths {assembly.builder.meta_depths}) on "
             f"{assembly.experiment.task.name}. Cost units per sample and block: forward 1, +2 trained, +1 frozen "
             "downstream of a trained block; block-epochs = blocks x epochs; FLOPs measured per stage. "
             "E2E epochs cost what finetuning epochs cost.")
    publish(RunDir(assembly.root), metrics, "assemble", intro, [("result", rows)])
    return metrics


def export_final(assembly: Assembly) -> dict[str, Any]:
    """Export the finetuned model to RUN/model.onnx (checked against PyTorch, as ``shrink export`` does)."""
    from shrink.deploy_cli import TaskView

    recipe = assembly.recipe
    view = TaskView(assembly.experiment.task, recipe.data.max_length, assembly.experiment.tokenizer,
                    recipe.train.seed)
    return view.export(final_model(assembly), assembly.root / "model.onnx").to_dict()


__all__ = ["e2e_per_epoch", "export_final", "matched_e2e_epochs", "summarize"]
