"""Rebuild pruned widths generically: record the constructor arguments of width-carrying layers, and
replace any layer (or bare parameter/buffer) whose saved shape differs from a freshly built model's.

Pruners (Torch-Pruning) shrink Conv/BatchNorm/Linear/LayerNorm/Embedding layers in place and keep their
attributes in step with the weights, so those attributes are enough to rebuild the layer at its new width.

Usage::

    layers = layer_args(pruned_model)  # {"layer1.0.conv1": {"type": "Conv2d", "args": {"out_channels": 13, ...}}}
    resize_to(fresh_model, layers, {name: list(t.shape) for name, t in pruned_model.state_dict().items()})
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

# Constructor arguments per layer family, read back from the attributes of the same name.
# "bias" is the only one that is not an attribute value (the attribute is the tensor).
LAYER_ARGS: dict[type[nn.Module], tuple[str, ...]] = {
    nn.Linear: ("in_features", "out_features", "bias"),
    nn.modules.conv._ConvTransposeNd: (
        "in_channels", "out_channels", "kernel_size", "stride", "padding", "output_padding", "groups", "bias",
        "dilation", "padding_mode",
    ),
    nn.modules.conv._ConvNd: (
        "in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups", "bias",
        "padding_mode",
    ),
    nn.modules.batchnorm._NormBase: ("num_features", "eps", "momentum", "affine", "track_running_stats"),
    nn.LayerNorm: ("normalized_shape", "eps", "elementwise_affine", "bias"),
    nn.GroupNorm: ("num_groups", "num_channels", "eps", "affine"),
    nn.Embedding: (
        "num_embeddings", "embedding_dim", "padding_idx", "max_norm", "norm_type", "scale_grad_by_freq", "sparse",
    ),
}


def _arg_names(module: nn.Module) -> tuple[str, ...] | None:
    for family, names in LAYER_ARGS.items():
        if isinstance(module, family):
            return names
    return None


def _json_value(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def layer_args(model: nn.Module) -> dict[str, dict[str, Any]]:
    """Constructor arguments (JSON-ready) of every width-carrying layer, by module path.

    Usage: ``layer_args(model)["fc"]["args"] == {"in_features": 64, "out_features": 10, "bias": True}``
    """
    layers = {}
    for path, module in model.named_modules():
        names = _arg_names(module)
        if names is None:
            continue
        args = {name: _json_value(getattr(module, name)) for name in names}
        if "bias" in args:
            args["bias"] = module.bias is not None
        layers[path] = {"type": type(module).__name__, "args": args}
    return layers


def _replace(model: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent_path), name, new)


def resize_to(model: nn.Module, layers: dict[str, dict[str, Any]], shapes: dict[str, list[int]]) -> None:
    """Make ``model`` match saved ``layers`` args and tensor ``shapes`` (in place, by module path).

    Layers whose arguments differ are rebuilt (on the CPU, default dtype, as a fresh build is) with the saved
    ones; any other parameter or buffer whose shape differs (e.g. a ViT ``pos_embed``) is replaced by an
    empty tensor of the saved shape, to be filled by ``load_state_dict``.
    Usage: ``resize_to(model, spec["layers"], spec["tensors"])``
    """
    current = layer_args(model)
    for path, saved in layers.items():
        if path not in current or current[path] == saved:
            continue
        old = model.get_submodule(path)
        args = {key: tuple(value) if isinstance(value, list) else value for key, value in saved["args"].items()}
        _replace(model, path, type(old)(**args))
    state = model.state_dict()
    for name, shape in shapes.items():
        if name in state and list(state[name].shape) != list(shape):
            _replace_tensor(model, name, torch.Size(shape))


def _replace_tensor(model: nn.Module, name: str, shape: torch.Size) -> None:
    owner_path, _, attr = name.rpartition(".")
    owner = model.get_submodule(owner_path)
    old = getattr(owner, attr)
    fresh = torch.empty(shape, dtype=old.dtype, device=old.device)
    if isinstance(old, nn.Parameter):
        setattr(owner, attr, nn.Parameter(fresh, requires_grad=old.requires_grad))
    else:  # only persistent buffers are in a state dict
        owner.register_buffer(attr, fresh)
