"""Bad input on every command: one line on stderr, exit status 2, nothing left behind.

Each case is one line: the command's words (``{run}`` is a finished tiny image run, ``{text}`` a finished
tiny text run, ``{file}`` a plain file, ``{data}`` a folder of data files), the exit status and a phrase
of the message.
"""
import json
import shutil
from pathlib import Path

import pytest

from distill.cli import main as distill_main
from prune.cli import main as prune_main
from shrink.cli import main as shrink_main

COMMANDS = {"shrink": shrink_main, "distill": distill_main, "prune": prune_main}
IMAGE = ["--model", "resnet20", "--dataset", "synthetic-image:1x8x8", "--max-train-samples", "32",
         "--max-eval-samples", "16", "--batch-size", "16", "--epochs", "1", "--no-progress"]
TEXT = ["--model", "bert-tiny", "--dataset", "synthetic-text", "--max-train-samples", "32", "--max-eval-samples", "16",
        "--batch-size", "16", "--epochs", "1", "--no-progress"]
TRAIN = ["shrink", "train", *IMAGE]

CASES = [
    # data files
    (["shrink", "train", *TEXT[:2], "--task", "sst2", "--data-dir", "{data}/latin1", "--out", "{out}"], 2, "not UTF-8"),
    (["shrink", "train", *TEXT[:2], "--task", "sst2", "--data-dir", "{data}/header-only", "--out", "{out}"], 2,
     "no examples"),
    (["shrink", "train", *TEXT[:2], "--dataset", "text-files", "--data-dir", "{data}/nan-label", "--text-column",
      "text", "--out", "{out}"], 2, "not a finite number"),
    (["shrink", "train", "--recipe", "{data}/bool-batch.yaml", "--out", "{out}"], 2, "boolean true"),
    # model and data that do not fit
    (["shrink", "train", "--model", "resnet20", "--dataset", "synthetic-text", "--out", "{out}"], 2, "image model"),
    (["shrink", "train", "--model", "bert-tiny", "--dataset", "synthetic-image", "--out", "{out}"], 2, "text model"),
    (["shrink", "train", *IMAGE, "--group-by-length", "--out", "{out}"], 2, "groups text examples"),
    # where the run goes, and --set
    ([*TRAIN, "--out", "{file}/run"], 2, "is a file"),
    ([*TRAIN, "--out", "{file}"], 2, "is a file"),
    ([*TRAIN, "--out", "{out}", "--set", "train.lr=[1"], 2, "not a plain YAML value"),
    ([*TRAIN, "--out", "{out}", "--set", "train.lr=!!python/name:os.system"], 2, "not a plain YAML value"),
    # export
    (["shrink", "export", "{run}", "--onnx", "{file}/sub/model.onnx"], 2, "is a file"),
    (["shrink", "export", "{run}", "--onnx", "{out}/model.onnx", "--batch-size", "0"], 2, "--batch-size"),
    (["shrink", "export", "{run}", "--onnx", "{out}/model.onnx", "--opset", "1"], 2, "down to opset 1"),
    (["shrink", "export", "{data}/bad-config"], 2, "config.json"),
    (["shrink", "export", "{data}/bad-spec"], 2, "architecture.json"),
    # bench
    (["shrink", "bench", "{run}", "--rounds", "0"], 2, "--rounds"),
    (["shrink", "bench", "{run}", "--min-time", "0"], 2, "--min-time"),
    (["shrink", "bench", "{run}", "--max-eval-samples", "-1"], 2, "--max-eval-samples"),
    (["shrink", "bench", "{run}", "--rounds", "1", "--json", "{file}/x/bench.json"], 2, "is a file"),
    (["shrink", "bench", "{run}", "--rounds", "1", "--plot", "{file}/x/bench.png"], 2, "is a file"),
    # distill and prune
    (["distill", "--teacher", "{data}/unfinished", "--student", "resnet20", *IMAGE[2:], "--out", "{out}"], 2,
     "has not finished"),
    (["prune", *IMAGE, "--base-model", "{data}/unfinished/model", "--speedup", "1.5", "--out", "{out}"], 2,
     "has not finished"),
    (["prune", *IMAGE, "--protect", "no.such.layer", "--speedup", "1.5", "--out", "{out}"], 2, "no.such.layer"),
    (["prune", *IMAGE, "--base-model", "{run}/model", "--protect", "conv9", "--speedup", "1.5", "--out", "{out}"],
     2, "conv9"),
    (["prune", *IMAGE, "--speedup", "1000", "--out", "{out}"], 2, "1000"),
    (["prune", *IMAGE, "--drop-layers", "1", "--out", "{out}"], 2, "has none"),
    (["prune", *TEXT, "--drop-layers", "2", "--out", "{out}"], 2, "drop at most 1"),
]


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    """Finished runs and data folders for the cases, made once."""
    root = tmp_path_factory.mktemp("bad-input")
    shrink_main(["train", *IMAGE, "--out", str(root / "run")])
    shrink_main(["train", *TEXT, "--out", str(root / "text")])
    data = root / "data"
    for name, content in (("latin1", b"sentence\tlabel\ncaf\xe9\t1\nbad\t0\n"), ("header-only", b"sentence\tlabel\n")):
        (data / name).mkdir(parents=True)
        for split in ("train", "dev"):
            (data / name / f"{split}.tsv").write_bytes(content)
    (data / "nan-label").mkdir()
    for split in ("train", "dev"):
        (data / "nan-label" / f"{split}.csv").write_text("text,label\ngood,1\nbad,nan\nfine,0\n")
    (data / "bool-batch.yaml").write_text("train:\n  batch_size: true\n")
    shutil.copytree(root / "text" / "model", data / "bad-config")
    edit_json(data / "bad-config" / "config.json", lambda c: c.update(hidden_size=32))
    shutil.copytree(root / "run" / "model", data / "bad-spec")
    edit_json(data / "bad-spec" / "architecture.json", lambda s: s["kwargs"].update(num_classes="ten"))
    shutil.copytree(root / "run", data / "unfinished")
    (data / "unfinished" / "RUNNING").write_text("pid 1\n")
    (root / "file").write_text("a plain file\n")
    return {"run": root / "run", "text": root / "text", "data": data, "file": root / "file"}


def edit_json(path: Path, change) -> None:
    value = json.loads(path.read_text())
    change(value)
    path.write_text(json.dumps(value))


@pytest.mark.parametrize("words, status, phrase", CASES, ids=[" ".join(c[0][:4]) + f"#{i}" for i, c in
                                                              enumerate(CASES)])
def test_bad_input_is_one_line(words, status, phrase, places, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "out"
    args = [word.format(out=out, **places) for word in words]
    try:
        got = COMMANDS[args[0]](args[1:])
    except SystemExit as stop:
        got = stop.code
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if not line.startswith("warning:")]
    assert got == status and len(errors) == 1 and errors[0].startswith("error: "), err
    assert phrase in errors[0]
    assert not out.exists() and not list(places["data"].glob(".*")), "a refused command left files behind"


def test_an_unreachable_hub_fails_at_once_with_one_line(monkeypatch, capsys):
    import time

    from huggingface_hub import constants

    from shrink.models import hf

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "https://hub.invalid")  # a name that never resolves
    hf.hub_offline.cache_clear()
    started = time.perf_counter()
    try:
        got = shrink_main(["train", "--model", "no-such-org/no-such-model", "--dataset", "synthetic-text"])
    except SystemExit as stop:
        got = stop.code
    finally:
        hf.hub_offline.cache_clear()
    err = capsys.readouterr().err.strip().splitlines()
    assert got == 2 and len(err) == 1 and "pass a local directory" in err[0]
    assert time.perf_counter() - started < 10  # no retries against an unreachable host


def test_a_reader_that_closes_the_pipe_early_gets_no_traceback():
    """`shrink recipes | head -1` must end quietly (exit 141, as a shell reports SIGPIPE), not with a traceback."""
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-m", "shrink", "recipes"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    child.stdout.close()  # before the child has written anything: its first write meets a closed pipe
    _, err = child.communicate(timeout=120)
    assert child.returncode == 141 and b"Traceback" not in err
