"""ONNX export (parity, dynamic axes, deploy files), the broken-export check, int8 quantization, `shrink export`."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch_pruning as tp
from transformers import AutoTokenizer

from shrink import export as export_module
from shrink.cli import main
from shrink.data.synthetic import synthetic_tokenizer
from shrink.errors import UserError
from shrink.export import export_onnx
from shrink.models import build_model, create_model, load_model, save_model
from shrink.onnx_runtime import OnnxModel
from shrink.quantize import choose_method, quantize_int8
from shrink.recipe import Recipe, save_recipe

SENTENCES = ["good movie", "the plot was dull and the acting was bad", "great fun", "boring film"]


def _ops(path: str | Path) -> set[str]:
    return {node.op_type for node in onnx.load(str(path)).graph.node}


@pytest.fixture(scope="module")
def bert_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    """A tiny random BERT classifier exported with its tokenizer."""
    torch.manual_seed(0)
    model, tokenizer = create_model("bert-tiny", num_classes=2, tokenizer_fallback=synthetic_tokenizer())
    model.eval()
    batch = tokenizer(SENTENCES[:2], padding=True, return_tensors="pt")
    path = tmp_path_factory.mktemp("bert") / "model.onnx"
    report = export_onnx(model, path, example_batch=dict(batch), tokenizer=tokenizer,
                         label_names=["negative", "positive"], deploy_info={"task": "synthetic-text"})
    assert report.max_abs_diff <= 1e-4 and report.argmax_agreement == 1.0
    return model, path


@pytest.fixture(scope="module")
def resnet_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    """A resnet20 with channels pruned by Torch-Pruning, saved and reloaded (pruned widths), then exported."""
    torch.manual_seed(0)
    model = build_model("resnet20", num_classes=10, image_size=16)
    example = torch.randn(2, 3, 16, 16)
    tp.pruner.MetaPruner(model, example, importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=0.25,
                         ignored_layers=[model.fc]).step()
    folder = tmp_path_factory.mktemp("resnet")
    save_model(model, folder / "model")
    reloaded = load_model(folder / "model").eval()
    assert reloaded.layer1[0].conv1.out_channels < 16  # the pruned width survived the round trip
    export_onnx(reloaded, folder / "model.onnx", example_batch={"pixel_values": example})
    return reloaded, folder / "model.onnx"


def test_bert_export_runs_in_plain_onnxruntime_at_other_batch_and_sequence_sizes(bert_export) -> None:
    model, path = bert_export
    session = ort.InferenceSession(str(path))
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask", "token_type_ids"]
    assert [o.name for o in session.get_outputs()] == ["logits"]
    # The deployed folder alone serves: tokenizer and label map come from beside the model.
    tokenizer = AutoTokenizer.from_pretrained(path.parent)
    labels = json.loads((path.parent / "labels.json").read_text())
    assert labels["label_names"] == ["negative", "positive"] and labels["task"] == "synthetic-text"
    batch = tokenizer(SENTENCES, padding=True, return_tensors="np")  # 4 examples, longer than the export batch
    assert batch["input_ids"].shape[1] > 4
    got = session.run(["logits"], {name: batch[name] for name in ("input_ids", "attention_mask", "token_type_ids")})[0]
    with torch.inference_mode():
        expected = model(**tokenizer(SENTENCES, padding=True, return_tensors="pt")).logits.numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_transformer_blocks_are_fused_for_onnxruntime_unless_asked_not_to(bert_export, tmp_path: Path) -> None:
    model, path = bert_export
    fused = {node.op_type for node in onnx.load(str(path)).graph.node if node.domain == "com.microsoft"}
    assert {"Attention", "SkipLayerNormalization", "BiasGelu"} <= fused  # the 2-layer BERT's blocks, fused
    batch = dict(AutoTokenizer.from_pretrained(path.parent)(SENTENCES[:2], padding=True, return_tensors="pt"))
    plain = export_onnx(model, tmp_path / "model.onnx", example_batch=batch, fuse=False)
    assert plain.fused == {} and all(node.domain == "" for node in onnx.load(plain.path).graph.node)
    np.testing.assert_allclose(OnnxModel(path)(**batch).numpy(), OnnxModel(plain.path)(**batch).numpy(), atol=1e-5)


def test_regression_bert_exports_one_score_and_says_so(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, tokenizer = create_model("bert-tiny", num_classes=1, is_regression=True,
                                    tokenizer_fallback=synthetic_tokenizer())
    batch = dict(tokenizer(SENTENCES, padding=True, return_tensors="pt"))
    report = export_onnx(model.eval(), tmp_path / "sts.onnx", example_batch=batch, tokenizer=tokenizer)
    assert report.argmax_agreement is None and report.max_abs_diff <= 1e-4
    assert json.loads((tmp_path / "labels.json").read_text())["is_regression"] is True
    assert OnnxModel(tmp_path / "sts.onnx")(**batch).shape == (4, 1)


def test_pruned_resnet_export_matches_pytorch(resnet_export) -> None:
    model, path = resnet_export
    images = torch.randn(5, 3, 16, 16)
    with torch.inference_mode():
        expected = model(images)
    torch.testing.assert_close(OnnxModel(path)(images), expected, atol=1e-4, rtol=1e-4)
    assert json.loads(path.with_name("labels.json").read_text())["image_shape"] == [3, 16, 16]


def test_vit_export_matches_pytorch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("vit-micro", num_classes=4, image_size=16, patch_size=4, depth=2).eval()
    path = tmp_path / "vit.onnx"
    report = export_onnx(model, path, example_batch={"pixel_values": torch.randn(1, 3, 16, 16)})
    assert report.dynamic_axes == {"pixel_values": {0: "batch"}}
    images = torch.randn(7, 3, 16, 16)
    with torch.inference_mode():
        expected = model(images)
    torch.testing.assert_close(OnnxModel(path)(pixel_values=images), expected, atol=1e-4, rtol=1e-4)


def test_broken_export_is_caught_and_nothing_is_left(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = export_module._write_onnx

    def write_then_corrupt(model, path, *args):
        axes = real_write(model, path, *args)
        graph = onnx.load(str(path))
        weight = max(graph.graph.initializer, key=lambda init: int(np.prod(init.dims)))
        values = onnx.numpy_helper.to_array(weight) * 2
        weight.CopyFrom(onnx.numpy_helper.from_array(values, weight.name))
        onnx.save(graph, str(path))
        return axes

    monkeypatch.setattr(export_module, "_write_onnx", write_then_corrupt)
    model = build_model("vit-micro", num_classes=3, image_size=8, patch_size=4, depth=1).eval()
    out = tmp_path / "out"
    with pytest.raises(UserError, match="does not match PyTorch.*nothing was written"):
        export_onnx(model, out / "model.onnx", example_batch={"pixel_values": torch.randn(2, 3, 8, 8)})
    assert not out.exists()  # no model, no labels.json, no staging folder, not even the folder it made


def test_dynamic_int8_bert_loads_and_predicts(bert_export) -> None:
    model, path = bert_export
    assert choose_method(path) == "dynamic"
    report = quantize_int8(path)
    assert report.path == str(path.with_name("model.int8.onnx")) and report.size_bytes < report.source_size_bytes
    assert "MatMulInteger" in _ops(report.path) or "DynamicQuantizeMatMul" in _ops(report.path)
    batch = dict(AutoTokenizer.from_pretrained(path.parent)(SENTENCES, padding=True, return_tensors="pt"))
    logits = OnnxModel(report.path)(**batch)
    with torch.inference_mode():
        expected = model(**batch).logits
    assert logits.shape == (4, 2)
    assert float((logits - expected).abs().max()) < 0.05  # close to fp32, not identical
    assert not torch.equal(logits, OnnxModel(path)(**batch))


def test_static_int8_cnn_is_calibrated_and_predicts(resnet_export, tmp_path: Path) -> None:
    model, path = resnet_export
    assert choose_method(path) == "static"
    with pytest.raises(UserError, match="calibration"):
        quantize_int8(path, tmp_path / "x.onnx")
    calibration = [{"pixel_values": torch.randn(16, 3, 16, 16)} for _ in range(3)]
    report = quantize_int8(path, tmp_path / "int8.onnx", calibration=calibration)
    assert report.method == "static" and "QuantizeLinear" in _ops(report.path)
    images = torch.randn(6, 3, 16, 16)
    with torch.inference_mode():
        expected = model(images)
    got = OnnxModel(report.path)(images)
    assert float((got - expected).abs().max()) < 0.1 * float(expected.abs().max())


def _image_run(root: Path) -> Path:
    """A run directory as `shrink train` leaves it: RUN/model and RUN/recipe.yaml (synthetic 16x16 stripes)."""
    torch.manual_seed(0)
    save_model(build_model("resnet20", num_classes=10, image_size=16), root / "model")
    recipe = Recipe.model_validate({"model": {"name": "resnet20"}, "data": {
        "dataset": "synthetic-image:3x16x16", "max_train_samples": 64, "max_eval_samples": 32}})
    save_recipe(recipe, root / "recipe.yaml")
    return root


def test_shrink_export_cli_quantizes_and_reports_accuracy(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = _image_run(tmp_path / "run")
    out = tmp_path / "deploy" / "model.onnx"
    assert main(["export", str(run), "--onnx", str(out), "--quantize", "int8", "--calibration-samples", "32"]) == 0
    record = json.loads(out.with_name("export.json").read_text())
    assert record["export"]["max_abs_diff"] <= 1e-4 and record["source"] == str(run.resolve())
    quantized = record["quantization"]
    assert quantized["method"] == "static" and Path(quantized["path"]).is_file()
    assert 0 <= quantized["metrics_int8"]["accuracy"] <= 1
    assert quantized["primary_delta"] == pytest.approx(
        quantized["metrics_int8"]["accuracy"] - quantized["metrics_fp32"]["accuracy"])
    labels = json.loads(out.with_name("labels.json").read_text())
    assert labels["label_names"][0] == "stripes-0deg" and len(labels["normalize"]["mean"]) == 3
    table = capsys.readouterr().out
    assert "static" in table and "nothing" in table  # the int8 method, and that a CNN has no block to fuse


@pytest.mark.parametrize("argv, message", [
    (["export", "{tmp}/missing"], "does not exist"),
    (["export", "{tmp}"], "neither a run directory"),
    (["export", "{tmp}", "--quantize", "int4"], "unknown quantization 'int4'"),
    (["export", "{tmp}/file.txt"], "not an .onnx file"),
])
def test_shrink_export_bad_input_exits_2_with_one_line(argv: list[str], message: str, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(SystemExit) as exit_info:
        main([arg.format(tmp=tmp_path) for arg in argv])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
