"""Graph-metanetwork pruning on Torch-Pruning: networks as channel graphs, a GNN that makes them easier to
prune, meta-training over a collection of networks, and structured pruning to a speed-up target.

Usage::

    from prune import network_to_graph, MetaNetwork, apply_metanet, prune_model
    transformed = apply_metanet(load_metanet("runs/meta/metanet"), model)
    result = prune_model(transformed, torch.zeros(1, 3, 32, 32), criterion="metanet", speedup=2.5)
"""
from prune.graph import NetworkGraph, graph_params, graph_to_network, network_to_graph
from prune.importance import CRITERIA, Criterion
from prune.metanet import MetaNetwork, apply_metanet, load_metanet, save_metanet
from prune.metatrain import DataModel, MetaTrainConfig, meta_step, meta_train
from prune.pruner import PruneResult, prune_model

__all__ = [
    "CRITERIA", "Criterion", "DataModel", "MetaNetwork", "MetaTrainConfig", "NetworkGraph", "PruneResult",
    "apply_metanet", "graph_params", "graph_to_network", "load_metanet", "meta_step", "meta_train",
    "network_to_graph", "prune_model", "save_metanet",
]
