"""Pruning transformers: heads and FFN neurons of a tiny BERT and a zoo ViT, and whole blocks by Block Influence;
the pruned BERT reloads in plain transformers with the same predictions and exports to ONNX through
`shrink export`."""
import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification, BertConfig, BertForSequenceClassification

from prune.cli import main as prune_main
from prune.importance import CRITERIA
from prune.pruner import prune_model
from prune.transformers import TransformerPruner, block_influence, prune_depth, pruning_start, transformer_blocks
from shrink.bench import count_macs, count_parameters
from shrink.cli import main as shrink_main
from shrink.errors import UserError
from shrink.models import build_model, load_model, save_model


def tiny_bert(layers: int = 2) -> BertForSequenceClassification:
    config = BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=32, num_labels=2)
    return BertForSequenceClassification(config).eval()


def token_batch() -> dict[str, torch.Tensor]:
    ids = torch.randint(1, 60, (3, 12))
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0  # padding must not change what the unpadded tokens compute
    return {"input_ids": ids, "attention_mask": mask}


def test_zero_heads_and_neurons_go_first_and_outputs_stay():
    model, batch = tiny_bert(), token_batch()
    with torch.no_grad():
        for layer in model.bert.encoder.layer:  # head 1 and the first 16 FFN neurons contribute nothing
            for linear in (layer.attention.self.query, layer.attention.self.key, layer.attention.self.value):
                linear.weight[8:16] = 0
                linear.bias[8:16] = 0
            layer.attention.output.dense.weight[:, 8:16] = 0
            layer.intermediate.dense.weight[:16] = 0
            layer.intermediate.dense.bias[:16] = 0
            layer.output.dense.weight[:, :16] = 0
        before = model(**batch).logits
    pruner = TransformerPruner(model, batch, CRITERIA.get("group-l2").make(), iterative_steps=4)
    pruner.step()  # 4 -> 3 heads, 64 -> 48 neurons in every layer
    assert model.config.pruned_heads == {0: [1], 1: [1]} and model.config.intermediate_size == 48
    assert [(b.heads, b.ffn_width) for b in transformer_blocks(model)] == [(3, 48), (3, 48)]
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, before, atol=1e-6, rtol=0)


def test_pruned_bert_reloads_in_plain_transformers_with_the_same_predictions(tmp_path):
    base, batch = tiny_bert(), token_batch()
    pruned, pruner = pruning_start(base)
    result = prune_model(pruned, batch, criterion="taylor", speedup=1.8, iterative_steps=40, pruner=pruner,
                         grad_fn=lambda model: model(**batch).logits.logsumexp(-1).sum().backward())
    assert result.speedup >= 1.8 and pruned.bert.encoder.layer[0].attention.self.num_attention_heads < 4
    heads = {len(layer.attention.self.query.weight) // 8 for layer in pruned.bert.encoder.layer}
    widths = {layer.intermediate.dense.out_features for layer in pruned.bert.encoder.layer}
    assert widths == {pruned.config.intermediate_size} and pruned.config.intermediate_size < 64
    assert heads == {4 - len(removed) for removed in pruned.config.pruned_heads.values()}
    save_model(pruned, tmp_path / "model")
    plain = AutoModelForSequenceClassification.from_pretrained(tmp_path / "model").eval()
    reloaded = load_model(tmp_path / "model").eval()  # shrink cuts the zero heads out again
    assert reloaded.bert.encoder.layer[0].attention.self.query.weight.shape == \
        pruned.bert.encoder.layer[0].attention.self.query.weight.shape
    with torch.no_grad():
        expected = pruned(**batch).logits
        torch.testing.assert_close(plain(**batch).logits, expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(reloaded(**batch).logits, expected, atol=1e-5, rtol=0)


def test_vit_prunes_heads_and_mlp_widths_and_reloads(tmp_path):
    model = build_model("vit-micro", num_classes=5, image_size=16, patch_size=4).eval()
    images = torch.randn(2, 3, 16, 16)
    pruned, pruner = pruning_start(model)
    result = prune_model(pruned, images[:1], criterion="random", speedup=1.5, iterative_steps=20, pruner=pruner)
    blocks = transformer_blocks(pruned)
    assert result.speedup >= 1.5 and {b.heads for b in blocks} == {1} and len({b.ffn_width for b in blocks}) == 1
    assert blocks[0].ffn_width < 256
    save_model(pruned, tmp_path / "vit")
    with torch.no_grad():
        torch.testing.assert_close(load_model(tmp_path / "vit").eval()(images), pruned(images))
    with pytest.raises(UserError, match="does not score transformer layers"):
        prune_model(pruning_start(model)[0], images[:1], criterion="bn-scale", speedup=1.5,
                    pruner=pruning_start(model)[1])
    with pytest.raises(UserError, match="--max-layer-ratio caps CNN layers"):
        prune_model(pruning_start(model)[0], images[:1], speedup=1.5, max_layer_ratio=0.5,
                    pruner=pruning_start(model)[1])


def test_a_block_that_does_nothing_is_the_one_removed_and_outputs_stay(tmp_path):
    model = build_model("vit-micro", num_classes=5, image_size=16, patch_size=4).eval()
    with torch.no_grad():  # block 2 adds zero to its input: an identity
        for linear in (model.blocks[2].attn.proj, model.blocks[2].mlp[2]):
            linear.weight.zero_()
            linear.bias.zero_()
        images = torch.randn(4, 3, 16, 16)
        before = model(images)
    depth = prune_depth(model, 1, [{"pixel_values": images}])
    assert depth.dropped == [2] and depth.kept == [0, 1, 3] and len(model.blocks) == 3
    assert abs(depth.influence[2]) < 1e-9 and min(depth.influence[:2] + depth.influence[3:]) > 1e-3
    save_model(model, tmp_path / "vit")
    with torch.no_grad():
        torch.testing.assert_close(model(images), before)
        torch.testing.assert_close(load_model(tmp_path / "vit").eval()(images), before)


def test_block_influence_reads_real_tokens_only_and_a_shallower_bert_reloads_in_plain_transformers(tmp_path):
    model, batch = tiny_bert(layers=3), token_batch()
    padded = {"input_ids": torch.cat([batch["input_ids"], torch.randint(1, 60, (3, 5))], 1),
              "attention_mask": torch.cat([batch["attention_mask"], torch.zeros(3, 5, dtype=torch.long)], 1)}
    influence = block_influence(model, [batch])
    torch.testing.assert_close(torch.tensor(block_influence(model, [padded])), torch.tensor(influence))
    pruned, pruner = pruning_start(model)
    depth = prune_depth(pruned, 1, [batch])
    assert depth.dropped == [min(range(3), key=influence.__getitem__)] and pruned.config.num_hidden_layers == 2
    result = prune_model(pruned, batch, criterion="group-l2", speedup=2.5, iterative_steps=20, pruner=pruner,
                         base=(count_macs(model, batch), count_parameters(model)))  # targets count from the unpruned
    assert result.speedup >= 2.5 and pruned.config.intermediate_size < 64
    save_model(pruned, tmp_path / "model")
    plain = AutoModelForSequenceClassification.from_pretrained(tmp_path / "model").eval()
    assert len(plain.bert.encoder.layer) == 2
    with torch.no_grad():
        torch.testing.assert_close(plain(**batch).logits, pruned(**batch).logits, atol=1e-5, rtol=0)


def test_prune_command_drops_a_layer_and_prunes_a_bert_with_kd_recovery_then_shrink_export(tmp_path, capsys):
    run = tmp_path / "run"
    prune_main(["--model", "bert-tiny", "--dataset", "synthetic-text", "--max-train-samples", "32",
                "--max-eval-samples", "16", "--max-length", "16", "--batch-size", "16", "--epochs", "1",
                "--speedup", "4", "--drop-layers", "1", "--iterative-steps", "40", "--finetune-kd",
                "--latency-runtime", "torch", "--no-progress", "--out", str(run)])
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["speedup"] >= 4 and metrics["pruned"]["params"] < metrics["base"]["params"]
    config = json.loads((run / "model" / "config.json").read_text())
    assert config["pruned_heads"] and config["num_hidden_layers"] == 1 and len(metrics["depth"]["kept"]) == 1
    assert "depth: removed blocks" in capsys.readouterr().out
    assert shrink_main(["export", str(run)]) == 0
    exported = json.loads((run / "export.json").read_text())["export"]
    assert exported["argmax_agreement"] == 1.0 and exported["max_abs_diff"] < 1e-4
