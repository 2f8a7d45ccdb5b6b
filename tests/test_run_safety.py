"""Run directories that never lose data: overwrite, resume, the lock, completeness, cleanup of failed starts."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shrink.cli import main
from shrink.errors import UserError
from shrink.models import create_model
from shrink.runs import RunDir

TINY = ["train", "--model", "resnet20", "--dataset", "synthetic-image:1x8x8", "--max-train-samples", "32",
        "--max-eval-samples", "16", "--batch-size", "16", "--epochs", "1", "--no-progress"]
ROOT = Path(__file__).resolve().parent.parent


def exit_status(args, capsys):
    """Run the ``shrink`` command in this process: (exit status, stderr)."""
    try:
        status = main(args)
    except SystemExit as stop:
        status = stop.code
    return status, capsys.readouterr().err


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A complete tiny run, trained once for the module; tests copy it before changing it."""
    out = tmp_path_factory.mktemp("finished") / "run"
    main(TINY + ["--out", str(out)])
    return out


def copy_run(source: Path, target: Path) -> Path:
    subprocess.run(["cp", "-r", str(source), str(target)], check=True)
    return target


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("flag", ["--overwrite", "--resume"])
def test_a_folder_that_is_not_a_run_is_never_written(flag, tmp_path, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "a.txt").write_text("precious")
    status, err = exit_status(TINY + ["--out", str(folder), flag], capsys)
    assert status == 2 and "not a run directory" in err and len(err.strip().splitlines()) == 1
    assert [p.name for p in folder.iterdir()] == ["a.txt"] and (folder / "a.txt").read_text() == "precious"


def test_an_overwrite_refused_for_bad_input_keeps_the_finished_run(finished_run, tmp_path, capsys):
    run = copy_run(finished_run, tmp_path / "run")
    before = snapshot(run)
    status, err = exit_status(TINY + ["--out", str(run), "--overwrite", "--mixed-precision", "fp16"], capsys)
    if status == 0:
        pytest.skip("a GPU is present")
    assert status == 2 and "fp16" in err
    assert snapshot(run) == before


def test_an_overwrite_that_fails_after_opening_restores_the_previous_run(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path / "run")
    before = snapshot(run)
    with pytest.raises(UserError):
        with RunDir.create(run, overwrite=True) as replacing:
            assert not (replacing / "metrics.json").exists()
            (replacing / "recipe.yaml").write_text("train: {}\n")
            raise UserError("found late")
    assert snapshot(run) == before and sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_an_overwrite_that_saved_work_replaces_the_previous_run(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path / "run")
    with pytest.raises(RuntimeError):
        with RunDir.create(run, overwrite=True) as replacing:
            (replacing / "checkpoints").mkdir()
            raise RuntimeError("a crash after real work: kept for --resume")
    assert (run / "checkpoints").is_dir() and not (run / "metrics.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_a_refused_start_leaves_no_stub(tmp_path, capsys):
    status, _ = exit_status(TINY + ["--out", str(tmp_path / "run"), "--mixed-precision", "fp16"], capsys)
    if status == 0:
        pytest.skip("a GPU is present")
    assert status == 2 and not (tmp_path / "run").exists()


def test_a_stub_is_removed_when_a_new_run_fails_without_work(tmp_path):
    with pytest.raises(UserError):
        with RunDir.create(tmp_path / "run"):
            raise UserError("bad input found after the folder opened")
    assert not (tmp_path / "run").exists()


LOCK_HOLDER = """
import sys, time
from shrink.runs import RunDir
run = RunDir.create(sys.argv[1])
(run / "recipe.yaml").write_text("train: {}\\n")
print("locked", flush=True)
time.sleep(60)
"""


def test_a_second_writer_is_refused_while_a_live_run_holds_the_lock(tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(run)], stdout=subprocess.PIPE, text=True,
                              env=env)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = snapshot(run)
        for options in ({"resume": True}, {"overwrite": True}):
            with pytest.raises(UserError, match=f"in use by pid {holder.pid}"):
                RunDir.create(run, **options)
        assert snapshot(run) == before
    finally:
        holder.kill()
        holder.wait()
    RunDir.create(run, resume=True).close()  # the OS released the dead holder's lock


def test_a_second_process_on_the_command_line_gets_one_line(tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(run)], stdout=subprocess.PIPE, text=True,
                              env=env)
    try:
        assert holder.stdout.readline().strip() == "locked"
        second = subprocess.run([sys.executable, "-m", "shrink", *TINY, "--out", str(run), "--resume"], env=env,
                                capture_output=True, text=True, timeout=120)
    finally:
        holder.kill()
        holder.wait()
    assert second.returncode == 2 and second.stderr.count("\n") == 1 and f"pid {holder.pid}" in second.stderr


def test_an_unfinished_run_is_refused_as_a_source(finished_run, tmp_path, capsys):
    run = copy_run(finished_run, tmp_path / "run")
    (run / "RUNNING").write_text("pid 1\n")
    for args in (["export", str(run)], ["bench", str(run), "--rounds", "1", "--min-time", "0.05"], ["export", str(run / "model")]):
        status, err = exit_status(args, capsys)
        assert status == 2 and "has not finished" in err, args
    with pytest.raises(UserError, match="has not finished"):
        create_model(str(run / "model"), num_classes=10, in_channels=1, image_size=8)  # prune --base-model, distill
    create_model(str(run / "best"), num_classes=10, in_channels=1, image_size=8)  # asked for explicitly
    assert "has not finished" in capsys.readouterr().err


def test_resume_refuses_changed_settings_and_names_them(finished_run, tmp_path, capsys):
    run = copy_run(finished_run, tmp_path / "run")
    (run / "metrics.json").unlink()
    (run / "RUNNING").write_text("pid 1\n")
    recipe = (run / "recipe.yaml").read_bytes()
    status, err = exit_status(TINY + ["--out", str(run), "--resume", "--lr", "0.5"], capsys)
    assert status == 2 and "train.lr" in err and (run / "recipe.yaml").read_bytes() == recipe
    status, err = exit_status(["train", "--model", "resnet32", *TINY[3:], "--out", str(run), "--resume"], capsys)
    assert status == 2 and "model.name" in err and "corrupt" not in err
    assert exit_status(TINY + ["--out", str(run), "--resume"], capsys)[0] == 0
    assert json.loads((run / "metrics.json").read_text())["steps"] == 2


KILLED_REPLACEMENT = """
import os, signal, sys
from shrink.runs import RunDir
RunDir.create(sys.argv[1], overwrite=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_replacement_killed_before_any_work_gives_the_old_run_back(finished_run, tmp_path):
    run = copy_run(finished_run, tmp_path / "run")
    before = snapshot(run)
    killed = subprocess.run([sys.executable, "-c", KILLED_REPLACEMENT, str(run)],
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert killed.returncode == -9 and (tmp_path / ".run.replaced").is_dir()
    with pytest.raises(UserError, match="already complete"):
        RunDir.create(run, resume=True)
    assert snapshot(run) == before and sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_an_overwrite_that_cannot_start_the_new_folder_keeps_the_old_run(finished_run, tmp_path, monkeypatch):
    from shrink import runs

    run = copy_run(finished_run, tmp_path / "run")
    before = snapshot(run)

    def refuse(folder):
        raise UserError(f"{folder} is in use")

    monkeypatch.setattr(runs.RunLock, "acquire", lambda folder, real=runs.RunLock.acquire: (
        refuse(folder) if not (folder / "recipe.yaml").exists() else real(folder)))
    with pytest.raises(UserError, match="in use"):
        RunDir.create(run, overwrite=True)
    assert snapshot(run) == before and sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_a_late_refusal_keeps_a_run_that_saved_its_final_model(tmp_path):
    with pytest.raises(UserError):
        with RunDir.create(tmp_path / "run") as run:
            (run / "model").mkdir()
            raise UserError("the ONNX export does not match PyTorch")  # after all the training
    assert (tmp_path / "run" / "model").is_dir()
