"""The graph metanetwork: a PNA-style GNN that maps a network's channel graph to a slightly changed one.

Each layer (:class:`MetaConv`, a torch-geometric ``MessagePassing``) sends ``m = L2(h)_i * L1(h)_j * e_ji``,
aggregates mean, std, max and min at the target, and updates edges ``e' = L3(h)_j * L4(h)_i * e_ji``. The
network runs every layer in both directions with shared weights (the reversed pass sees sign-flipped edge
channels) and adds residual node and edge updates; the decoders' outputs are scaled by a small ``rho`` so a
fresh metanetwork is nearly the identity (metapruning spec section 3).

A network graph is dense bipartite per layer, so when the graph's edge blocks are given the same layer runs
as broadcast ``[out, in, d]`` products with axis reductions instead of gathers and scatters over every edge
(identical results, several times faster and lighter), and each layer is recomputed in the backward pass
(gradient checkpointing) so memory stays flat in depth.

Usage::

    metanet = MetaNetwork(node_dim=graph.layout.node_dim, edge_dim=graph.layout.edge_dim)
    x_pred, e_pred = metanet(graph.data.x, graph.data.edge_index, graph.data.edge_attr, graph.layout.blocks)
    transformed = apply_metanet(metanet, model)
"""
from __future__ import annotations

import itertools
import json
import math
import os
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import safetensors.torch
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint
from torch_geometric.nn import MessagePassing

from prune.graph import EdgeBlock, graph_to_network, network_to_graph
from shrink.errors import UserError
from shrink.runs import atomic_dir, atomic_write_json

AGGREGATIONS = ("mean", "std", "max", "min")
# PyG's StdAggregation clamps the variance here, so its sqrt has a finite gradient; below it std reads 0.
STD_EPS = 1e-5
CONFIG_FILE = "metanet.json"
WEIGHTS_FILE = "metanet.safetensors"


class MetaConv(MessagePassing):
    """One metanetwork layer of width ``dim``: ``(h, e) -> (node update, edge update)``.

    Usage: ``n, e_new = MetaConv(64)(h, edge_index, e)``; pass ``blocks`` (the graph layout's edge blocks)
    for the dense fast path, ``reverse=True`` to send messages along reversed edges, and ``sign`` to read
    edges as ``sign * e`` and return ``sign * edge update`` (the metanetwork's reversed pass).
    """

    def __init__(self, dim: int) -> None:
        super().__init__(aggr=list(AGGREGATIONS), node_dim=0)
        self.gates = nn.Sequential(nn.Linear(dim, 4 * dim), nn.SiLU())  # L1..L4 side by side
        self.down = nn.Linear(len(AGGREGATIONS) * dim, dim)

    def forward(self, h: torch.Tensor, edge_index: torch.Tensor, e: torch.Tensor,
                blocks: Sequence[EdgeBlock] | None = None, reverse: bool = False,
                sign: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Node update ``(N, dim)`` and edge update ``(E, dim)``. Usage: ``conv(h, edge_index, e)``."""
        l1, l2, l3, l4 = self.gates(h).chunk(4, dim=-1)
        if blocks is not None:
            # The edge update is multiplicative in e, so sign * update(sign * e) = update(e) (sign is +-1);
            # on messages the sign folds into a node gate instead of a pass over every edge.
            gates = (l1 if sign is None else l1 * sign, l2, l3, l4)
            nodes, edges = _dense_layer(blocks, gates, e, h.shape[0], reverse)
            return self.down(nodes), edges
        index = edge_index.flip(0) if reverse else edge_index
        feat = e if sign is None else sign * e
        nodes = self.propagate(index, src=l1, dst=l2, e=feat, size=(h.shape[0], h.shape[0]))
        edges = self.edge_updater(index, src=l3, dst=l4, e=feat)
        return self.down(nodes), edges if sign is None else sign * edges

    def message(self, src_j: torch.Tensor, dst_i: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """``L2(h)_i * L1(h)_j * e_ji``."""
        return dst_i * src_j * e

    def edge_update(self, src_j: torch.Tensor, dst_i: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """``L3(h)_j * L4(h)_i * e_ji``."""
        return src_j * dst_i * e


def _dense_layer(blocks: Sequence[EdgeBlock], gates: tuple[torch.Tensor, ...], e: torch.Tensor, num_nodes: int,
                 reverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """MetaConv on dense out x in blocks: messages go from rows (outputs) to columns (inputs), or back.

    Tensors are split once into per-block and per-channel-set pieces: slicing them block by block would
    make every slice's backward write a zero tensor of the full size.
    """
    bounds = sorted({0, num_nodes, *(b.out_start for b in blocks), *(b.in_start for b in blocks),
                     *(b.out_start + b.n_out for b in blocks), *(b.in_start + b.n_in for b in blocks)})
    piece_of = {start: index for index, start in enumerate(bounds[:-1])}
    sizes = [stop - start for start, stop in itertools.pairwise(bounds)]
    l1, l2, l3, l4 = (gate.split(sizes) for gate in gates)
    # Forward: source j = output row o, target i = input column; reverse swaps them.
    row_msg, col_msg, row_edge, col_edge = (l2, l1, l4, l3) if reverse else (l1, l2, l3, l4)
    axis = 1 if reverse else 0
    partials: dict[tuple[int, int], list[tuple[torch.Tensor, ...]]] = defaultdict(list)
    edges = []
    for block, feat in zip(blocks, e.split([b.n_out * b.n_in for b in blocks])):
        rows, cols = piece_of[block.out_start], piece_of[block.in_start]
        feat = feat.view(block.n_out, block.n_in, -1)
        msg = row_msg[rows].unsqueeze(1) * col_msg[cols].unsqueeze(0) * feat
        edges.append((row_edge[rows].unsqueeze(1) * col_edge[cols].unsqueeze(0) * feat).flatten(0, 1))
        target = (block.in_start, block.n_in) if axis == 0 else (block.out_start, block.n_out)
        partials[target].append((msg.sum(axis), (msg * msg).sum(axis), msg.amax(axis), msg.amin(axis),
                                 msg.shape[axis]))
    return _combine(partials, num_nodes, e), torch.cat(edges)


def _combine(partials: dict[tuple[int, int], list[tuple[torch.Tensor, ...]]], num_nodes: int,
             like: torch.Tensor) -> torch.Tensor:
    """Per-block sums, squares, maxima and minima -> [mean, std, max, min] per node (0 without messages)."""
    dim = like.shape[-1]
    pieces, cursor = [], 0
    for start, size in sorted(partials):
        if start > cursor:
            pieces.append(like.new_zeros(start - cursor, len(AGGREGATIONS) * dim))
        parts = partials[(start, size)]
        count = sum(part[4] for part in parts)
        mean = sum(part[0] for part in parts) / count
        var = sum(part[1] for part in parts) / count - mean * mean
        std = var.clamp(min=STD_EPS).sqrt()
        std = std.masked_fill(std <= math.sqrt(STD_EPS), 0.0)
        high = torch.stack([part[2] for part in parts]).amax(0)
        low = torch.stack([part[3] for part in parts]).amin(0)
        pieces.append(torch.cat([mean, std, high, low], -1))
        cursor = start + size
    if cursor < num_nodes:
        pieces.append(like.new_zeros(num_nodes - cursor, len(AGGREGATIONS) * dim))
    return torch.cat(pieces)


@dataclass(frozen=True)
class MetaNetConfig:
    """The metanetwork's shape: node/edge feature sizes, width ``hidden``, ``layers``, output scale ``rho``.

    Spec defaults: ResNet-56 ``MetaNetConfig(node_dim=8)``; VGG-19 ``MetaNetConfig(5, hidden=32, rho=0.05)``.
    """

    node_dim: int
    edge_dim: int = 9
    hidden: int = 64
    layers: int = 8
    rho: float = 0.01


def _decoder(dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.LayerNorm(dim, elementwise_affine=False), nn.Linear(dim, dim), nn.SiLU(),
                         nn.Linear(dim, out_dim))


class MetaNetwork(nn.Module):
    """The metanetwork: encoders, ``layers`` bidirectional MetaConvs with residual updates, scaled decoders.

    ``checkpoint_layers`` recomputes each layer in the backward pass (memory flat in depth).
    Usage: ``x_pred, e_pred = MetaNetwork(8)(x, edge_index, edge_attr, blocks)``
    """

    def __init__(self, node_dim: int, edge_dim: int = 9, hidden: int = 64, layers: int = 8, rho: float = 0.01,
                 checkpoint_layers: bool = True) -> None:
        super().__init__()
        self.config = MetaNetConfig(node_dim, edge_dim, hidden, layers, rho)
        self.checkpoint_layers = checkpoint_layers
        self.node_enc = nn.Linear(node_dim, hidden)
        self.edge_enc = nn.Linear(edge_dim, hidden)
        self.norm = nn.LayerNorm(hidden, elementwise_affine=False)
        self.convs = nn.ModuleList(MetaConv(hidden) for _ in range(layers))
        self.node_dec = _decoder(hidden, node_dim)
        self.edge_dec = _decoder(hidden, edge_dim)
        sign = torch.cat([torch.ones(hidden // 2), -torch.ones(hidden - hidden // 2)])
        self.register_buffer("sign", sign, persistent=False)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, edge_attr: torch.Tensor,
                blocks: Sequence[EdgeBlock] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Predicted node and edge features, same shapes as ``x`` and ``edge_attr``."""
        if x.shape[-1] != self.config.node_dim or edge_attr.shape[-1] != self.config.edge_dim:
            raise UserError(f"the metanetwork reads node/edge features of size {self.config.node_dim}/"
                            f"{self.config.edge_dim}, the graph has {x.shape[-1]}/{edge_attr.shape[-1]}; "
                            "meta-train one for this network family")
        h, e = self.node_enc(x), self.edge_enc(edge_attr)
        for conv in self.convs:
            if self.checkpoint_layers and torch.is_grad_enabled():
                h, e = checkpoint(self._layer, conv, h, e, edge_index, blocks, use_reentrant=False)
            else:
                h, e = self._layer(conv, h, e, edge_index, blocks)
        rho = self.config.rho
        return x + rho * self.node_dec(h), edge_attr + rho * self.edge_dec(e)

    def _layer(self, conv: MetaConv, h: torch.Tensor, e: torch.Tensor, edge_index: torch.Tensor,
               blocks: Sequence[EdgeBlock] | None) -> tuple[torch.Tensor, torch.Tensor]:
        normed = self.norm(h)
        n1, e1 = conv(normed, edge_index, e, blocks)
        n2, e2 = conv(normed, edge_index, e, blocks, reverse=True, sign=self.sign)
        return h + n1 + n2, e + e1 + e2


@torch.no_grad()
def apply_metanet(metanet: MetaNetwork, model: nn.Module, example_input: torch.Tensor | None = None) -> nn.Module:
    """``model`` -> graph -> one metanetwork forward -> a transformed copy (BN running stats kept).

    Usage: ``transformed = apply_metanet(load_metanet("runs/meta/metanet"), model)``
    """
    graph = network_to_graph(model, example_input)
    data = graph.data
    x_pred, e_pred = metanet(data.x, data.edge_index, data.edge_attr, graph.layout.blocks)
    return graph_to_network(model, graph.layout, x_pred, e_pred)


def save_metanet(metanet: MetaNetwork, directory: str | os.PathLike) -> Path:
    """Save as ``metanet.json`` (config) + ``metanet.safetensors``, atomically. Usage: ``save_metanet(m, "out/mn")``."""
    final = Path(directory)
    with atomic_dir(final) as tmp:
        atomic_write_json(tmp / CONFIG_FILE, asdict(metanet.config))
        safetensors.torch.save_model(metanet, str(tmp / WEIGHTS_FILE))
    return final


def load_metanet(directory: str | os.PathLike) -> MetaNetwork:
    """Load a metanetwork saved by :func:`save_metanet` (no pickle). Usage: ``load_metanet("out/mn")``."""
    path = Path(directory)
    try:
        config = MetaNetConfig(**json.loads((path / CONFIG_FILE).read_text(encoding="utf-8")))
        metanet = MetaNetwork(**asdict(config))
        safetensors.torch.load_model(metanet, str(path / WEIGHTS_FILE), strict=True)
    except (OSError, TypeError, ValueError, RuntimeError) as err:
        raise UserError(f"cannot load a metanetwork from {path}: {str(err).splitlines()[0]}; pass the folder "
                        f"written by 'prune metatrain' ({CONFIG_FILE} + {WEIGHTS_FILE})") from None
    return metanet


__all__ = ["AGGREGATIONS", "MetaConv", "MetaNetConfig", "MetaNetwork", "apply_metanet", "load_metanet",
           "save_metanet"]
