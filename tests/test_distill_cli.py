"""`distill` end to end, in-process at toy sizes: the demo recipe's pipeline (teacher phase, KD + MI-alpha,
outputs, ONNX), teacher-phase reuse, resume of an interrupted stage, multi-stage vision KD by layer paths,
and one-line refusals of bad input."""
import json
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, BertConfig, BertForSequenceClassification

from distill.cli import build_parser, main, recipe_from_args
from distill.config import DistillSection, KDSection
from distill.pipeline import DistillStep
from distill.run import cached_teacher_logits, distill, plan_distillation, teacher_outputs_key
from distill.teachers import build_teacher
from shrink.runs import RunDir
from shrink.data.synthetic import synthetic_tokenizer

# The demo recipe shrunk: a 2-layer teacher fine-tuned for one epoch, then KD + MI-alpha into bert-tiny.
TINY = ["--recipe", "demo", "--teacher", "bert-tiny", "--max-train-samples", "48", "--max-eval-samples", "24",
        "--batch-size", "16", "--epochs", "2", "--teacher-epochs", "1", "--max-length", "16", "--no-progress"]




def run_tiny(out, *extra):
    return distill(recipe_from_args(build_parser().parse_args([*TINY, "--out", str(out), *extra])))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    torch.set_num_threads(1)
    return run_tiny(tmp_path_factory.mktemp("distill") / "run", "--export-onnx")


def test_demo_pipeline_writes_teacher_student_and_retention(tiny_run):
    run, metrics = tiny_run.run.path, tiny_run.metrics
    assert json.loads((run / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    assert not (run / "RUNNING").exists() and (run / "teacher" / "metrics.json").exists()  # the teacher phase ran
    assert metrics["teacher_phase"]["bert-tiny"]["dev"] and metrics["teacher"] == ["bert-tiny"]
    primary = metrics["primary_metric"]
    assert metrics["retention"] == pytest.approx(metrics["student_dev"][primary] / metrics["teacher_dev"][primary])
    assert metrics["mi_k"] == 16  # MI negatives: the whole batch
    stage = metrics["stages"][0]
    assert set(stage["loss_terms"]) == {"kd", "0:mi"} and stage["teacher_outputs"] == "live"
    for role in ("teacher", "student"):
        figures = metrics[f"{role}_figures"]
        assert figures["params"] > 0 and figures["macs"] > 0 and figures["latency"]["1"]["median_ms"] > 0
    report = (run / "report.md").read_text()
    assert "| teacher | bert-tiny |" in report and "| student | bert-tiny |" in report and "retention" in report
    assert metrics["onnx"]["max_abs_diff"] < 1e-4 and (run / "model.onnx").is_file()


def test_saved_student_loads_in_plain_transformers_and_predicts_the_same(tiny_run):
    reloaded = AutoModelForSequenceClassification.from_pretrained(tiny_run.run / "model").eval()
    for folder in (tiny_run.run / "model", tiny_run.run / "teacher" / "model", tiny_run.run.path):  # + the export
        assert AutoConfig.from_pretrained(folder).id2label == {0: "negative", 1: "positive"}, folder
    batch = tiny_run.tokenizer(["good movie but dull plot", "awful acting"], padding=True, return_tensors="pt")
    tiny_run.student.eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(**batch).logits, tiny_run.student(**batch).logits, atol=1e-6)


def test_rerun_reuses_the_fine_tuned_teacher(tiny_run, capsys):
    run = tiny_run.run.path
    teacher_metrics = run / "teacher" / "metrics.json"
    written = teacher_metrics.stat().st_mtime_ns
    main([*TINY, "--out", str(run), "--overwrite", "--kd-loss", "mse", "--intermediate", "none"])
    out = capsys.readouterr().out
    assert "reusing the fine-tuned teacher" in out and "distill:" in out and "retention" in out
    assert teacher_metrics.stat().st_mtime_ns == written
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["teacher_dev"] == tiny_run.metrics["teacher_dev"]
    assert metrics["stages"][0]["teacher_outputs"] == "cached" and (run / "teacher_logits.safetensors").is_file()


def test_an_interrupted_stage_resumes_to_the_same_result(tiny_run, tmp_path, monkeypatch, capsys):
    calls = {"n": 0}
    original = DistillStep.forward

    def stop_at_step_5(self, model, batch):  # 3 steps per epoch: mid-epoch 2, after the step-4 checkpoint
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return original(self, model, batch)

    monkeypatch.setattr(DistillStep, "forward", stop_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        run_tiny(tmp_path / "run", "--checkpoint-every", "2")
    monkeypatch.setattr(DistillStep, "forward", original)
    assert (tmp_path / "run" / "RUNNING").exists() and (tmp_path / "run" / "teacher" / "metrics.json").exists()
    capsys.readouterr()
    resumed = distill(recipe_from_args(build_parser().parse_args(
        [*TINY, "--out", str(tmp_path / "run"), "--checkpoint-every", "2"])), resume=True)
    out = capsys.readouterr().out
    assert "reusing the fine-tuned teacher" in out and "resumed from step-00000004" in out
    assert resumed.metrics["stages"][0]["history"] == tiny_run.metrics["stages"][0]["history"]


VISION = """
model: {name: resnet20}
data: {dataset: "synthetic-image:1x16x16", max_train_samples: 48, max_eval_samples: 16, augment: false}
train: {batch_size: 16, epochs: 1, lr: 0.01, progress: false}
distill:
  teacher: resnet20
  teacher_train: {epochs: 1}
  stages:
    - name: features
      kd: null
      intermediate:
        - {loss: hidden_mse, teacher_layers: [layer1, layer2, layer3], student_layers: [layer1, layer2, layer3]}
    - name: logits
      kd: {loss: kl, temperature: 4.0}
      hard_weight: 0.5
"""


def test_vision_kd_in_two_stages_by_layer_paths(tmp_path, capsys):
    (tmp_path / "vision.yaml").write_text(VISION)
    main(["--recipe", str(tmp_path / "vision.yaml"), "--out", str(tmp_path / "run")])
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    features, logits = metrics["stages"]
    assert set(features["loss_terms"]) == {"0:hidden_mse"} and features["teacher_outputs"] == "live"
    assert set(logits["loss_terms"]) == {"kd", "hard"} and logits["teacher_outputs"] == "cached"
    assert (tmp_path / "run" / "stages" / "2-logits" / "best").is_dir()
    assert (tmp_path / "run" / "model" / "architecture.json").is_file() and metrics["student_figures"]["macs"] > 0
    assert "1*hidden_mse" in capsys.readouterr().out


def tiny_bert_dir(folder: Path, labels: int = 2, tokenizer=None, regression: bool = False) -> str:
    tokenizer = tokenizer or synthetic_tokenizer()
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=40, num_labels=labels,
                        problem_type="regression" if regression else None)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def other_tokenizer():
    tokenizer = synthetic_tokenizer()
    words = list(tokenizer.get_vocab())
    return type(tokenizer)(vocab={w: i for i, w in enumerate(words[:5] + sorted(words[5:], reverse=True))})


BASE = ["--dataset", "synthetic-text", "--max-train-samples", "16", "--max-eval-samples", "8", "--student", "bert-tiny"]


@pytest.mark.parametrize("args, needle", [
    (["--teacher", "{three_labels}"], "predicts 3 labels"),
    (["--teacher", "bert-tiny", "--intermediate", "mutual_info"], "unknown intermediate loss 'mutual_info'"),
    (["--teacher", "bert-tiny", "--kd-loss", "kld"], "unknown prediction loss 'kld'"),
    (["--teacher", "bert-tiny", "--intermediate", "mi", "--layer-map", "skipp"], "unknown layer map 'skipp'"),
    (["--teacher", "bert-tiny", "--intermediate", "cos", "--layer-map", "0:0,6:2"], "teacher hidden layer 6"),
    (["--teacher", "bert-tiny", "--intermediate", "mi", "--alpha", "1.5"], "alpha in [0, 1]"),
    (["--teacher", "{regression}", "--kd-loss", "kl"], "regression task needs the mse KD loss"),
    (["--teacher", "{other_vocab}", "--student", "{student}", "--intermediate", "hidden_mse"], "tokenize differently"),
    (["--teacher", "bert-tiny", "--student-init", "from_teacher", "--student", "bert-mini"], "hidden_size equal"),
    (["--teacher", "bert-tiny", "--set", "distill.kd.temprature=2"], "distill.kd.temprature"),
    (["--teacher", "bert-tiny,bert-tiny", "--teacher-kind", "single"], "single teacher takes one model"),
])
def test_bad_input_is_one_line_exit_2_and_leaves_no_run(args, needle, tmp_path, refused):
    dirs = {"three_labels": tiny_bert_dir(tmp_path / "t3", labels=3),
            "regression": tiny_bert_dir(tmp_path / "reg", labels=1, regression=True),
            "other_vocab": tiny_bert_dir(tmp_path / "other", tokenizer=other_tokenizer()),
            "student": tiny_bert_dir(tmp_path / "student")}
    data = ["--dataset", "text-files", "--data-dir", str(tmp_path)] if "{regression}" in args else []
    if data:
        for split in ("train", "dev"):
            (tmp_path / f"{split}.csv").write_text("text,label\ngood fun,0.9\nbad plot,0.1\ndull,0.2\n")
    argv = [*BASE, *data, *(a.format(**dirs) for a in args), "--out", str(tmp_path / "run")]
    assert needle in refused(main, argv)
    assert not (tmp_path / "run").exists()


def test_teacher_logit_cache_follows_what_the_logits_depend_on(tmp_path):
    """Changed teacher weights, teacher settings or max length must never reuse the saved logits."""
    def plan_for(*extra):
        plan = plan_distillation(recipe_from_args(build_parser().parse_args([*TINY, "--intermediate", "none", *extra])))
        return plan, build_teacher([member.model for member in plan.members])

    plan, teacher = plan_for()
    key = teacher_outputs_key(plan, teacher)
    assert key == teacher_outputs_key(*plan_for())  # the same inputs: the same key
    assert key != teacher_outputs_key(*plan_for("--max-length", "12"))
    other, _ = plan_for()
    other.recipe.distill.teacher_args["attn_implementation"] = "eager"
    assert key != teacher_outputs_key(other, teacher)
    run = RunDir(tmp_path)
    first = cached_teacher_logits(plan, teacher, run)
    with torch.no_grad():
        next(teacher.parameters()).add_(0.5)  # the teacher retrained in place
    assert teacher_outputs_key(plan, teacher) != key
    assert not torch.equal(cached_teacher_logits(plan, teacher, run), first)


def test_bare_distill_runs_the_default_pipeline_and_flags_tune_or_remove_it(tmp_path):
    """No objective given: KD (kl, T = 2) + MI-alpha (0.9, mlp, skip, weight 1, critic at 10x lr), the benchmarks'
    best, and the saved recipe spells it out so --resume reruns the same; --alpha tunes it; --intermediate none
    removes it."""
    def planned(*extra):
        recipe = recipe_from_args(build_parser().parse_args(
            [*BASE, "--teacher", "bert-tiny", "--out", str(tmp_path / "run"), *extra]))
        return recipe, plan_distillation(recipe).stages[0]

    recipe, stage = planned()
    assert (stage.kd.name, stage.kd.temperature) == ("kl", 2.0)
    [term] = stage.terms
    assert term.name == "mi" and term.weight == 1.0 and stage.section.intermediate[0].layer_map == "skip"
    assert next(iter(term.objective.losses.values())).alpha == 0.9 and term.objective.lr_scale == 10.0
    saved = recipe.model_dump(mode="json")["distill"]
    assert saved["kd"]["loss"] == "kl" and saved["intermediate"][0]["loss"] == "mi"  # explicit on resume
    _, tuned = planned("--alpha", "0.5")
    assert next(iter(tuned.terms[0].objective.losses.values())).alpha == 0.5 and tuned.kd.name == "kl"
    _, alone = planned("--intermediate", "none")
    assert alone.terms == [] and alone.uses_cache and alone.kd.temperature == 2.0
    _, slower = planned("--inter-lr-scale", "1")
    assert getattr(slower.terms[0].objective, "lr_scale", 1.0) == 1.0
    _, chosen = planned("--kd-loss", "mse", "--intermediate", "hidden_mse")
    assert chosen.kd.name == "mse" and [t.name for t in chosen.terms] == ["hidden_mse"]


def test_default_pipeline_keeps_what_the_recipe_chose_and_what_the_models_cannot_take():
    section = DistillSection(kd=KDSection(loss="ce"))
    assert section.fill_default_pipeline(regression=False, reads_hidden_states=False) == []
    assert section.kd.loss == "ce" and section.intermediate == []  # a CNN pair: no layers to read by default
    regression = DistillSection()
    assert regression.fill_default_pipeline(regression=True, reads_hidden_states=True) == ["intermediate"]
    assert regression.kd == KDSection()  # regression KD stays mse at T = 1
    staged = DistillSection(stages=[{"name": "only", "kd": {"loss": "kl"}}])
    assert staged.fill_default_pipeline(regression=False, reads_hidden_states=True) == []
