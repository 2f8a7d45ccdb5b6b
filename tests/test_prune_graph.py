"""Network <-> graph: exact round trips on ResNets, VGG and a custom residual net; sizes; refusals."""
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from prune.graph import graph_params, graph_to_network, network_to_graph
from shrink.errors import UserError
from shrink.models import build_model
from shrink.models.vgg import POOL, VGG, VGG_LAYOUTS


class TinyResidual(nn.Module):
    """5x5 stem, a biased conv with an identity residual (functional add), a projection shortcut computed
    after the main branch and added in place, BN-free linear head on a mean-pooled map."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.bn = nn.Conv2d(3, 8, 5, padding=2, bias=False), nn.BatchNorm2d(8)
        self.a, self.bn_a = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.b, self.bn_b = nn.Conv2d(8, 12, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(12)
        self.proj, self.bn_p = nn.Conv2d(8, 12, 1, stride=2, bias=False), nn.BatchNorm2d(12)
        self.head = nn.Linear(12, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.stem(x)))
        y = F.relu(self.bn_a(self.a(x)))
        y = y + x
        z = self.bn_b(self.b(y))
        z += self.bn_p(self.proj(y))
        return self.head(F.relu(z).mean((2, 3)))


class Concat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 3), nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.a(x), self.b(x)], 1)


def small_vgg11() -> nn.Module:
    layout = [item if item == POOL else int(item) // 16 for item in VGG_LAYOUTS[11]]
    return VGG(layout, num_classes=5)


def randomize(model: nn.Module) -> nn.Module:
    """Random weights and BN statistics, so a mix-up of any two entries would show."""
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(torch.rand_like(tensor) + 0.5)
    return model.eval()


def assert_exact_round_trip(make: callable, image: tuple[int, ...]) -> None:
    source, other = randomize(make()), randomize(make())
    with torch.no_grad():  # running stats are graph inputs only: the target keeps its own
        for name, buffer in source.named_buffers():
            other.get_buffer(name).copy_(buffer)
    graph = network_to_graph(source, torch.zeros(1, *image))
    twin = graph_to_network(other, graph.layout, graph.data.x, graph.data.edge_attr)
    expected, got = source.state_dict(), twin.state_dict()
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
    assert sorted(graph.layout.params()) == sorted(name for name, _ in source.named_parameters())
    batch = torch.randn(2, *image)
    assert torch.equal(source(batch), twin.eval()(batch))


@pytest.mark.parametrize(("make", "image"), [
    (lambda: build_model("resnet20", num_classes=10), (3, 16, 16)),
    (small_vgg11, (3, 32, 32)),
    (TinyResidual, (3, 12, 12)),
])
def test_round_trip_is_exact_on_every_parameter_and_logit(make, image):
    assert_exact_round_trip(make, image)


def test_resnet56_graph_has_the_reference_sizes_and_layer_bounds():
    graph = network_to_graph(build_model("resnet56", num_classes=10))
    assert (graph.data.num_nodes, graph.data.num_edges) == (2045, 140720)
    assert graph.layout.layer_bounds[:4] == [0, 3, 19, 35] and graph.layout.layer_bounds[-2:] == [2035, 2045]
    assert graph.layout.columns == ("gamma", "beta", "mean", "var", "gamma_ds", "beta_ds", "mean_ds", "var_ds")
    assert graph.data.edge_attr.shape[1] == graph.layout.edge_dim == 9


def test_residual_blocks_map_as_the_spec_says():
    model = randomize(TinyResidual())
    graph = network_to_graph(model, torch.zeros(1, 3, 12, 12))
    layout, x, edges = graph.layout, graph.data.x, graph.data.edge_attr
    # input 3, stem 8, a 8, b 12 (the projection shares b's nodes), head 4
    assert layout.layer_bounds == [0, 3, 11, 19, 31, 35]
    assert layout.columns[-1] == "bias" and layout.edge_dim == 25
    b_nodes = slice(19, 31)
    assert torch.equal(x[b_nodes, 4], model.bn_p.weight.detach())  # shortcut BN in the _ds columns
    assert torch.equal(x[b_nodes, 7], model.bn_p.running_var)
    assert torch.equal(x[31:35, -1], model.head.bias.detach())
    # the identity residual: a dense 8x8 block from the stem's nodes to a's nodes, Dirac centre on the diagonal
    identity = [block for block in layout.blocks
                if (block.out_start, block.in_start) == (11, 3) and block.start not in
                {write.start for write in layout.edge_writes}]
    assert len(identity) == 1
    dirac = edges[identity[0].start:identity[0].stop].view(8, 8, 25)
    assert torch.equal(dirac[..., 12], torch.eye(8)) and dirac.abs().sum() == 8
    # a 1x1 projection kernel sits in the 5x5 centre
    proj = next(write for write in layout.edge_writes if write.param == "proj.weight")
    assert proj.columns == (12,)
    assert graph.data.num_edges == sum(block.n_out * block.n_in for block in layout.blocks)


def test_graph_params_are_differentiable():
    graph = network_to_graph(build_model("resnet20", num_classes=10), torch.zeros(1, 3, 8, 8))
    x = graph.data.x.clone().requires_grad_()
    edges = graph.data.edge_attr.clone().requires_grad_()
    params = graph_params(graph.layout, x, edges)
    sum(param.sum() for param in params.values()).backward()
    assert x.grad.abs().sum() > 0 and edges.grad.abs().sum() > 0


@pytest.mark.parametrize(("model", "message"), [
    (Concat(), "cat"),
    (nn.Sequential(nn.Conv2d(4, 4, 3, groups=2)), "groups=2"),
    (nn.Sequential(nn.Conv2d(3, 4, 2)), "kernel"),
])
def test_unsupported_patterns_are_refused(model, message):
    with pytest.raises(UserError, match=message):
        network_to_graph(model, torch.zeros(1, model[0].in_channels if isinstance(model, nn.Sequential) else 3, 8, 8))


def test_a_linear_over_tokens_is_refused_not_mapped_onto_the_token_axis():
    with pytest.raises(UserError, match=r"linear '0' reads a 3-d tensor \(1, 5, 8\)"):
        network_to_graph(nn.Sequential(nn.Linear(8, 2)), torch.zeros(1, 5, 8))
