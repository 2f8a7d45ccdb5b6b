"""`shrink train` end to end: run directory, resume after SIGKILL, and one-line errors for bad input."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from safetensors.torch import load_file

from shrink.cli import main

TRAIN = ["train", "--model", "resnet20", "--dataset", "synthetic-image:1x16x16", "--max-train-samples", "192",
         "--max-eval-samples", "64", "--batch-size", "32", "--epochs", "4", "--lr", "0.01", "--seed", "3",
         "--no-progress"]

# Runs `shrink train` and SIGKILLs the process at its 10th training batch: mid-epoch 2, after the
# step-8 checkpoint (checkpoint every 4 steps) and before the next one.
KILLER = textwrap.dedent("""
    import os, signal, sys
    from shrink import train
    original = train.Trainer._forward
    calls = [0]
    def forward_then_die(self, batch):
        calls[0] += 1
        if calls[0] == 10:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(self, batch)
    train.Trainer._forward = forward_then_die
    from shrink.cli import main
    main(sys.argv[1:])
""")


def shrink_cli(args, tmp_path, script=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    code = script or "import sys; from shrink.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)


def test_train_writes_a_complete_run_directory(tmp_path, capsys):
    main(TRAIN + ["--out", str(tmp_path / "run")])
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert not (run / "RUNNING").exists()
    assert metrics["dev"]["accuracy"] > 0.3 and metrics["params"] > 200_000 and metrics["macs"] > 0
    assert (run / "model" / "model.safetensors").exists() and (run / "recipe.yaml").exists()
    assert "resnet20" in (run / "report.md").read_text()
    assert "dev accuracy" in capsys.readouterr().out


def test_resume_after_sigkill_reaches_the_same_metrics(tmp_path):
    args = TRAIN + ["--checkpoint-every", "4"]
    reference = shrink_cli(args + ["--out", "ref"], tmp_path)
    assert reference.returncode == 0, reference.stderr
    killed = shrink_cli(args + ["--out", "run"], tmp_path, script=KILLER)
    assert killed.returncode == -9
    assert not (tmp_path / "run" / "metrics.json").exists() and (tmp_path / "run" / "RUNNING").exists()
    resumed = shrink_cli(args + ["--out", "run", "--resume"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from step-00000008" in resumed.stdout + resumed.stderr
    ref = json.loads((tmp_path / "ref" / "metrics.json").read_text())
    got = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert got["dev"] == ref["dev"] and got["history"] == ref["history"]
    ref_w, got_w = (load_file(tmp_path / d / "model" / "model.safetensors") for d in ("ref", "run"))
    assert all((ref_w[k] == got_w[k]).all() for k in ref_w)


# SIGKILLs `shrink train` as the last epoch ends: its final step's checkpoint is written, its evaluation is not.
KILL_AT_LAST_EPOCH_END = textwrap.dedent("""
    import os, signal, sys
    from shrink import train
    original = train.Trainer._end_epoch
    def end_epoch_or_die(self, train_loss):
        if self.progress.epoch + 1 == int(self.config.epochs):
            os.kill(os.getpid(), signal.SIGKILL)
        return original(self, train_loss)
    train.Trainer._end_epoch = end_epoch_or_die
    from shrink.cli import main
    main(sys.argv[1:])
""")


def test_killed_after_the_final_steps_checkpoint_resume_evaluates_the_last_epoch(tmp_path, monkeypatch):
    args = ["train", "--model", "resnet20", "--dataset", "synthetic-image:1x8x8", "--max-train-samples", "32",
            "--max-eval-samples", "16", "--batch-size", "16", "--epochs", "2", "--checkpoint-every", "2",
            "--no-progress"]
    assert shrink_cli(args + ["--out", "run"], tmp_path, script=KILL_AT_LAST_EPOCH_END).returncode == -9
    monkeypatch.chdir(tmp_path)
    assert main(args + ["--out", "run", "--resume"]) == 0  # in process: only the killed run needs its own
    got = json.loads((tmp_path / "run" / "metrics.json").read_text())
    # equality with an uninterrupted run: tests/test_train.py (same engine, in process)
    assert [entry["epoch"] for entry in got["history"]] == [1, 2]
    assert got["final_epoch_dev"] == {"accuracy": got["history"][-1]["accuracy"]}


@pytest.fixture
def refused_in(refused, tmp_path, monkeypatch):
    """``refused_in(args, *needles)``: ``shrink`` run in ``tmp_path`` with the hub offline must refuse ``args``
    with one error line holding every needle (in process: a subprocess per case cost ~7 s of imports)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def run(args, *needles):
        line = refused(main, args)
        assert all(needle in line for needle in needles), line
        return line

    return run


@pytest.mark.parametrize("args, needles", [
    (["--model", "resnet57", "--dataset", "synthetic-image"], ["unknown model", "resnet56"]),
    (["--model", "resnet20", "--dataset", "fashion-mnistt"], ["unknown dataset", "fashion-mnist"]),
    (["--model", "bert-tiny", "--task", "sst2", "--data-dir", "missing"], ["missing"]),
    (["--model", "no-such-org/no-such-model", "--dataset", "synthetic-text"], ["local directory"]),
])
def test_bad_input_is_one_line_and_leaves_no_run(args, needles, tmp_path, refused_in):
    refused_in(["train", *args, "--out", "run"], *needles)
    assert not (tmp_path / "run").exists()


def test_missing_label_column_lists_the_columns(tmp_path, refused_in):
    for split in ("train", "dev"):
        (tmp_path / f"{split}.csv").write_text("review,stars\ngood,1\nbad,0\n")
    line = refused_in(["train", "--model", "bert-tiny", "--dataset", "text-files", "--data-dir", ".",
                       "--text-column", "review", "--out", "run"], "label")
    assert "stars" in line and not (tmp_path / "run").exists()


def test_unknown_recipe_key(tmp_path, refused_in):
    (tmp_path / "r.yaml").write_text("train:\n  learning_rate: 0.1\n")
    refused_in(["train", "--recipe", "r.yaml"], "train.learning_rate")


def test_corrupt_checkpoint_on_resume(tmp_path, refused_in):
    args = TRAIN + ["--epochs", "1", "--out", "run"]
    assert main(args) == 0
    (tmp_path / "run" / "metrics.json").unlink()  # pretend it was interrupted after its checkpoint
    (tmp_path / "run" / "RUNNING").write_text("pid 0\n")
    for state in Path(tmp_path / "run" / "checkpoints").glob("step-*/*.safetensors"):
        state.write_bytes(b"not a safetensors file")
    refused_in(args + ["--resume"], "corrupt")
    assert not (tmp_path / "run" / "metrics.json").exists()
