"""Pruning transformers: whole attention heads and FFN neurons of BERT-layout Hugging Face encoders (BERT,
MiniLM, TinyBERT, RoBERTa, ELECTRA) and of the zoo's ViTs, on Torch-Pruning's dependency graph, to the same MACs
target loop as CNNs (:func:`prune.pruner.prune_model` with ``pruner=TransformerPruner.factory(...)``).

Each step takes every block (encoder layer) to the same widths: ``1 / iterative_steps`` more of the FFN neurons
go, and the head count follows at ``head_pace`` times that fraction. Within a block the criterion
(``prune.importance.CRITERIA``: magnitude, Taylor, random, ...) scores the channels of the Torch-Pruning group
(query, key, value rows and output-projection columns for heads; FFN input rows and output columns for neurons)
and a head is ranked by the mean score of its channels, so heads go as whole groups.

Widths stay uniform across blocks because that is what the configs state: a BERT config has one
``intermediate_size``, which the pruned width becomes, so plain ``transformers`` builds the smaller FFN.
Heads cannot be stated at all in transformers v5 (``prune_heads`` is gone and the head width is
``hidden_size / num_attention_heads``), so the removed heads are listed in ``config.pruned_heads`` and saved
as zero heads (:mod:`shrink.models.heads`): plain ``from_pretrained`` gives the same outputs at full attention
width, and :func:`shrink.models.load_model` cuts them out again. A ViT records its head count in its
architecture spec (``heads``; counts that divide the width, as the builder requires).

Whole blocks can go first (:func:`prune_depth`, ``prune --drop-layers N``): the blocks whose output differs
least from their input (Block Influence, ShortGPT; Minitron's depth ranking) are removed, the config's layer
count follows, and width pruning then continues to the target from the shallower model.

Usage::

    pruned, pruner = pruning_start(bert_classifier)            # a copy, and TransformerPruner.factory()
    depth = prune_depth(pruned, 2, calibration_batches)        # optional: the 2 least influential blocks go
    prune_model(pruned, inputs, criterion="taylor", speedup=2, grad_fn=backward, pruner=pruner)
    save_model(pruned, "out/pruned")                           # plain transformers reloads it
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
import torch_pruning as tp
from torch import nn
from torch.nn import functional as F

from shrink.errors import UserError
from shrink.models.heads import encoder_layers, pruned_heads
from shrink.models.vit import VisionTransformer
from shrink.train import Batch, forward_logits, logits_of


@dataclass
class Block:
    """One transformer block as pruning sees it: where its heads and FFN neurons are, and its path (for KD taps)."""

    path: str
    attention: nn.Module  # holds the head count (``num_attention_heads`` or ``num_heads``)
    heads_attr: str
    head_root: nn.Linear  # the attention output projection: its input channels are the heads' channels
    ffn_root: nn.Linear  # the FFN's first layer: its output channels are the neurons

    @property
    def heads(self) -> int:
        """The block's current head count."""
        return int(getattr(self.attention, self.heads_attr))

    @property
    def head_dim(self) -> int:
        """Channels per head."""
        return self.head_root.in_features // self.heads

    @property
    def ffn_width(self) -> int:
        """The block's current FFN width."""
        return self.ffn_root.out_features


def hf_blocks(model: nn.Module) -> list[Block] | None:
    """The blocks of a BERT-layout Hugging Face encoder, else None.

    Usage: ``[block.path for block in hf_blocks(bert)]  # ['bert.encoder.layer.0', ...]``
    """
    stack = encoder_layers(model)
    if stack is None:
        return None
    path, layers = stack
    return [Block(f"{path}.{index}", layer.attention.self, "num_attention_heads", layer.attention.output.dense,
                  layer.intermediate.dense) for index, layer in enumerate(layers)]


def transformer_blocks(model: nn.Module) -> list[Block] | None:
    """The prunable blocks of a supported transformer (BERT-layout HF encoder, zoo ViT); None for other models.

    Usage: ``transformer_blocks(build_model("vit-micro"))[0].heads == 2``
    """
    if isinstance(model, VisionTransformer):
        return [Block(f"blocks.{index}", block.attn, "num_heads", block.attn.proj, block.mlp[0])
                for index, block in enumerate(model.blocks)]
    return hf_blocks(model)


def is_transformer(model: nn.Module) -> bool:
    """True for models this module prunes (heads and FFN) rather than the CNN path. Usage: ``is_transformer(m)``."""
    return transformer_blocks(model) is not None


# ---------------------------------------------------------------------------------------------- pruner
def allowed_heads(model: nn.Module, hidden: int, initial: int) -> list[int]:
    """Head counts a pruned block may keep: any for Hugging Face encoders; for a ViT, those dividing its width
    (its builder checks that). Usage: ``allowed_heads(vit, 384, 6) == [1, 2, 3, 4, 6]``
    """
    divides = isinstance(model, VisionTransformer)
    return [count for count in range(1, initial + 1) if not divides or hidden % count == 0]


class TransformerPruner:
    """A Torch-Pruning stepper for transformers with ``step()`` and ``current_step``, as ``prune_model`` drives.

    Step ``k`` of ``iterative_steps`` takes every block to FFN width ``F0 * (1 - k / steps)``
    (a multiple of ``round_to`` when given; at least one block of it) and to the fewest allowed heads not
    below ``H0 * (1 - head_pace * k / steps)`` (at least one). ``head_pace`` 0 keeps every head.
    Usage: ``TransformerPruner(model, inputs, importance, iterative_steps=100).step()``
    """

    def __init__(self, model: nn.Module, example_inputs: Any, importance: tp.importance.Importance, *,
                 iterative_steps: int, round_to: int | None = None, ignored_layers: Sequence[nn.Module] = (),
                 head_pace: float = 1.0, max_layer_ratio: float | None = None,
                 base_widths: Mapping[str, tuple[int, int]] | None = None) -> None:
        if max_layer_ratio is not None or base_widths:  # the CNN pruner's per-layer cap and its reference widths
            raise UserError("--max-layer-ratio caps CNN layers; transformer blocks keep one head count and FFN width "
                            "for all, so drop it (or use --drop-layers / --head-pace)")
        blocks = transformer_blocks(model)
        if not blocks:
            raise UserError(f"{type(model).__name__} has no transformer blocks to prune heads or FFN neurons in")
        protected = {id(module) for layer in ignored_layers for module in layer.modules()}
        if any(id(m) in protected for b in blocks for m in (b.attention, b.head_root, b.ffn_root)):
            raise UserError("transformer blocks are pruned alike (the saved config states one head count and FFN "
                            "width), so none of their layers can be protected; drop those --protect paths")
        self.blocks = blocks
        self.model, self.importance, self.head_pace = model, importance, head_pace
        self.iterative_steps, self.round_to, self.current_step = iterative_steps, round_to or 1, 0
        self.hidden = self.blocks[0].head_root.out_features
        self.initial_heads, self.initial_ffn = self.blocks[0].heads, self.blocks[0].ffn_width
        self.allowed = allowed_heads(model, self.hidden, self.initial_heads)
        # original head numbers still in each block (Hugging Face configs list the removed ones)
        self.kept = {block.path: list(range(self.initial_heads)) for block in self.blocks}
        if pruned_heads(getattr(model, "config", None)):
            raise UserError("this model had heads pruned already; prune the unpruned model to the combined target")
        if any((block.heads, block.ffn_width) != (self.initial_heads, self.initial_ffn) for block in self.blocks):
            raise UserError("the blocks have different head counts or FFN widths; prune starts from a model whose "
                            "blocks are alike (prune the unpruned model again instead)")
        self.graph = tp.DependencyGraph().build_dependency(model, example_inputs=example_inputs,
                                                           output_transform=logits_of)

    @classmethod
    def factory(cls, head_pace: float = 1.0) -> Callable[..., TransformerPruner]:
        """A ``pruner=`` argument for :func:`prune.pruner.prune_model`.

        Usage: ``prune_model(model, x, speedup=2, pruner=TransformerPruner.factory())``
        """
        def make(model: nn.Module, example_inputs: Any, **options: Any) -> TransformerPruner:
            return cls(model, example_inputs, head_pace=head_pace, **options)

        return make

    def targets(self, step: int) -> tuple[int, int]:
        """(heads, FFN width) every block has after ``step``. Usage: ``pruner.targets(50)``."""
        fraction = step / self.iterative_steps
        width = int(self.initial_ffn * (1 - fraction)) // self.round_to * self.round_to
        wanted = self.initial_heads * (1 - self.head_pace * fraction)
        heads = min((count for count in self.allowed if count >= wanted - 1e-9), default=self.allowed[0])
        return heads, max(width, self.round_to)

    def step(self) -> None:
        """Prune every block to the next step's widths, the least important heads and neurons first."""
        self.current_step += 1
        heads, width = self.targets(self.current_step)
        for block in self.blocks:
            if block.heads > heads:
                self._prune_heads(block, block.heads - heads)
            if block.ffn_width > width:
                lowest = torch.argsort(self._scores(block.ffn_root, "out"))[:block.ffn_width - width]
                self._prune(block.ffn_root, "out", lowest.tolist())
        self._state_widths(heads, width)

    def _handler(self, root: nn.Linear, side: str) -> Callable:
        pruner = self.graph.get_pruner_of_module(root)
        return pruner.prune_out_channels if side == "out" else pruner.prune_in_channels

    def _scores(self, root: nn.Linear, side: str) -> torch.Tensor:
        """The criterion's score of each of ``root``'s output (or input) channels, over its whole group."""
        size = root.out_features if side == "out" else root.in_features
        scores = self.importance(self.graph.get_pruning_group(root, self._handler(root, side), list(range(size))))
        if scores is None:
            raise UserError("this importance criterion does not score transformer layers (it needs BatchNorm); "
                            "pick group-l2, group-l1, taylor, lamp or random")
        return scores.detach().float().cpu()

    def _prune_heads(self, block: Block, count: int) -> None:
        """Remove the ``count`` heads with the lowest mean channel score (query, key, value and output together)."""
        head_dim = block.head_dim
        per_head = self._scores(block.head_root, "in").view(block.heads, head_dim).mean(1)
        dropped = torch.argsort(per_head)[:count].tolist()
        self._prune(block.head_root, "in", [h * head_dim + i for h in dropped for i in range(head_dim)])
        self.kept[block.path] = [h for index, h in enumerate(self.kept[block.path]) if index not in dropped]
        setattr(block.attention, block.heads_attr, block.head_root.in_features // head_dim)
        if hasattr(block.attention, "all_head_size"):
            block.attention.all_head_size = block.head_root.in_features

    def _prune(self, root: nn.Linear, side: str, channels: list[int]) -> None:
        self.graph.get_pruning_group(root, self._handler(root, side), sorted(channels)).prune()

    def _state_widths(self, heads: int, width: int) -> None:
        """Write the blocks' widths where a saved model reads them: the HF config, or the ViT's spec."""
        config = getattr(self.model, "config", None)
        if config is not None:
            config.intermediate_size = width
            config.pruned_heads = {index: [h for h in range(self.initial_heads) if h not in self.kept[block.path]]
                                   for index, block in enumerate(transformer_blocks(self.model))
                                   if block.path in self.kept and len(self.kept[block.path]) < self.initial_heads}
        elif hasattr(self.model, "shrink_spec"):
            self.model.shrink_spec["kwargs"]["heads"] = heads


def pruning_start(model: nn.Module, head_pace: float = 1.0) -> tuple[nn.Module, Callable[..., Any]]:
    """The copy of ``model`` to prune and the ``pruner=`` that prunes it: heads and FFN neurons of a transformer
    (:class:`TransformerPruner`), channel groups of anything else (Torch-Pruning's global
    ranking). Usage: ``pruned, pruner = pruning_start(base); prune_model(pruned, x, pruner=pruner, speedup=2)``
    """
    from prune.pruner import global_pruner

    if hasattr(model, "config") and not is_transformer(model):
        raise UserError(f"prune reads BERT-layout Hugging Face encoders (BERT, MiniLM, TinyBERT, RoBERTa, ELECTRA); "
                        f"{type(model).__name__} has another layout")
    return copy.deepcopy(model), TransformerPruner.factory(head_pace) if is_transformer(model) else global_pruner


# ---------------------------------------------------------------------------------------------- depth
def check_depth(model: nn.Module, count: int) -> None:
    """UserError unless ``count`` whole blocks can go from ``model`` (a transformer keeping at least one block).

    Usage: ``check_depth(bert, 2)``
    """
    blocks = transformer_blocks(model)
    if blocks is None:
        raise UserError(f"--drop-layers removes whole transformer blocks; {type(model).__name__} has none "
                        "(CNNs lose channels: leave --drop-layers out)")
    if count >= len(blocks):
        raise UserError(f"--drop-layers {count} would leave none of the model's {len(blocks)} blocks; "
                        f"drop at most {len(blocks) - 1}")


def block_influence(model: nn.Module, batches: Iterable[Batch]) -> list[float]:
    """Each block's Block Influence: 1 - the mean cosine similarity between a token's hidden state before and
    after the block, over the real (unpadded) tokens of ``batches`` (training batches: token ids with their
    attention mask, or ``pixel_values``). A block that leaves its input almost as it was contributes least
    (ShortGPT; Minitron ranks depth the same way). Eval mode, no gradients.

    Usage: ``block_influence(bert, [tokenised_batch])  # [0.31, 0.05, ...], one per block``
    """
    blocks = transformer_blocks(model)
    if blocks is None:
        raise UserError(f"{type(model).__name__} has no transformer blocks to rank")
    similarity_sums = torch.zeros(len(blocks), dtype=torch.float64)
    token_counts = torch.zeros(len(blocks), dtype=torch.float64)
    mask: list[torch.Tensor | None] = [None]  # the current batch's attention mask, for the hooks

    def record(index: int) -> Callable:
        def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            before = args[0] if args else kwargs["hidden_states"]
            after = output[0] if isinstance(output, tuple) else output
            similarity = F.cosine_similarity(before.double(), after.double(), dim=-1)  # (batch, tokens)
            weights = torch.ones_like(similarity) if mask[0] is None else mask[0].to(similarity)
            similarity_sums[index] += (similarity * weights).sum().cpu()
            token_counts[index] += weights.sum().cpu()
        return hook

    handles = [model.get_submodule(block.path).register_forward_hook(record(index), with_kwargs=True)
               for index, block in enumerate(blocks)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in batches:
                mask[0] = batch.get("attention_mask")
                forward_logits(model, batch)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    if not token_counts.all():
        raise UserError("ranking blocks needs some calibration data; the batches were empty")
    return (1 - similarity_sums / token_counts).tolist()


def drop_blocks(model: nn.Module, drop: Sequence[int]) -> list[int]:
    """Remove the blocks at indices ``drop`` in place and state the new depth where a saved model reads it (the
    Hugging Face config's ``num_hidden_layers``, the ViT's spec). Returns the original indices of the kept
    blocks, in order. Usage: ``drop_blocks(bert, [2, 4])  # [0, 1, 3, 5]``
    """
    check_depth(model, len(set(drop)))
    if isinstance(model, VisionTransformer):
        kept = [index for index in range(len(model.blocks)) if index not in drop]
        model.blocks = nn.Sequential(*(model.blocks[index] for index in kept))
        if hasattr(model, "shrink_spec"):
            model.shrink_spec["kwargs"]["depth"] = len(kept)
        return kept
    path, layers = encoder_layers(model)
    kept = [index for index in range(len(layers)) if index not in drop]
    model.get_submodule(path.rsplit(".", 1)[0]).layer = nn.ModuleList(layers[index] for index in kept)
    for position, index in enumerate(kept):
        for module in layers[index].modules():  # cache slots of decoder-capable layers follow the new order
            if hasattr(module, "layer_idx"):
                module.layer_idx = position
    model.config.num_hidden_layers = len(kept)
    return kept


@dataclass
class DepthPruning:
    """What :func:`prune_depth` removed: the dropped and kept blocks (original indices) and every block's
    influence. ``kept`` pairs each remaining block with the unpruned model's block it was, for hidden-state KD."""

    dropped: list[int]
    kept: list[int]
    influence: list[float]


def prune_depth(model: nn.Module, count: int, batches: Iterable[Batch]) -> DepthPruning:
    """Remove the ``count`` blocks of least Block Influence on ``batches`` (see :func:`block_influence`), in place.

    Usage: ``prune_depth(bert, 2, batches).kept  # e.g. [0, 1, 2, 5] of a 6-layer encoder``
    """
    check_depth(model, count)
    influence = block_influence(model, batches)
    dropped = sorted(int(index) for index in torch.tensor(influence).argsort()[:count])
    return DepthPruning(dropped, drop_blocks(model, dropped), influence)


def block_paths(model: nn.Module) -> list[str]:
    """Module paths of a transformer's blocks, whose outputs are its hidden states (for KD taps).

    Usage: ``block_paths(bert)[0] == "bert.encoder.layer.0"``
    """
    blocks = transformer_blocks(model)
    if blocks is None:
        raise UserError(f"{type(model).__name__} is not a transformer prune can read hidden states from")
    return [block.path for block in blocks]


__all__ = ["Block", "DepthPruning", "TransformerPruner", "allowed_heads", "block_influence", "block_paths",
           "check_depth", "drop_blocks", "hf_blocks", "is_transformer", "prune_depth", "pruning_start",
           "transformer_blocks"]
