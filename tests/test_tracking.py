"""Experiment tracking and provenance: --report-to trackers, metrics.json's provenance, the model card."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from huggingface_hub import ModelCard
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from shrink import tracking
from shrink.cli import main

TRAIN = ["train", "--model", "resnet20", "--dataset", "synthetic-image:1x16x16", "--max-train-samples", "96",
         "--max-eval-samples", "32", "--batch-size", "16", "--epochs", "2", "--lr", "0.01", "--seed", "3",
         "--quiet"]


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("tracked") / "run"
    main(TRAIN + ["--report-to", "tensorboard", "--out", str(run)])
    return run


def test_report_to_tensorboard_logs_loss_lr_and_each_epochs_dev_metric(tracked_run: Path) -> None:
    events = EventAccumulator(str(tracked_run / "logs" / "run"))
    events.Reload()
    assert {"train/loss", "train/lr", "dev/accuracy"} <= set(events.Tags()["scalars"])
    metrics = json.loads((tracked_run / "metrics.json").read_text())
    logged = [event.value for event in events.Scalars("dev/accuracy")]
    assert logged == pytest.approx([entry["accuracy"] for entry in metrics["history"]])


def test_metrics_json_records_versions_threads_hardware_and_times(tracked_run: Path) -> None:
    provenance = json.loads((tracked_run / "metrics.json").read_text())["provenance"]
    assert {"python", "torch", "transformers", "accelerate"} <= set(provenance["libraries"])
    assert provenance["torch_threads"] >= 1 and provenance["hardware"]["cpu_count"] >= 1
    assert provenance["started_at"] <= provenance["finished_at"] and provenance["resumed"] is False


def test_the_saved_model_has_a_hub_readable_card_with_its_dev_scores(tracked_run: Path) -> None:
    card = ModelCard.load(tracked_run / "model" / "README.md")
    dev = json.loads((tracked_run / "metrics.json").read_text())["dev"]
    assert {result.metric_type: result.metric_value for result in card.data.eval_results} == dev
    assert "load_model" in card.text and "synthetic-image" in card.text


def test_a_tracker_whose_package_is_missing_is_one_line_naming_the_install(monkeypatch, tmp_path: Path,
                                                                            refused) -> None:
    monkeypatch.setitem(tracking.TRACKER_PACKAGES, "mlflow", ("no_such_tracker_package",))
    assert "pip install no_such_tracker_package" in refused(main, TRAIN + ["--report-to", "mlflow", "--out",
                                                                          str(tmp_path / "run")])
    assert not (tmp_path / "run").exists()


def test_an_unknown_tracker_is_refused(tmp_path: Path, refused) -> None:
    assert "report_to" in refused(main, TRAIN + ["--report-to", "tensorbord", "--out", str(tmp_path / "run")])
