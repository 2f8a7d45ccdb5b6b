"""Outputs that Hugging Face tools open: label names in saved configs, an export folder laid out as optimum's."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import onnx
import pytest
import torch
from transformers import AutoConfig, AutoTokenizer, pipeline

from shrink.data import load_task_data
from shrink.deploy_cli import resolve_source
from shrink.errors import UserError
from shrink.experiment import load_for_task
from shrink.export import DEFAULT_OPSET, export_onnx
from shrink.models import build_model, save_model

LABELS = ["negative", "positive"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A bert-tiny sized for the synthetic sentiment task, saved, and exported beside it (umask 022)."""
    previous = os.umask(0o022)
    try:
        task = load_task_data("synthetic-text", max_train_samples=8, max_eval_samples=8, seed=0)
        model, tokenizer = load_for_task("bert-tiny", task, task.tokenizer)
        root = tmp_path_factory.mktemp("hf")
        save_model(model, root / "model", tokenizer)
        batch = dict(tokenizer(["good film", "a dull and boring plot"], padding=True, return_tensors="pt"))
        export_onnx(model.eval(), root / "deploy" / "model.onnx", example_batch=batch, tokenizer=tokenizer,
                    label_names=task.label_names)
    finally:
        os.umask(previous)
    return root / "model", root / "deploy"


def test_saved_model_config_names_the_labels_and_pipeline_answers_with_them(saved) -> None:
    model_dir, _ = saved
    config = AutoConfig.from_pretrained(model_dir)
    assert config.id2label == dict(enumerate(LABELS)) and config.label2id == {"negative": 0, "positive": 1}
    answers = pipeline("text-classification", model=str(model_dir), device="cpu")(["good film", "dull plot"])
    assert {answer["label"] for answer in answers} <= set(LABELS)


def test_export_folder_loads_with_auto_classes_at_the_default_opset(saved) -> None:
    _, deploy = saved
    assert AutoConfig.from_pretrained(deploy).id2label == dict(enumerate(LABELS))
    assert AutoTokenizer.from_pretrained(deploy)("good film")["input_ids"]
    opsets = {entry.domain: entry.version for entry in onnx.load(str(deploy / "model.onnx")).opset_import}
    assert DEFAULT_OPSET == 17 and opsets[""] == 17
    for name in ("model.onnx", "config.json", "labels.json", "tokenizer_config.json"):
        assert stat.S_IMODE((deploy / name).stat().st_mode) == 0o644, name


def test_an_export_folder_is_benched_as_onnx_not_loaded_as_a_pytorch_model(saved) -> None:
    _, deploy = saved
    source = resolve_source(deploy)
    assert source.model_dir is None and source.onnx_files == [deploy / "model.onnx"]


def test_an_opset_newer_than_the_runtime_supports_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="opset 99 is newer"):
        export_onnx(build_model("resnet20", image_size=8), tmp_path / "model.onnx",
                    example_batch={"pixel_values": torch.zeros(2, 3, 8, 8)}, opset=99)
    assert not (tmp_path / "model.onnx").exists()
