"""Intermediate features by forward hooks addressed by module path (as torchdistill does), so any model
works without editing its code: ``bert.encoder.layer.3`` in a Hugging Face classifier, ``layer2`` in a
CIFAR ResNet, ``blocks.3`` in a ViT.

Usage::

    with FeatureTaps(model, ["layer1", "layer2"]) as taps:
        logits = model(images)
        f1, f2 = taps.features()
"""
from __future__ import annotations

import difflib
import math
from typing import Any, Mapping, Sequence

from torch import Tensor, nn

from shrink.errors import UserError

_QUERY_NAMES = ("query", "q_lin", "q_proj")
_KEY_NAMES = ("key", "k_lin", "k_proj")
# Where embeddings narrower than the hidden size are projected up (ELECTRA, ConvBERT, RoFormer; ALBERT):
# hidden state 0 is the projection's output, not the embeddings'.
_EMBEDDING_PROJECTIONS = ("embeddings_project", "embedding_hidden_mapping_in")


def find_module(model: nn.Module, path: str) -> nn.Module:
    """The submodule at ``path``; UserError naming the closest paths when there is none.

    Usage: ``find_module(model, "bert.encoder.layer.3")``
    """
    try:
        return model.get_submodule(path)
    except AttributeError:
        names = [name for name, _ in model.named_modules() if name]
        close = difflib.get_close_matches(path, names, n=5, cutoff=0.5)
        hint = f"; close: {', '.join(close)}" if close else ""
        raise UserError(f"the model has no module '{path}'{hint} (see model.named_modules() for all paths)") from None


def first_tensor(output: Any) -> Tensor:
    """The first tensor of a module's output (a tensor, a tuple/list, or a ModelOutput-style mapping).

    Usage: ``first_tensor((hidden, attention_weights)) is hidden``
    """
    if isinstance(output, Tensor):
        return output
    if isinstance(output, Mapping):
        output = list(output.values())
    for value in output if isinstance(output, (tuple, list)) else ():
        if isinstance(value, Tensor):
            return value
    raise UserError(f"a tapped module returned {type(output).__name__} with no tensor; tap a module that outputs one")


class FeatureTaps:
    """Forward hooks that keep the output of each module path during each forward pass of ``model``.

    Captures are cleared when ``model`` starts a forward pass; a module that runs twice keeps its last
    output. Hooks live until :meth:`remove` (or the end of a ``with`` block). Pass the unwrapped model.
    Usage: ``taps = FeatureTaps(model, ["layer2"]); model(x); taps["layer2"]; taps.remove()``
    """

    def __init__(self, model: nn.Module, paths: Sequence[str]) -> None:
        self.paths = list(paths)
        modules = {path: find_module(model, path) for path in self.paths}
        self._captured: dict[str, Tensor] = {}
        self._handles = [model.register_forward_pre_hook(lambda *_: self._captured.clear())]
        self._handles += [module.register_forward_hook(self._keeper(path)) for path, module in modules.items()]

    def _keeper(self, path: str) -> Any:
        def keep(module: nn.Module, inputs: Any, output: Any) -> None:
            self._captured[path] = first_tensor(output)

        return keep

    def __getitem__(self, path: str) -> Tensor:
        if path not in self._captured:
            if path not in self.paths:
                raise UserError(f"'{path}' is not tapped; tapped: {', '.join(self.paths)}")
            raise UserError(f"module '{path}' did not run in the last forward pass; tap a module the model uses")
        return self._captured[path]

    def features(self) -> list[Tensor]:
        """The captured outputs in the order of ``paths``. Usage: ``f1, f2 = taps.features()``."""
        return [self[path] for path in self.paths]

    def remove(self) -> None:
        """Detach all hooks. Usage: ``taps.remove()``."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._captured.clear()

    def __enter__(self) -> FeatureTaps:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def hf_layer_paths(model: nn.Module) -> list[str]:
    """Module paths whose outputs are a Hugging Face model's hidden states: [embeddings, layer 0, ..., layer N-1].

    Index i matches ``output_hidden_states`` index i, so a layer map's indices become paths.
    Usage: ``hf_layer_paths(bert_classifier)[3]  # 'bert.encoder.layer.2'``
    """
    config = getattr(model, "config", None)
    layers = getattr(config, "num_hidden_layers", None)
    if layers is None:
        raise UserError(f"{type(model).__name__} is not a Hugging Face model with config.num_hidden_layers; "
                        "pass module paths to FeatureTaps yourself")
    named = list(model.named_modules())
    stacks = [name for name, module in named if isinstance(module, nn.ModuleList) and len(module) == layers]
    embeddings = [name for name, module in named if name.split(".")[-1] in _EMBEDDING_PROJECTIONS]
    embeddings += [name for name, module in named if name.split(".")[-1] == "embeddings"
                   and not isinstance(module, nn.Embedding)]
    if not stacks or not embeddings:
        raise UserError(f"cannot find the embeddings and the {layers} layers of {type(model).__name__}; "
                        "use output_hidden_states=True or pass module paths to FeatureTaps")
    return [embeddings[0]] + [f"{stacks[0]}.{i}" for i in range(layers)]


def hf_attention_paths(model: nn.Module) -> list[tuple[str, str]]:
    """(query, key) projection paths per layer, to rebuild pre-softmax attention scores with hooks.

    Usage: ``q_path, k_path = hf_attention_paths(bert)[0]``
    """
    pairs = []
    for layer in hf_layer_paths(model)[1:]:
        names = [name for name, _ in find_module(model, layer).named_modules()]
        query = [n for n in names if n.split(".")[-1] in _QUERY_NAMES]
        key = [n for n in names if n.split(".")[-1] in _KEY_NAMES]
        if not query or not key:
            raise UserError(f"no query/key projections found in '{layer}'; attention_mse needs a BERT-style attention")
        pairs.append((f"{layer}.{query[0]}", f"{layer}.{key[0]}"))
    return pairs


def attention_scores(query: Tensor, key: Tensor, num_heads: int) -> Tensor:
    """Pre-softmax scores QKᵀ/√d_head [B, H, L, L] from projected queries and keys [B, L, d].

    Usage: ``attention_scores(taps[q_path], taps[k_path], config.num_attention_heads)``
    """
    batch, length, width = query.shape
    if width % num_heads:
        raise UserError(f"hidden size {width} is not divisible by {num_heads} attention heads")
    heads = [x.view(batch, -1, num_heads, width // num_heads).transpose(1, 2) for x in (query, key)]
    return heads[0] @ heads[1].transpose(-1, -2) / math.sqrt(width // num_heads)


__all__ = ["FeatureTaps", "attention_scores", "find_module", "first_tensor", "hf_attention_paths", "hf_layer_paths"]
