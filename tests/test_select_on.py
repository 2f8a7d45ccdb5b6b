"""Where the best epoch is chosen: the dev split (and the report says so) or a seeded training holdout."""
import json

import pytest

from shrink.cli import main
from shrink.data import load_task_data
from shrink.errors import UserError
from shrink.experiment import HOLDOUT_FRACTION, selection_splits
from shrink.recipe import TrainConfig

TRAIN = ["train", "--model", "resnet20", "--dataset", "synthetic-image:1x8x8", "--max-train-samples", "80",
         "--max-eval-samples", "32", "--batch-size", "16", "--epochs", "2", "--lr", "0.01", "--no-progress"]


def test_train_holdout_is_a_seeded_slice_of_train_kept_out_of_training() -> None:
    task = load_task_data("synthetic-image:1x8x8", max_train_samples=80, max_eval_samples=16, augment=False)
    assert selection_splits(task, TrainConfig()) == (task.train, task.dev)
    train, held = selection_splits(task, TrainConfig(select_on="train-holdout", seed=3))
    assert len(held) == round(80 * HOLDOUT_FRACTION) and len(train) + len(held) == 80
    assert not set(train.indices) & set(held.indices)
    assert held.indices == selection_splits(task, TrainConfig(select_on="train-holdout", seed=3))[1].indices
    assert held.indices != selection_splits(task, TrainConfig(select_on="train-holdout", seed=4))[1].indices
    with pytest.raises(UserError, match="needs more than 1 training"):
        selection_splits(load_task_data("synthetic-image:1x8x8", max_train_samples=1), TrainConfig(select_on="train-holdout"))


@pytest.mark.parametrize("select_on, said", [("dev", "dev (the reported split: optimistic)"),
                                             ("train-holdout", "train holdout (10%, seeded); dev reported only")])
def test_the_report_says_where_the_best_epoch_was_chosen(select_on: str, said: str, tmp_path) -> None:
    main(TRAIN + ["--select-on", select_on, "--out", str(tmp_path / "run")])
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["selected_on"] == select_on and set(metrics["dev"]) == set(metrics["selection_score"])
    assert said in (tmp_path / "run" / "report.md").read_text()
    split = "dev" if select_on == "dev" else "holdout"  # the last epoch's scores are named by their split
    assert metrics[f"final_epoch_{split}"] == {k: v for k, v in metrics["history"][-1].items() if k in metrics["dev"]}
