"""Structured pruning: zero channels prune away without changing outputs, speed-up targets are met,
pruned models save and load, criteria are known by name, bad targets are explained."""
import pytest
import torch
import torch_pruning as tp
from torch import nn
from torch.nn import functional as F

from prune.importance import CRITERIA
from prune.pruner import layer_widths, output_layers, prune_model
from shrink.bench import count_macs, count_parameters
from shrink.errors import UserError
from shrink.models import build_model, load_model, save_model

IMAGE = (3, 16, 16)
EXAMPLE = torch.zeros(1, *IMAGE)


def trained_like(model):
    """Distinct BN scales and statistics, as a trained network has (a fresh one ranks all channels equal)."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def zero_group(model, layer, idxs):
    """Zero every member of ``layer``'s output-channel group at ``idxs`` (conv rows, BN, next-layer inputs)."""
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=EXAMPLE)
    group = graph.get_pruning_group(layer, tp.prune_conv_out_channels, idxs=idxs)
    with torch.no_grad():
        for dep, member_idxs in group:
            module, handler = dep.target.module, dep.handler
            if handler in (tp.prune_conv_out_channels, tp.prune_batchnorm_out_channels):
                module.weight[member_idxs] = 0
                if module.bias is not None:
                    module.bias[member_idxs] = 0
            elif handler in (tp.prune_conv_in_channels, tp.prune_linear_in_channels):
                module.weight[:, member_idxs] = 0


def test_pruning_zeroed_channels_leaves_outputs_unchanged():
    model = trained_like(build_model("resnet20", num_classes=10, image_size=16))
    zero_group(model, model.layer1[0].conv1, [1, 4, 9])  # inside a block
    zero_group(model, model.conv1, [2, 7])  # the stage-1 residual stream: stem, every block's conv2, BNs
    batch = torch.randn(4, *IMAGE)
    expected = model(batch)
    model.train()  # pruning must not move the BN statistics (its tracing runs forward passes)
    result = prune_model(model, EXAMPLE, criterion="group-l2", speedup=1.01)
    assert model.training
    model.eval()
    assert result.steps == 1 and result.speedup >= 1.01
    assert model.layer1[0].conv1.out_channels == 13 and model.conv1.out_channels == 14
    assert model.layer1[2].conv2.out_channels == 14 and model.fc.out_features == 10
    torch.testing.assert_close(model(batch), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("target", [2.0, 2.5])
def test_achieved_speedup_is_within_five_percent_of_the_target(target):
    model = trained_like(build_model("resnet20", num_classes=10, image_size=16))
    result = prune_model(model, EXAMPLE, speedup=target)
    assert target <= result.speedup <= 1.05 * target
    assert result.history[-1]["speedup"] == result.speedup and result.macs < result.base_macs
    assert model.fc.out_features == 10  # the classifier's outputs are protected


def test_round_to_keeps_every_width_a_multiple_of_the_block():
    model = trained_like(build_model("resnet20", num_classes=10, image_size=16))
    result = prune_model(model, EXAMPLE, speedup=2.0, round_to=8)
    widths = [module.out_channels for module in model.modules() if isinstance(module, nn.Conv2d)]
    assert result.speedup >= 2.0 and all(width % 8 == 0 for width in widths)
    assert min(widths) < 16  # pruning did happen inside the first stage's blocks too, in whole blocks


def weak_first_stage_resnet():
    """A ResNet-20 with one dominant channel in the first stage's residual group: the other 15 rank lowest of
    all once normalised by the group's max, so an uncapped global ranking cuts the stage to 1-2 channels."""
    torch.manual_seed(0)
    model = trained_like(build_model("resnet20", num_classes=10, image_size=16))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in ("conv1.weight", "bn1.weight") or name.startswith("layer1.") and ".conv2." in name \
                    or name.startswith("layer1.") and name.endswith("bn2.weight"):
                param[1:].mul_(0.01)
    return model


def stage_one_widths(model):
    return [module.out_channels for name, module in model.named_modules()
            if isinstance(module, nn.Conv2d) and name.startswith(("conv1", "layer1."))]


def test_max_layer_ratio_keeps_a_weak_stage_from_being_cut_to_one_channel():
    def pruned_widths(cap):
        model = weak_first_stage_resnet()
        assert prune_model(model, EXAMPLE, speedup=2.0, max_layer_ratio=cap).speedup >= 2.0
        return stage_one_widths(model)

    assert min(pruned_widths(None)) <= 2
    assert min(pruned_widths(0.5)) >= 6  # of 16: the cap is checked before each step, so a step may pass it


def test_max_layer_ratio_of_a_second_prune_counts_against_the_original_widths():
    def twice_pruned_widths(base_widths):
        model = weak_first_stage_resnet()
        base = (count_macs(model, EXAMPLE), count_parameters(model))
        original = layer_widths(model)
        prune_model(model, EXAMPLE, speedup=1.3, max_layer_ratio=0.5)  # as metanet's light prune
        result = prune_model(model, EXAMPLE, speedup=2.0, max_layer_ratio=0.5, base=base,
                             base_widths=original if base_widths else None)
        assert result.speedup >= 2.0
        return stage_one_widths(model)

    assert min(twice_pruned_widths(False)) <= 5  # half of what the first prune left: the caps compound
    assert min(twice_pruned_widths(True)) >= 6


def test_parameter_ratio_target_and_gradient_criteria():
    model = trained_like(build_model("resnet20", num_classes=10, image_size=16))
    batch, labels = torch.randn(8, *IMAGE), torch.randint(0, 10, (8,))
    calls = []

    def backward(net):
        calls.append(1)
        F.cross_entropy(net(batch), labels).backward()

    result = prune_model(model, EXAMPLE, criterion="taylor", param_ratio=1.5, grad_fn=backward)
    assert 1.5 <= result.param_ratio <= 1.05 * 1.5
    assert len(calls) == result.steps
    assert all(param.grad is None for param in model.parameters())


def test_pruned_model_saves_and_loads_with_identical_outputs(tmp_path):
    model = trained_like(build_model("resnet20", num_classes=10, image_size=16))
    prune_model(model, EXAMPLE, speedup=2.0, protect=["layer1.0.conv1"])
    assert model.layer1[0].conv1.out_channels == 16
    save_model(model, tmp_path / "pruned")
    loaded = load_model(tmp_path / "pruned").eval()
    batch = torch.randn(3, *IMAGE)
    assert torch.equal(loaded(batch), model(batch))
    assert loaded.layer3[0].conv1.out_channels == model.layer3[0].conv1.out_channels < 64


def test_criteria_are_registered_by_name():
    assert {"group-l2", "group-l1", "bn-scale", "taylor", "random", "metanet"} <= set(CRITERIA.names())
    assert CRITERIA.get("metanet").uses_metanet and CRITERIA.get("taylor").needs_grad
    assert output_layers(build_model("vgg11_bn", num_classes=3), torch.zeros(1, 3, 32, 32)) == ["classifier"]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"speedup": 2.0, "param_ratio": 2.0}, "exactly one"),
    ({"speedup": 0.5}, "above 1.0"),
    ({"speedup": 2.0, "criterion": "l3"}, "unknown importance criterion 'l3'"),
    ({"speedup": 2.0, "criterion": "taylor"}, "needs training data"),
    ({"speedup": 2.0, "protect": ["layer9"]}, "cannot protect 'layer9'"),
    ({"speedup": 50.0, "iterative_steps": 5}, "lower the target"),
])
def test_bad_requests_are_explained(kwargs, message):
    model = build_model("resnet20", num_classes=10, image_size=16)
    with pytest.raises(UserError, match=message):
        prune_model(model, EXAMPLE, **kwargs)
