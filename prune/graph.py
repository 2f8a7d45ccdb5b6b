"""Network <-> graph: a CNN read as a torch-geometric graph whose nodes are channels and edges are kernels.

The structure is traced with ``torch.fx`` (no per-architecture code, no state-dict positions): every input
channel, conv output channel and logit is a node; every conv or linear layer is a dense out x in block of
edges whose feature is the kernel ``W[o, i]`` (centre-padded to the largest kernel, 3x3 for CIFAR CNNs);
BatchNorm statistics and biases are node features. At a residual ``add`` the two branches share one node
set: a second conv branch (projection shortcut) maps onto the main branch's nodes and its BN fills the
shortcut columns; an identity branch adds a dense block of Dirac edges from the block input to the block
output (metapruning spec section 2).

Every graph entry that came from a parameter is recorded in a :class:`GraphLayout` (edge slice / node
column -> parameter), so turning a (transformed) graph back into weights is a pure gather, differentiable
for meta-training and exact on an unchanged graph. Running BN statistics are inputs only, never written back.

Usage::

    graph = network_to_graph(model)                        # graph.data: torch_geometric Data
    twin = graph_to_network(model, graph.layout, graph.data.x, graph.data.edge_attr)
    params = graph_params(graph.layout, x_pred, edge_pred)  # {"layer1.0.conv1.weight": ...}, differentiable
"""
from __future__ import annotations

import copy
import operator
from dataclasses import dataclass, field

import torch
from torch import fx
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp
from torch_geometric.data import Data

from shrink.bench import device_of, zero_image
from shrink.errors import UserError

BN_COLUMNS = ("gamma", "beta", "mean", "var")
SHORTCUT_COLUMNS = tuple(f"{name}_ds" for name in BN_COLUMNS)
BIAS_COLUMN = "bias"
# Node feature of a channel without BN: identity normalisation (gamma 1, beta 0, mean 0, var 1), no bias.
COLUMN_DEFAULTS = {"gamma": 1.0, "beta": 0.0, "mean": 0.0, "var": 1.0, BIAS_COLUMN: 0.0}

# Layers and functions that keep every channel where it is (checked against traced shapes).
CHANNEL_PRESERVING_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Hardswish,
    nn.Identity, nn.Dropout, nn.Dropout2d, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
    nn.Flatten,
)
CHANNEL_PRESERVING_CALLS = {
    "relu", "relu_", "relu6", "leaky_relu", "elu", "gelu", "silu", "sigmoid", "tanh", "hardtanh", "hardswish",
    "dropout", "flatten", "view", "reshape", "contiguous", "clone", "mean", "max_pool2d", "avg_pool2d",
    "adaptive_avg_pool2d", "adaptive_max_pool2d",
}
ADD_CALLS = {operator.add, operator.iadd, torch.add, "add", "add_"}
UNSUPPORTED_HINT = "only conv/BN/linear networks with residual adds are supported (no concat, grouped conv, attention)"


@dataclass(frozen=True)
class EdgeWrite:
    """Edges ``[start, stop)`` hold parameter ``param`` (shape ``shape``) at feature columns ``columns``."""

    param: str
    start: int
    stop: int
    shape: tuple[int, ...]
    columns: tuple[int, ...]


@dataclass(frozen=True)
class NodeWrite:
    """Nodes ``[start, stop)`` hold parameter ``param`` in node-feature column ``column``."""

    param: str
    start: int
    stop: int
    column: int


@dataclass(frozen=True)
class EdgeBlock:
    """Edges ``[start, start + n_out * n_in)``: the dense block from nodes ``in_start + i`` (a layer's input
    channels) to ``out_start + o`` (its output channels), out-major. Usage: ``view(n_out, n_in, -1)``."""

    start: int
    out_start: int
    n_out: int
    in_start: int
    n_in: int

    @property
    def stop(self) -> int:
        """One past the block's last edge."""
        return self.start + self.n_out * self.n_in


@dataclass
class GraphLayout:
    """Where each parameter lives in the graph, and the graph's shape facts.

    ``layer_bounds``: node offsets of the channel sets (input, each conv / linear in forward order, logits),
    e.g. ``[0, 3, 19, ..., 2045]`` for ResNet-56; ``blocks``: every edge block (layers and identity
    residuals) in edge order, covering all edges. Usage: ``layout.node_dim, layout.params()``
    """

    columns: tuple[str, ...]
    edge_dim: int
    layer_bounds: list[int]
    blocks: list[EdgeBlock] = field(default_factory=list)
    edge_writes: list[EdgeWrite] = field(default_factory=list)
    node_writes: list[NodeWrite] = field(default_factory=list)

    @property
    def node_dim(self) -> int:
        """Number of node-feature columns."""
        return len(self.columns)

    def params(self) -> list[str]:
        """Names of the parameters the graph writes back, in graph order."""
        return [write.param for write in (*self.edge_writes, *self.node_writes)]


@dataclass
class NetworkGraph:
    """A network as a graph: ``data`` (x, edge_index, edge_attr) and the ``layout`` that maps it back."""

    data: Data
    layout: GraphLayout


# --------------------------------------------------------------------------------------------- tracing
@dataclass
class _ChannelSet:
    """One layer's channels while tracing; a projection shortcut's set is merged into the main one."""

    size: int
    depth: int
    bn: str | None = None
    shortcut_bn: str | None = None
    bias: str | None = None
    consumed: bool = False
    merged_into: int | None = None


@dataclass
class _Block:
    """A dense out x in edge block: a layer's weight, or an identity residual when ``weight`` is None."""

    dst: int
    src: int
    weight: str | None
    kernel: tuple[int, int]


class _Tracer:
    """Walks an fx graph in forward order, building channel sets, edge blocks and BN / bias attachments."""

    def __init__(self, gm: fx.GraphModule) -> None:
        self.gm = gm
        self.sets: list[_ChannelSet] = []
        self.blocks: list[_Block] = []
        self.values: dict[fx.Node, int] = {}

    def find(self, index: int) -> int:
        while self.sets[index].merged_into is not None:
            index = self.sets[index].merged_into
        return index

    def run(self) -> None:
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                self.values[node] = self._new_set(_channels(node), depth=0)
            elif node.op == "call_module":
                self._module(node, self.gm.get_submodule(node.target))
            elif node.op in ("call_function", "call_method"):
                self._call(node)
            elif node.op == "get_attr":
                raise UserError(f"network uses a bare tensor '{node.target}' in forward; {UNSUPPORTED_HINT}")

    def _new_set(self, size: int, depth: int) -> int:
        self.sets.append(_ChannelSet(size, depth))
        return len(self.sets) - 1

    def _input(self, node: fx.Node) -> int:
        source = node.args[0] if node.args else None
        if not isinstance(source, fx.Node) or source not in self.values:
            raise UserError(f"layer '{node.target}' does not read a traced channel tensor; {UNSUPPORTED_HINT}")
        return self.find(self.values[source])

    def _module(self, node: fx.Node, module: nn.Module) -> None:
        path = str(node.target)
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            self.values[node] = self._layer(node, path, module)
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            target = self.sets[self._input(node)]
            if target.bn is not None:
                raise UserError(f"BatchNorm '{path}' normalises channels already normalised by '{target.bn}'; "
                                f"{UNSUPPORTED_HINT}")
            target.bn = path
            self._pass_through(node)
        elif isinstance(module, CHANNEL_PRESERVING_MODULES):
            self._pass_through(node)
        else:
            raise UserError(f"layer '{path}' ({type(module).__name__}) cannot be read as a graph; {UNSUPPORTED_HINT}")

    def _layer(self, node: fx.Node, path: str, module: nn.Conv2d | nn.Linear) -> int:
        src = self._input(node)
        if isinstance(module, nn.Conv2d):
            kernel = tuple(module.kernel_size)
            if module.groups != 1 or kernel[0] != kernel[1] or kernel[0] % 2 == 0:
                raise UserError(f"conv '{path}' has groups={module.groups}, kernel {kernel}; only ungrouped convs "
                                f"with odd square kernels are supported")
        else:
            kernel = (1, 1)
            shape = getattr(node.args[0].meta.get("tensor_meta"), "shape", ())
            if len(shape) != 2:  # channels are dim 1: a Linear over (batch, tokens, features) would map tokens
                raise UserError(f"linear '{path}' reads a {len(shape)}-d tensor {tuple(shape)}; only (batch, features) "
                                f"inputs to a Linear can be read as a graph; {UNSUPPORTED_HINT}")
        self.sets[src].consumed = True
        out = self._new_set(_channels(node), depth=self.sets[src].depth + 1)
        self.blocks.append(_Block(out, src, f"{path}.weight", kernel))
        if module.bias is not None:
            self.sets[out].bias = f"{path}.bias"
        return out

    def _call(self, node: fx.Node) -> None:
        inputs = [arg for arg in node.all_input_nodes if arg in self.values]
        name = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", str(node.target))
        if not inputs or node.meta.get("tensor_meta") is None:
            return  # not a channel tensor (e.g. x.size(0)); consumers of it are checked where they read channels
        if node.target in ADD_CALLS:
            self._add(node, inputs)
        elif name in CHANNEL_PRESERVING_CALLS and len(inputs) == 1:
            self._pass_through(node)
        else:
            raise UserError(f"operation '{name}' at '{node.name}' cannot be read as a graph; {UNSUPPORTED_HINT}")

    def _pass_through(self, node: fx.Node) -> None:
        index = self._input(node)
        if _channels(node) != self.sets[index].size:
            raise UserError(f"'{node.name}' changes the channel count ({self.sets[index].size} -> "
                            f"{_channels(node)}); {UNSUPPORTED_HINT}")
        self.values[node] = index

    def _add(self, node: fx.Node, inputs: list[fx.Node]) -> None:
        if len(inputs) != 2 or len(node.args) != 2 or node.kwargs:
            raise UserError(f"'{node.name}' is not an addition of two feature maps; {UNSUPPORTED_HINT}")
        first, second = (self.find(self.values[arg]) for arg in inputs)
        if first == second:
            raise UserError(f"'{node.name}' adds a feature map to itself; {UNSUPPORTED_HINT}")
        fresh = [index for index in (first, second) if not self.sets[index].consumed]
        if len(fresh) == 2:  # two conv branches: the shallower one is the projection shortcut
            main, shortcut = sorted(fresh, key=lambda index: -self.sets[index].depth)
            self._merge(node, main, shortcut)
            self.values[node] = main
        elif len(fresh) == 1:  # an identity branch from the block input
            old = second if fresh[0] == first else first
            self.blocks.append(_Block(fresh[0], old, None, (1, 1)))
            self.sets[old].consumed = True
            self.values[node] = fresh[0]
        else:
            raise UserError(f"'{node.name}' adds two feature maps that both feed other layers; {UNSUPPORTED_HINT}")

    def _merge(self, node: fx.Node, main: int, shortcut: int) -> None:
        target, source = self.sets[main], self.sets[shortcut]
        if target.shortcut_bn or source.shortcut_bn or source.bias:
            raise UserError(f"'{node.name}' joins more than one shortcut (or a biased one); {UNSUPPORTED_HINT}")
        target.shortcut_bn = source.bn
        target.depth = max(target.depth, source.depth)
        source.merged_into = main


def _channels(node: fx.Node) -> int:
    meta = node.meta.get("tensor_meta")
    if meta is None or not hasattr(meta, "shape") or len(meta.shape) < 2:
        raise UserError(f"'{node.name}' is not a (batch, channels, ...) tensor; {UNSUPPORTED_HINT}")
    return int(meta.shape[1])


def trace(model: nn.Module, example_input: torch.Tensor) -> fx.GraphModule:
    """``model`` traced by torch.fx with tensor shapes attached (run in eval mode, so BN stats stay put).

    Usage: ``gm = trace(model, torch.zeros(1, 3, 32, 32))``
    """
    try:
        gm = fx.symbolic_trace(model)
    except Exception as err:  # fx raises many types for dynamic control flow
        raise UserError(f"cannot trace {type(model).__name__} with torch.fx ({type(err).__name__}: "
                        f"{str(err).splitlines()[0] if str(err) else ''}); {UNSUPPORTED_HINT}") from None
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(example_input.to(device_of(model)))
    finally:
        model.train(was_training)
    return gm


# ------------------------------------------------------------------------------------------- building
def network_to_graph(model: nn.Module, example_input: torch.Tensor | None = None) -> NetworkGraph:
    """Read ``model`` as a channel graph (see the module doc). ``example_input`` defaults to one zero image
    of the model's recorded input shape. Usage: ``graph = network_to_graph(build_model("resnet56"))``
    """
    if example_input is None:
        example_input = zero_image(model)
    tracer = _Tracer(trace(model, example_input))
    tracer.run()
    return _assemble(model, tracer)


def _assemble(model: nn.Module, tracer: _Tracer) -> NetworkGraph:
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    live = [index for index, channel_set in enumerate(tracer.sets) if channel_set.merged_into is None]
    offsets, bounds = {}, [0]
    for index in live:
        offsets[index] = bounds[-1]
        bounds.append(bounds[-1] + tracer.sets[index].size)
    columns = _columns([tracer.sets[index] for index in live])
    side = max(block.kernel[0] for block in tracer.blocks) if tracer.blocks else 1
    layout = GraphLayout(columns=columns, edge_dim=side * side, layer_bounds=bounds)

    x = torch.tensor([COLUMN_DEFAULTS[name.removesuffix("_ds")] for name in columns]).repeat(bounds[-1], 1)
    x = x.to(_dtype(model))
    for index in live:
        _fill_nodes(x, layout, tracer.sets[index], offsets[index], params, buffers)

    index_parts, feature_parts, start = [], [], 0
    for block in tracer.blocks:
        dst, src = tracer.find(block.dst), tracer.find(block.src)
        n_out, n_in = tracer.sets[dst].size, tracer.sets[src].size
        out_nodes = torch.arange(n_out).repeat_interleave(n_in) + offsets[dst]
        in_nodes = torch.arange(n_in).repeat(n_out) + offsets[src]
        index_parts.append(torch.stack([out_nodes, in_nodes]))
        feature_parts.append(_block_features(block, n_out, n_in, side, params, layout, start, x.dtype))
        layout.blocks.append(EdgeBlock(start, offsets[dst], n_out, offsets[src], n_in))
        start += n_out * n_in
    edge_index = torch.cat(index_parts, 1) if index_parts else torch.zeros(2, 0, dtype=torch.long)
    edge_attr = torch.cat(feature_parts) if feature_parts else torch.zeros(0, side * side, dtype=x.dtype)
    return NetworkGraph(Data(x=x, edge_index=edge_index, edge_attr=edge_attr), layout)


def _columns(sets: list[_ChannelSet]) -> tuple[str, ...]:
    """BN columns always; shortcut-BN columns when a projection shortcut exists; a bias column when a
    biased layer is also normalised (VGG), otherwise biases (the classifier's) use the beta column."""
    columns = BN_COLUMNS
    if any(channel_set.shortcut_bn for channel_set in sets):
        columns += SHORTCUT_COLUMNS
    if any(channel_set.bias and channel_set.bn for channel_set in sets):
        columns += (BIAS_COLUMN,)
    return columns


def _fill_nodes(x: torch.Tensor, layout: GraphLayout, channel_set: _ChannelSet, start: int,
                params: dict[str, nn.Parameter], buffers: dict[str, torch.Tensor]) -> None:
    stop = start + channel_set.size
    for bn_path, names in ((channel_set.bn, BN_COLUMNS), (channel_set.shortcut_bn, SHORTCUT_COLUMNS)):
        if bn_path is None:
            continue
        for attr, column in zip(("weight", "bias", "running_mean", "running_var"), names):
            name = f"{bn_path}.{attr}"
            tensor = params.get(name, buffers.get(name))
            if tensor is None:  # affine=False or no running stats: the default stays
                continue
            x[start:stop, layout.columns.index(column)] = tensor.detach()
            if name in params:
                layout.node_writes.append(NodeWrite(name, start, stop, layout.columns.index(column)))
    if channel_set.bias is not None:
        column = layout.columns.index(BIAS_COLUMN if BIAS_COLUMN in layout.columns else "beta")
        x[start:stop, column] = params[channel_set.bias].detach()
        layout.node_writes.append(NodeWrite(channel_set.bias, start, stop, column))


def _block_features(block: _Block, n_out: int, n_in: int, side: int, params: dict[str, nn.Parameter],
                    layout: GraphLayout, start: int, dtype: torch.dtype) -> torch.Tensor:
    k = block.kernel[0]
    offset = (side - k) // 2
    rows = torch.arange(k) + offset
    columns = (rows.view(-1, 1) * side + rows.view(1, -1)).flatten()
    features = torch.zeros(n_out * n_in, side * side, dtype=dtype)
    if block.weight is None:  # identity residual: Dirac centre on the diagonal
        centre = (side * side) // 2
        features.view(n_out, n_in, -1)[torch.arange(n_out), torch.arange(n_in), centre] = 1.0
        return features
    weight = params[block.weight].detach()
    features[:, columns] = weight.reshape(n_out * n_in, k * k)
    layout.edge_writes.append(EdgeWrite(block.weight, start, start + n_out * n_in, tuple(weight.shape),
                                        tuple(columns.tolist())))
    return features


# ---------------------------------------------------------------------------------------- back again
def graph_params(layout: GraphLayout, x: torch.Tensor, edge_attr: torch.Tensor) -> dict[str, torch.Tensor]:
    """The parameters encoded in node features ``x`` and edge features ``edge_attr`` (a pure gather, so
    gradients flow back into whatever produced them). Usage: ``functional_call(model, graph_params(...), batch)``
    """
    params = {}
    for write in layout.edge_writes:
        columns = torch.tensor(write.columns, device=edge_attr.device)
        params[write.param] = edge_attr[write.start:write.stop].index_select(1, columns).reshape(write.shape)
    for write in layout.node_writes:
        params[write.param] = x[write.start:write.stop, write.column]
    return params


def graph_to_network(model: nn.Module, layout: GraphLayout, x: torch.Tensor, edge_attr: torch.Tensor) -> nn.Module:
    """A deep copy of ``model`` with the weights read from the graph (running BN stats are kept as they were).

    Usage: ``twin = graph_to_network(model, graph.layout, x_pred, edge_pred)``
    """
    twin = copy.deepcopy(model)
    load_graph_params(twin, graph_params(layout, x, edge_attr))
    return twin


@torch.no_grad()
def load_graph_params(model: nn.Module, params: dict[str, torch.Tensor]) -> None:
    """Copy ``params`` (from :func:`graph_params`) into ``model`` in place. Usage: ``load_graph_params(m, p)``."""
    for name, value in params.items():
        model.get_parameter(name).copy_(value)


def _dtype(model: nn.Module) -> torch.dtype:
    return next((param.dtype for param in model.parameters()), torch.get_default_dtype())
