"""The metanetwork: near-identity at initialisation, dense path equal to PyG's, gradients, save/load;
meta-training: the regulariser equals Torch-Pruning's, meta-steps lower the loss, selection and saving."""
import json

import pytest
import torch
import torch_pruning as tp
from torch.func import functional_call
from torch.nn import functional as F

from prune.graph import graph_params, network_to_graph
from prune.metanet import MetaNetwork, apply_metanet, load_metanet, save_metanet
from prune.metatrain import (DataModel, MetaTrainConfig, group_norm_penalty, meta_step, meta_train,
                             norm_concentration, recalibrate_batchnorm, reference_ce_scale, regularizer_groups,
                             selection_score)
from prune.pruner import prune_model
from shrink.errors import UserError
from shrink.models import build_model

IMAGE = (3, 8, 8)


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    model = build_model("resnet20", num_classes=10).eval()
    return model, network_to_graph(model, torch.zeros(1, *IMAGE))


def run(metanet, graph, dense=True):
    data = graph.data
    return metanet(data.x, data.edge_index, data.edge_attr, graph.layout.blocks if dense else None)


def test_fresh_metanetwork_returns_its_input_within_its_output_scale(resnet):
    model, graph = resnet
    rho = 0.01
    metanet = MetaNetwork(graph.layout.node_dim, graph.layout.edge_dim, hidden=16, layers=2, rho=rho)
    with torch.no_grad():
        x_pred, e_pred = run(metanet, graph)
    assert x_pred.shape == graph.data.x.shape and e_pred.shape == graph.data.edge_attr.shape
    for pred, given in ((x_pred, graph.data.x), (e_pred, graph.data.edge_attr)):
        change = (pred - given).abs().max()
        assert 0 < change < 5 * rho
    moved = apply_metanet(metanet, model, torch.zeros(1, *IMAGE))
    for name, param in model.named_parameters():
        assert (moved.get_parameter(name) - param).abs().max() < 5 * rho, name
    for name, buffer in model.named_buffers():  # running statistics are read, never predicted
        assert torch.equal(moved.get_buffer(name), buffer), name


def test_dense_block_path_equals_torch_geometric_message_passing(resnet):
    _, graph = resnet
    metanet = MetaNetwork(graph.layout.node_dim, graph.layout.edge_dim, hidden=8, layers=2, rho=1.0,
                          checkpoint_layers=False)
    dense, generic = run(metanet, graph), run(metanet, graph, dense=False)
    for a, b in zip(dense, generic):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    dense_grads = torch.autograd.grad(sum(out.square().sum() for out in dense), list(metanet.parameters()))
    generic_grads = torch.autograd.grad(sum(out.square().sum() for out in generic), list(metanet.parameters()))
    for a, b in zip(dense_grads, generic_grads):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)


def test_gradient_reaches_every_metanetwork_parameter_through_the_weights(resnet):
    _, graph = resnet
    metanet = MetaNetwork(graph.layout.node_dim, graph.layout.edge_dim, hidden=8, layers=2)
    params = graph_params(graph.layout, *run(metanet, graph))
    loss = sum(param.square().sum() for param in params.values())
    loss.backward()
    for name, param in metanet.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


def test_checkpointed_layers_give_the_same_gradient(resnet):
    _, graph = resnet
    plain = MetaNetwork(graph.layout.node_dim, graph.layout.edge_dim, hidden=8, layers=2, checkpoint_layers=False)
    checkpointed = MetaNetwork(graph.layout.node_dim, graph.layout.edge_dim, hidden=8, layers=2)
    checkpointed.load_state_dict(plain.state_dict())
    grads = [torch.autograd.grad(sum(out.sum() for out in run(net, graph)), list(net.parameters()))
             for net in (plain, checkpointed)]
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


def test_save_and_load_give_the_same_outputs(resnet, tmp_path):
    _, graph = resnet
    metanet = MetaNetwork(graph.layout.node_dim, graph.layout.edge_dim, hidden=8, layers=2, rho=0.05)
    save_metanet(metanet, tmp_path / "metanet")
    loaded = load_metanet(tmp_path / "metanet")
    assert loaded.config == metanet.config
    with torch.no_grad():
        for a, b in zip(run(metanet, graph), run(loaded, graph)):
            assert torch.equal(a, b)


def test_wrong_inputs_are_explained(resnet, tmp_path):
    _, graph = resnet
    with pytest.raises(UserError, match="prune metatrain"):
        load_metanet(tmp_path / "missing")
    with pytest.raises(UserError, match="node/edge features of size 5/9"):
        run(MetaNetwork(5, 9, hidden=8, layers=1), graph)


# ------------------------------------------------------------------------------------------ meta-training
def trained_like(model):
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def tiny_data_model(seed):
    torch.manual_seed(seed)
    model = build_model("resnet20", num_classes=4, image_size=8)
    prune_model(model, torch.zeros(1, *IMAGE), speedup=3.0, criterion="random")  # a narrow irregular network
    return DataModel.from_model(trained_like(model), torch.zeros(1, *IMAGE), name=f"seed-{seed}")


def batches(count, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return [{"pixel_values": torch.randn(16, *IMAGE, generator=generator),
             "labels": torch.randint(0, 4, (16,), generator=generator)} for _ in range(count)]


def test_explicit_regulariser_gradient_equals_torch_pruning_regularize():
    model = trained_like(build_model("resnet20", num_classes=10, image_size=8))
    example = torch.zeros(1, *IMAGE)
    importance = tp.importance.GroupMagnitudeImportance(p=2, group_reduction="mean", normalizer="max")
    pruner = tp.pruner.GroupNormPruner(model, example, importance, reg=10, ignored_layers=[model.fc])
    for param in model.parameters():
        param.grad = torch.zeros_like(param)
    pruner.regularize(model, alpha=16, bias=False)
    leaves = {name: param.detach().clone().requires_grad_() for name, param in model.named_parameters()}
    group_norm_penalty(regularizer_groups(model, example), leaves, reg=10, alpha=16).backward()
    for name, param in model.named_parameters():
        expected = param.grad if param.grad.abs().sum() > 0 else None
        got = leaves[name].grad
        if expected is None:
            assert got is None or got.abs().sum() == 0, name
        else:
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)
    assert model.fc.bias.grad.abs().sum() == 0  # the classifier's outputs are not regularised


def test_meta_steps_lower_the_meta_loss_and_reach_the_metanetwork():
    item, data = tiny_data_model(0), batches(2)
    metanet = MetaNetwork(item.graph.layout.node_dim, item.graph.layout.edge_dim, hidden=16, layers=2)
    optimizer = torch.optim.AdamW(metanet.parameters(), lr=1e-2)
    losses = []
    for _ in range(5):
        optimizer.zero_grad()
        terms = meta_step(metanet, item, data, reg=1.0)
        assert not terms["skipped"]
        assert all(param.grad is not None and torch.isfinite(param.grad).all() for param in metanet.parameters())
        optimizer.step()
        losses.append(terms["ce"] + terms["reg"])
    assert losses[-1] < losses[0]
    assert all(param.grad is None for param in item.model.parameters())  # the data model itself is untouched


def test_meta_train_selects_on_held_out_models_and_saves(tmp_path):
    collection, held_out = [tiny_data_model(0)], [tiny_data_model(1)]
    metanet = MetaNetwork(collection[0].graph.layout.node_dim, hidden=8, layers=1)
    config = MetaTrainConfig(epochs=2, lr=1e-2, select_speedup=1.3, progress=False)
    result = meta_train(metanet, collection, held_out, batches(1), batches(1, seed=2), config,
                        save_dir=tmp_path / "metanet", log=lambda line: None)
    assert [entry["epoch"] for entry in result.history] == [0, 1, 2]
    assert result.best_score == max(entry["score"] for entry in result.history)
    assert all(0.4 <= entry["concentration"] <= 1 for entry in result.history)
    assert result.history[result.best_epoch]["score"] == result.best_score
    loaded = load_metanet(tmp_path / "metanet")
    for name, value in metanet.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value)
    assert json.loads((tmp_path / "metanet" / "metatrain.json").read_text())["best_epoch"] == result.best_epoch
    with pytest.raises(UserError, match="held-out"):
        meta_train(metanet, collection, [], batches(1), batches(1), config)


def fresh_metanet(item):
    torch.manual_seed(0)  # the same metanetwork every time
    return MetaNetwork(item.graph.layout.node_dim, item.graph.layout.edge_dim, hidden=8, layers=1)


def test_meta_step_gradient_equals_backpropagating_the_whole_meta_loss():
    item, data = tiny_data_model(0), batches(2)
    metanet = fresh_metanet(item)
    terms = meta_step(metanet, item, data, reg=2.0, ce_scale=3.0)
    accumulated = [param.grad.clone() for param in metanet.parameters()]
    metanet = fresh_metanet(item)
    graph = item.graph
    weights = graph_params(graph.layout, *metanet(graph.data.x, graph.data.edge_index, graph.data.edge_attr,
                                                  graph.layout.blocks))
    ce = sum(3.0 * F.cross_entropy(functional_call(item.model, weights, (batch["pixel_values"],)), batch["labels"])
             for batch in data)
    (ce + group_norm_penalty(item.groups, weights, 2.0, 16.0)).backward()
    for got, param in zip(accumulated, metanet.parameters()):
        torch.testing.assert_close(got, param.grad, rtol=1e-4, atol=1e-6)
    assert terms["ce"] == pytest.approx(float(ce), rel=1e-5) and terms["reg_to_ce_grad"] > 0


def test_ce_scale_and_reg_set_the_balance_of_the_two_gradients():
    item, data = tiny_data_model(0), batches(2)
    ratio = {(scale, reg): meta_step(fresh_metanet(item), item, data, reg=reg, ce_scale=scale)["reg_to_ce_grad"]
             for scale, reg in [(1.0, 2.0), (1.0, 4.0), (2.0, 4.0)]}
    assert ratio[1.0, 4.0] == pytest.approx(2 * ratio[1.0, 2.0], rel=1e-4)
    assert ratio[2.0, 4.0] == pytest.approx(ratio[1.0, 2.0], rel=1e-4)
    # the reference: ~100 batch means (45k examples / 500); 20 batches seen -> each weighs 4.5
    assert reference_ce_scale(45_000, 20) == pytest.approx(4.5)


def test_batch_stats_meta_step_ignores_stale_running_statistics_and_leaves_them_untouched():
    item, data = tiny_data_model(0), batches(2)
    with torch.no_grad():
        item.model.fc.weight.mul_(100)  # logits far from uniform, so the CE feels the features
    item = DataModel.from_model(item.model, item.example_input)
    kept = {name: buffer.clone() for name, buffer in item.model.named_buffers()}
    ce = {stats: meta_step(fresh_metanet(item), item, data, batch_stats=stats)["ce"] for stats in (False, True)}
    for name, buffer in item.model.named_buffers():
        assert torch.equal(buffer, kept[name]), name  # the data model keeps its own statistics
    assert not item.model.training
    with torch.no_grad():  # statistics gone stale, as after the metanetwork rescales channels
        for module in item.model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.add_(3.0)
                module.running_var.mul_(0.01)
    stale = {stats: meta_step(fresh_metanet(item), item, data, batch_stats=stats)["ce"] for stats in (False, True)}
    assert stale[True] == pytest.approx(ce[True], rel=1e-5) and stale[False] != pytest.approx(ce[False], rel=1e-2)


def test_batchnorm_recalibration_reads_about_the_asked_examples_and_keeps_eval_mode():
    model = tiny_data_model(0).model
    recalibrate_batchnorm(model, batches(4), examples=32)  # batches of 16: two are read
    assert not model.training
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(int(m.num_batches_tracked) == 2 for m in norms)


def test_selection_scores_held_out_models_on_fresh_batchnorm_statistics():
    """A held-out model's stale running statistics must not decide the score of a metanetwork."""
    calibration, val = batches(4), batches(2, seed=2)
    clean, stale = tiny_data_model(1), tiny_data_model(1)
    recalibrate_batchnorm(clean.model, calibration)
    for module in stale.model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.add_(3.0)
            module.running_var.mul_(50.0)
    identity = MetaNetwork(clean.graph.layout.node_dim, clean.graph.layout.edge_dim, hidden=8, layers=1, rho=0.0)
    scores = [selection_score(identity, [item], val, 1.3, calibration) for item in (clean, stale)]
    assert scores[0] == scores[1]


def test_norm_concentration_is_the_top_channels_share_of_the_group_norm():
    model = build_model("resnet20", num_classes=4, image_size=8)
    example = torch.zeros(1, *IMAGE)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.BatchNorm2d)):
                module.weight.fill_(1.0)
    groups = regularizer_groups(model, example)
    even = norm_concentration(groups, dict(model.named_parameters()))
    assert 0.4 <= even < 0.9  # equal weights: no more than fan-in differences between groups
    with torch.no_grad():  # all but the first 30% of every layer's channels nearly vanish
        for module in model.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.BatchNorm2d)):
                module.weight[int(0.3 * module.weight.shape[0]):].mul_(1e-3)
                if isinstance(module, torch.nn.Conv2d):
                    module.weight[:, int(0.3 * module.weight.shape[1]):].mul_(1e-3)
    assert norm_concentration(groups, dict(model.named_parameters())) > 0.99


def test_interrupted_meta_training_resumes_to_the_same_metanetwork(tmp_path, monkeypatch):
    import prune.metatrain as metatrain

    collection, held_out = [tiny_data_model(0)], [tiny_data_model(1)]
    examples = [{"pixel_values": batch["pixel_values"][i], "labels": batch["labels"][i]}
                for batch in batches(3) for i in range(16)]

    def run(folder, log=None):
        torch.manual_seed(0)
        metanet = MetaNetwork(collection[0].graph.layout.node_dim, hidden=8, layers=1)
        loader = torch.utils.data.DataLoader(examples, batch_size=16, shuffle=True,
                                             generator=torch.Generator().manual_seed(3))
        config = MetaTrainConfig(epochs=3, lr=1e-2, milestones=(2,), select_speedup=1.3, progress=False)
        result = meta_train(metanet, collection, held_out, loader, batches(1, seed=2), config,
                            save_dir=folder / "metanet", log=(log if log is not None else []).append,
                            checkpoint_dir=folder / "checkpoint")
        return result, metanet

    expected, expected_net = run(tmp_path / "whole")
    real, calls = metatrain.selection_score, {"n": 0}

    def stop_in_epoch_two(*args):
        calls["n"] += 1
        if calls["n"] == 3:  # epoch 0 and 1 were scored and checkpointed; epoch 2's steps ran
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(metatrain, "selection_score", stop_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "cut")
    monkeypatch.setattr(metatrain, "selection_score", real)
    log: list[str] = []
    resumed, resumed_net = run(tmp_path / "cut", log)
    assert "meta-training resumed after epoch 1" in log
    assert resumed.history == expected.history and resumed.best_epoch == expected.best_epoch
    for name, value in expected_net.state_dict().items():
        assert torch.equal(resumed_net.state_dict()[name], value), name
    assert not (tmp_path / "cut" / "checkpoint").exists()  # gone once the metanetwork is saved
