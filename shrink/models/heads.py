"""Attention heads removed from BERT-layout Hugging Face encoders, saved so plain ``transformers`` loads them.

Transformers v5 dropped ``prune_heads`` and ``config.pruned_heads``, and a BERT config derives the head width
from ``hidden_size / num_attention_heads``, so a layer with fewer heads cannot be stated in ``config.json``.
A head-pruned model is therefore saved at the config's full attention width with the removed heads' query,
key, value and output-projection weights all zero (a zero head adds exactly nothing: its values are zero),
and ``config.pruned_heads`` lists them, ``{layer: [head, ...]}`` in original head numbers, as transformers v4
wrote it. Plain ``from_pretrained`` loads that file and computes the same outputs; :func:`remove_pruned_heads`
(run by :func:`shrink.models.load_model`) cuts the zero heads out again, so shrink's benchmarks and ONNX
export see the physically smaller model.

Usage::

    expand_pruned_heads(pruned).save_pretrained("out/model")   # what save_model does
    model = AutoModelForSequenceClassification.from_pretrained("out/model")
    remove_pruned_heads(model)                                 # what load_model does
"""
from __future__ import annotations

import copy

import torch
from torch import nn


def encoder_layers(model: nn.Module) -> tuple[str, nn.ModuleList] | None:
    """(module path, layers) of a BERT-layout Hugging Face encoder's layer stack, else None.

    BERT-layout: each layer has ``attention.self.{query,key,value}``, ``attention.output.dense``,
    ``intermediate.dense`` and ``output.dense`` (BERT, RoBERTa, ELECTRA, MiniLM, TinyBERT).
    Usage: ``encoder_layers(bert)[0] == "bert.encoder.layer"``
    """
    prefix = getattr(model, "base_model_prefix", None)
    layers = getattr(getattr(getattr(model, prefix or "", None), "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList) or not len(layers):
        return None
    first = layers[0]
    attention = getattr(getattr(first, "attention", None), "self", None)
    if not all(hasattr(attention, name) for name in ("query", "key", "value", "num_attention_heads")) or \
            not hasattr(getattr(first, "intermediate", None), "dense"):
        return None
    return f"{prefix}.encoder.layer", layers


def pruned_heads(config: object) -> dict[int, list[int]]:
    """``config.pruned_heads`` with integer layer keys (JSON writes them as strings); {} when none.

    Usage: ``pruned_heads(model.config)  # {0: [3, 7], 1: [2]}``
    """
    return {int(layer): sorted(int(h) for h in heads) for layer, heads in (getattr(config, "pruned_heads", None)
                                                                              or {}).items() if heads}


def _channels(heads: list[int], head_dim: int) -> torch.Tensor:
    return torch.tensor([h * head_dim + i for h in heads for i in range(head_dim)], dtype=torch.long)


def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device=weight.device,
                      dtype=weight.dtype)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    return layer


def _set_heads(layer: nn.Module, rows: torch.Tensor, size: int, expand: bool) -> None:
    """Rebuild a layer's query/key/value and output projection at ``size`` attention channels: the ``rows``
    channels carry the weights (expand: placed among zeros; else: kept, the rest cut)."""
    attention, output = layer.attention.self, layer.attention.output.dense
    for name in ("query", "key", "value"):
        old = getattr(attention, name)
        if expand:
            weight = old.weight.new_zeros(size, old.in_features)
            weight[rows] = old.weight
            bias = None if old.bias is None else old.bias.new_zeros(size).index_copy(0, rows, old.bias)
        else:
            weight, bias = old.weight[rows], None if old.bias is None else old.bias[rows]
        setattr(attention, name, _linear(weight.detach(), None if bias is None else bias.detach()))
    if expand:
        weight = output.weight.new_zeros(output.out_features, size)
        weight[:, rows] = output.weight
    else:
        weight = output.weight[:, rows]
    layer.attention.output.dense = _linear(weight.detach(), None if output.bias is None else output.bias.detach())
    attention.num_attention_heads = size // attention.attention_head_size
    attention.all_head_size = size


def expand_pruned_heads(model: nn.Module) -> nn.Module:
    """``model`` itself when no heads were pruned, else a copy at the config's full attention width with the
    heads ``config.pruned_heads`` lists as zero weights (plain ``from_pretrained`` loads it, same outputs).

    Usage: ``expand_pruned_heads(model).save_pretrained(folder)``
    """
    removed = pruned_heads(getattr(model, "config", None))
    if not removed or encoder_layers(model) is None:
        return model
    full = copy.deepcopy(model)
    heads = full.config.num_attention_heads
    for index, layer in enumerate(encoder_layers(full)[1]):
        if removed.get(index):
            kept = [h for h in range(heads) if h not in removed[index]]
            head_dim = layer.attention.self.attention_head_size
            _set_heads(layer, _channels(kept, head_dim), heads * head_dim, expand=True)
    return full


def remove_pruned_heads(model: nn.Module) -> nn.Module:
    """Cut the zero heads that ``config.pruned_heads`` lists out of a model loaded at full width (in place).

    Usage: ``remove_pruned_heads(AutoModelForSequenceClassification.from_pretrained(folder))``
    """
    removed = pruned_heads(getattr(model, "config", None))
    stack = encoder_layers(model)
    if not removed or stack is None:
        return model
    heads = model.config.num_attention_heads
    for index, layer in enumerate(stack[1]):
        if removed.get(index) and layer.attention.self.num_attention_heads == heads:
            kept = [h for h in range(heads) if h not in removed[index]]
            head_dim = layer.attention.self.attention_head_size
            _set_heads(layer, _channels(kept, head_dim), len(kept) * head_dim, expand=False)
    return model
