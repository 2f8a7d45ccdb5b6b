"""`prune` end to end on a tiny network: metatrain, metanetwork, prune, finetune, run directory; reuse of a
saved metanetwork; resume; recipes; one-line errors."""
import json

import pytest
from torch import nn

from prune.cli import main
from prune.config import PruneRecipe
from prune.metanet import load_metanet
from shrink.bench import count_macs
from shrink.models import load_model
from shrink.recipe import load_recipe

TINY = ["--model", "resnet20", "--dataset", "synthetic-image:3x8x8", "--max-train-samples", "96",
        "--max-eval-samples", "32", "--batch-size", "32", "--epochs", "1", "--lr", "0.01", "--no-progress",
        "--latency-runtime", "torch", "--latency-batch", "8"]
META = ["--data-models", "2", "--meta-epochs", "1", "--set", "prune.meta.hidden=8", "--set", "prune.meta.layers=1"]


@pytest.fixture(scope="module")
def metanet_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("prune") / "run"
    main(TINY + META + ["--method", "metanet", "--speedup", "1.5", "--kd-weight", "0.5", "--export-onnx",
                        "--latency-runtime", "onnxruntime", "--out", str(out)])
    return out


def test_metanet_pipeline_writes_a_complete_run(metanet_run):
    metrics = json.loads((metanet_run / "metrics.json").read_text())
    assert metrics["method"] == "metanet" and metrics["target"] == {"speedup": 1.5}
    assert 1.5 <= metrics["speedup"] <= 1.05 * 1.5
    assert metrics["pruned"]["macs_torch_pruning"] > metrics["pruned"]["macs"]  # + BatchNorm, ReLU, pooling
    assert metrics["speedup_torch_pruning"] == pytest.approx(metrics["speedup"], rel=0.1)
    assert metrics["pruned"]["macs"] < metrics["base"]["macs"] and metrics["pruned"]["params"] < metrics["base"]["params"]
    assert 0.0 <= metrics["pruned"]["dev"]["accuracy"] <= 1.0 and set(metrics["latency_speedup"]) == {"1", "8"}
    assert metrics["latency_runtime"] == "onnxruntime" and metrics["pruned"]["runtime"] == "onnxruntime"
    assert "| MACs speed-up | latency speed-up b1 | latency speed-up b8 |" in (metanet_run / "report.md").read_text()
    assert metrics["onnx"]["argmax_agreement"] == 1.0
    for name in ("base", "light", "transformed", "model", "metanet", "collection/data-model-1", "model.onnx",
                 "accuracy_vs_speedup.png", "report.md", "recipe.yaml"):
        assert (metanet_run / name).exists(), name
    assert not (metanet_run / "RUNNING").exists()
    pruned = load_model(metanet_run / "model").eval()
    assert sum(p.numel() for p in pruned.parameters()) == metrics["pruned"]["params"]
    assert json.loads((metanet_run / "metanet" / "metatrain.json").read_text())["history"][0]["epoch"] == 0


def test_resume_reuses_every_finished_stage(metanet_run, capsys):
    (metanet_run / "metrics.json").unlink()
    main(TINY + META + ["--method", "metanet", "--speedup", "1.5", "--kd-weight", "0.5", "--export-onnx",
                        "--latency-runtime", "onnxruntime", "--out", str(metanet_run), "--resume"])  # the same settings: resume refuses changes
    out = capsys.readouterr().out
    for stage in ("base", "light", "transformed", "model"):
        assert f"{stage}: reusing the saved model" in out or f"{stage}: reusing the saved pruned model" in out
    assert "data model" not in out  # the collection and the metanetwork were not rebuilt
    assert (metanet_run / "metrics.json").exists()


def test_metatrain_then_prune_with_the_saved_metanetwork(tmp_path):
    main(["metatrain"] + TINY + META + ["--out", str(tmp_path / "meta")])
    metanet = load_metanet(tmp_path / "meta" / "metanet")
    assert metanet.config.hidden == 8 and not (tmp_path / "meta" / "base").exists()
    main(TINY + ["--method", "metanet", "--metanet", str(tmp_path / "meta" / "metanet"), "--speedup", "1.4",
                 "--out", str(tmp_path / "run")])
    assert not (tmp_path / "run" / "collection").exists() and not (tmp_path / "run" / "metanet").exists()
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["speedup"] >= 1.4


def test_metatrain_on_a_given_collection(metanet_run, tmp_path):
    main(["metatrain"] + TINY + META + ["--collection", str(metanet_run / "collection"), "--out", str(tmp_path / "m")])
    assert not (tmp_path / "m" / "collection").exists()  # nothing trained: the given networks were used
    assert load_metanet(tmp_path / "m" / "metanet").config.hidden == 8


def test_baseline_method_on_a_given_base_model(metanet_run, tmp_path):
    main(TINY + ["--base-model", str(metanet_run / "base"), "--method", "random", "--param-ratio", "1.3",
                 "--out", str(tmp_path / "run")])
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["method"] == "random" and 1.3 <= metrics["param_ratio"] <= 1.05 * 1.3
    assert not (tmp_path / "run" / "base").exists()
    base = load_model(metanet_run / "base").eval()
    assert metrics["base"]["params"] == sum(p.numel() for p in base.parameters())


@pytest.mark.parametrize("name", ["resnet56-cifar10", "vgg19-cifar100"])
def test_shipped_recipes_validate(name):
    recipe = load_recipe(name, PruneRecipe)
    assert recipe.prune.method == "metanet" and recipe.prune.meta.held_out < recipe.prune.meta.data_models
    finetune = recipe.prune.finetune.apply(recipe.train)  # the spec's SGD step schedule, with the phase's milestones
    assert (finetune.optimizer, finetune.schedule, finetune.lr) == ("sgd", "multistep", 0.01)
    assert max(finetune.milestones) < finetune.epochs and finetune.milestones != recipe.train.milestones


@pytest.mark.parametrize(("extra", "message"), [
    (["--method", "l3"], "unknown importance criterion 'l3'"),
    (["--speedup", "2", "--param-ratio", "2"], "give one target"),
    (["--method", "metanet", "--metanet", "missing-folder"], "cannot load a metanetwork"),
    (["--set", "prune.meta.held_out=5"], "held_out"),
    (["--set", "prune.finetune.milestones=[2]"], "prune.finetune: milestones are only used by schedule 'multistep'"),
    (["--model", "vit-micro", "--method", "metanet"], "are supported"),
    (["--method", "metanet", "--collection", "no-such-folder"], "holds 0 saved model folder(s)"),
    (["--latency-speedup", "2", "--param-ratio", "2"], "give one target"),
    (["--fast-widths", "--round-to", "8"], "round_to fixes the width multiple"),
    (["--latency-runtime", "tensorrt"], "latency_runtime"),
])
def test_bad_input_is_one_line_and_leaves_no_run(extra, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(TINY + extra + ["--out", str(tmp_path / "run")])
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_latency_target_prunes_until_the_measured_speedup_with_fast_widths(metanet_run, tmp_path, monkeypatch):
    import prune.cli
    import prune.latency
    from test_prune_latency import StubTable

    class MacsMeter:  # timing is the benchmark's business: here a 'measurement' of MACs ratio ** 0.7
        def __init__(self, base, make_batch, batch, runtime):
            self.base_macs, self.make_batch = count_macs(base, make_batch(1)), make_batch

        def __call__(self, model):
            return (self.base_macs / count_macs(model, self.make_batch(1))) ** 0.7

    monkeypatch.setattr(prune.cli, "MeasuredSpeedup", MacsMeter)
    monkeypatch.setattr(prune.latency, "LatencyTable", lambda batch: StubTable())
    main(TINY + ["--base-model", str(metanet_run / "base"), "--latency-speedup", "1.4", "--out", str(tmp_path / "r")])
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["target"] == {"latency_speedup": 1.4} and metrics["prune"]["latency_speedup"] >= 1.4
    assert metrics["speedup"] > 1.4 and "latency_speedup" in metrics["prune"]["history"][-1]
    widths = [m.out_channels for m in load_model(tmp_path / "r" / "model").modules() if isinstance(m, nn.Conv2d)]
    assert sum(width % 4 == 0 for width in widths) > len(widths) / 2  # the stub table's fast widths


def test_an_interrupted_finetune_resumes_from_its_own_checkpoint(tmp_path, capsys, monkeypatch):
    from shrink.train import Trainer

    args = TINY + ["--method", "group-l2", "--speedup", "1.3", "--finetune-epochs", "2", "--checkpoint-every", "1",
                   "--out", str(tmp_path / "run")]
    original, calls = Trainer._forward, {"n": 0}

    def stop_in_the_finetune(self, batch):
        calls["n"] += 1
        if calls["n"] == 8:  # 3 batches train the base, then the finetune's 5th step: after its step-4 checkpoint
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(Trainer, "_forward", stop_in_the_finetune)
    with pytest.raises(KeyboardInterrupt):
        main(args)
    monkeypatch.setattr(Trainer, "_forward", original)
    assert not (tmp_path / "run" / "metrics.json").exists() and (tmp_path / "run" / "phases").is_dir()
    capsys.readouterr()
    main(args + ["--resume"])
    out = capsys.readouterr().out
    assert "base: reusing the saved model" in out and "resumed from step-00000004" in out
    assert (tmp_path / "run" / "metrics.json").exists() and not (tmp_path / "run" / "phases").exists()
