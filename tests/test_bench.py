"""Measurement (parameters, MACs, size, latency, accuracy) and `shrink bench` on runs and ONNX files."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from shrink.bench import (
    count_macs,
    count_parameters,
    example_inputs,
    measure_model,
    measure_models,
    measure_onnx,
    size_on_disk,
)
from shrink.cli import main
from shrink.data import load_task_data, make_collate
from shrink.data.synthetic import synthetic_tokenizer
from shrink.deploy_cli import export_source
from shrink.errors import UserError
from shrink.models import build_model, create_model, save_model
from shrink.recipe import Recipe, save_recipe
from shrink.timing import shown, summarise, time_interleaved

DATA = {"dataset": "synthetic-image:1x8x8", "max_train_samples": 32, "max_eval_samples": 40}


def test_count_parameters_counts_shared_weights_once() -> None:
    shared = nn.Linear(10, 5)
    assert count_parameters(nn.Sequential(shared, nn.ReLU(), nn.Linear(5, 3))) == 55 + 18
    assert count_parameters(nn.Sequential(shared, shared)) == 55


def test_count_macs_of_known_layers_and_of_a_text_batch() -> None:
    assert count_macs(nn.Linear(10, 5), torch.randn(1, 10)) == 50
    assert count_macs(nn.Conv2d(3, 8, 3, padding=1), {"pixel_values": torch.randn(1, 3, 8, 8)}) == 8 * 8 * 8 * 3 * 9
    torch.manual_seed(0)
    bert, _ = create_model("bert-tiny", num_classes=2, tokenizer_fallback=synthetic_tokenizer())
    one, two = (count_macs(bert, example_inputs(bert, size, seq_len=16)) for size in (1, 2))
    assert one > 0 and two == 2 * one


def test_size_on_disk_of_files_and_folders(tmp_path: Path) -> None:
    (tmp_path / "a.bin").write_bytes(b"x" * 100)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.bin").write_bytes(b"y" * 23)
    assert size_on_disk(tmp_path / "a.bin") == 100
    assert size_on_disk(tmp_path) == 123
    with pytest.raises(UserError, match="does not exist"):
        size_on_disk(tmp_path / "missing")


def test_models_are_timed_in_alternating_rounds_on_the_pinned_thread_count() -> None:
    order, threads_seen = [], set()

    def call(name: str) -> None:
        if not order or order[-1] != name:
            order.append(name)
        threads_seen.add(torch.get_num_threads())

    stats = time_interleaved({"a": lambda: call("a"), "b": lambda: call("b")}, threads=2, min_time_s=0.03, rounds=3)
    assert order == ["a", "b"] * 3 and threads_seen == {2} and torch.get_num_threads() == 1
    assert all(item["threads"] == 2 and item["calls"] >= item["blocks"] >= 3 for item in stats.values())
    slow = time_interleaved({"sleep": lambda: time.sleep(0.02)}, min_time_s=0.2, rounds=2)["sleep"]
    assert 19 <= slow["median_ms"] <= slow["p90_ms"] and slow["blocks"] >= 2


def test_a_wide_spread_or_too_few_blocks_is_flagged_not_shown_as_a_result() -> None:
    steady = summarise([0.010, 0.0101, 0.0099, 0.010, 0.0102, 0.010], calls=60, threads=1)
    assert not steady["noisy"] and shown(steady) == pytest.approx(10.0, rel=0.02)
    jumpy = summarise([0.010, 0.030, 0.011, 0.250, 0.012, 0.090], calls=6, threads=1)
    assert jumpy["noisy"] and shown(jumpy).startswith("noisy: ")
    assert summarise([0.010, 0.010], calls=2, threads=1)["noisy"]  # two blocks cannot bound a spread


def test_example_inputs_follow_the_model() -> None:
    torch.manual_seed(0)
    bert, tokenizer = create_model("bert-tiny", num_classes=2, tokenizer_fallback=synthetic_tokenizer())
    text = example_inputs(bert, 3, seq_len=12)
    assert set(text) == {"input_ids", "attention_mask", "token_type_ids"} and text["input_ids"].shape == (3, 12)
    assert int(text["input_ids"].max()) < len(tokenizer)
    gray = build_model("resnet20", in_channels=1, image_size=16)
    assert example_inputs(gray, 4)["pixel_values"].shape == (4, 1, 16, 16)
    assert example_inputs(nn.Linear(3, 3), 2)["pixel_values"].shape == (2, 3, 32, 32)
    assert example_inputs(gray, 2, image_shape=(1, 8, 8))["pixel_values"].shape == (2, 1, 8, 8)


def test_measure_model_gives_size_speed_and_accuracy() -> None:
    torch.manual_seed(0)
    task = load_task_data(DATA["dataset"], max_eval_samples=40, augment=False)
    model = build_model("vit-micro", num_classes=10, in_channels=1, image_size=8, patch_size=4, depth=1)
    loader = DataLoader(task.dev, batch_size=16, collate_fn=make_collate(task))
    figures = measure_model(model, batch_sizes=(1, 4), loader=loader, metrics=task.metrics, min_time_s=0.05)
    assert figures["params"] == count_parameters(model) and figures["macs"] > 0
    assert set(figures["latency"]) == {"1", "4"} and figures["threads"] == torch.get_num_threads()
    assert 0 <= figures["metrics"]["accuracy"] <= 1
    both = measure_models({"big": model, "small": nn.Sequential(nn.Flatten(), nn.Linear(64, 10))},
                          image_shape=(1, 8, 8), batch_sizes=(2,),
                          macs=False, threads=2, min_time_s=0.05)
    assert set(both) == {"big", "small"} and {f["latency"]["2"]["threads"] for f in both.values()} == {2}


@pytest.fixture(scope="module")
def exported_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory (RUN/model, RUN/recipe.yaml) whose model was exported to RUN/model.onnx."""
    torch.manual_seed(0)
    run = tmp_path_factory.mktemp("run")
    save_model(build_model("resnet20", num_classes=10, in_channels=1, image_size=8), run / "model")
    save_recipe(Recipe.model_validate({"model": {"name": "resnet20"}, "data": DATA}), run / "recipe.yaml")
    with (run / "recipe.yaml").open("a") as recipe:  # a method's own section (as distill writes) is no obstacle
        recipe.write("distill:\n  teacher: resnet56\n")
    export_source(run)
    return run


def test_shrink_bench_run_dir_compares_pytorch_and_onnxruntime(exported_run: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    out_json, out_png = tmp_path / "bench.json", tmp_path / "bench.png"
    assert main(["bench", str(exported_run), "--json", str(out_json), "--plot", str(out_png),
                 "--batch-sizes", "1,4", "--min-time", "0.1", "--threads", "2"]) == 0
    written = json.loads(out_json.read_text())
    records = written["records"]
    assert written["threads"] == 2 and all(r["threads"] == 2 for r in records)
    assert all({"median_ms", "iqr_ms", "p10_ms", "p90_ms", "noisy"} <= set(r["latency"]["4"]) for r in records)
    assert [r["runtime"] for r in records] == ["pytorch", "onnxruntime"]
    torch_row, onnx_row = records
    # The same weights in both runtimes: the same predictions on the dev split.
    assert torch_row["metrics"]["accuracy"] == onnx_row["metrics"]["accuracy"]
    assert torch_row["macs"] > 0 and onnx_row["macs"] is None and onnx_row["params"] > 0
    assert all(set(r["latency"]) == {"1", "4"} and r["size_bytes"] > 0 for r in records)
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "onnxruntime" in capsys.readouterr().out


def test_shrink_bench_onnx_file_takes_its_data_from_flags(exported_run: Path, tmp_path: Path) -> None:
    lone = tmp_path / "lone.onnx"
    lone.write_bytes((exported_run / "model.onnx").read_bytes())
    without = measure_onnx(lone, batch_sizes=(2,), min_time_s=0.05)
    assert "metrics" not in without and without["latency"]["2"]["median_ms"] > 0
    out_json = tmp_path / "bench.json"
    assert main(["bench", str(lone), "--dataset", DATA["dataset"], "--max-eval-samples", "24",
                 "--batch-sizes", "1", "--min-time", "0.05", "--json", str(out_json)]) == 0
    [record] = json.loads(out_json.read_text())["records"]
    assert record["dataset"] == DATA["dataset"] and 0 <= record["metrics"]["accuracy"] <= 1


@pytest.mark.parametrize("argv, message", [
    (["bench", "{tmp}/missing.onnx"], "does not exist"),
    (["bench", "{tmp}"], "neither a run directory"),
    (["bench", "{run}", "--batch-sizes", "1,x"], "--batch-sizes"),
    (["bench", "{run}", "--split", "validation"], "--split"),
])
def test_shrink_bench_bad_input_exits_2_with_one_line(argv: list[str], message: str, exported_run: Path,
                                                      tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([arg.format(tmp=tmp_path, run=exported_run) for arg in argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
