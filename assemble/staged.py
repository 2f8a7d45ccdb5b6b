"""Staged models: a network cut into K stages that compose in order, and one builder for target, meta and hybrids.

A :class:`StagedModel` runs ``stages[0]`` (which owns the stem) to ``stages[K-1]`` (which owns the norm and
head); between stages flows one interface tensor (ViT and BERT tokens ``(B, N, d)``, CNN feature maps), and
side inputs (BERT's attention mask) go to every stage. A :class:`StagedBuilder` makes, with fresh
initialisation, the target (the model's own blocks in K modules), the meta model (``meta_depths`` blocks per
module, one by default) and hybrid ``i`` (meta depths except the target module at ``i``), all with matching
interfaces between stages, and turns an assembled target back into the plain zoo / Hugging Face model.

Families (how a model splits into stem, a sequence of blocks and head) are registered in :data:`FAMILIES`:
``vit`` (shrink's ViTs), ``cifar-resnet`` (ResNet-20 ... ResNet-110; a meta block makes its module's whole
stride / width change) and ``bert`` (Hugging Face BERT-layout encoder classifiers, MiniLM included).

Usage::

    builder = staged_builder(model, modules=4)        # model: build_model("vit-tiny", ...) or a BERT classifier
    target, meta, hybrid = builder.target(), builder.meta(), builder.hybrid(2)
    plain = builder.to_plain(target)                  # the zoo model again, for save_model / ONNX export
"""
from __future__ import annotations

import abc
import copy
import hashlib
import json
from typing import Any, Callable, Sequence

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from shrink.errors import UserError
from shrink.models import build_model
from shrink.models.resnet_cifar import BasicBlock, CifarResNet
from shrink.models.vit import VisionTransformer
from shrink.registry import Registry

Side = dict[str, torch.Tensor]
BlockCall = Callable[[nn.Module, Any, Side], Any]


def _plain_call(block: nn.Module, x: Any, side: Side) -> Any:
    return block(x)


class Stage(nn.Module):
    """One position of a staged model: an optional stem, its blocks, an optional head.

    Usage: ``Stage([block, block], stem=stem)(pixels, {})``
    """

    def __init__(self, blocks: Sequence[nn.Module], stem: nn.Module | None = None, head: nn.Module | None = None,
                 call: BlockCall = _plain_call) -> None:
        super().__init__()
        self.stem, self.blocks, self.head = stem, nn.ModuleList(blocks), head
        self._call = call

    def forward(self, x: Any, side: Side) -> Any:
        if self.stem is not None:
            x = self.stem(x)
        for block in self.blocks:
            x = self._call(block, x, side)
        return self.head(x) if self.head is not None else x


class StagedModel(nn.Module):
    """Stages composed in order; ``freeze_except(i)`` leaves only stage ``i`` trainable.

    Frozen stages keep their BatchNorm statistics (their layers stay in eval mode), so a frozen meta stage is
    bit-identical after training; dropout and drop-path still run in them in train mode, as in the reference.
    Usage: ``logits = StagedModel(stages, family)(pixels)``
    """

    def __init__(self, stages: Sequence[Stage], family: "Family", depths: Sequence[int]) -> None:
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.family = family
        self.depths = list(depths)
        self.frozen: set[int] = set()

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        x, side = self.family.inputs(*args, **kwargs)
        for stage in self.stages:
            x = stage(x, side)
        return x

    def freeze_except(self, index: int) -> None:
        """Only stage ``index`` trains; call before the model reaches the training engine (and Accelerate)."""
        self.frozen = {j for j in range(len(self.stages)) if j != index}
        for j, stage in enumerate(self.stages):
            stage.requires_grad_(j == index)
        self.train(self.training)

    def train(self, mode: bool = True) -> "StagedModel":
        super().train(mode)
        for j in self.frozen:
            for module in self.stages[j].modules():
                if isinstance(module, _BatchNorm):
                    module.eval()
        return self

    def stage_state(self, index: int) -> dict[str, torch.Tensor]:
        """Stage ``index``'s tensors (keys relative to the stage). Usage: ``model.stage_state(0)``."""
        return {key: value.detach().clone() for key, value in self.stages[index].state_dict().items()}

    def blocks(self) -> list[nn.Module]:
        """Every block in order, across the stages."""
        return [block for stage in self.stages for block in stage.blocks]


# ----------------------------------------------------------------------------------------- drop-path
def set_drop_path(model: StagedModel, rate: float, frozen_rate: str = "follow") -> None:
    """Stochastic depth on every shape-keeping block, rates linear from 0 to ``rate`` over the model's depth
    (the hybrid's depth during incubation); ``frozen_rate="0"`` spares frozen stages. Replaces earlier rates.

    A block's residual ``f(x) - x`` is dropped per sample (scaled by 1 / keep) in train mode, through a forward
    hook, so any block type works and state-dict keys do not change. Usage: ``set_drop_path(hybrid, 0.1)``
    """
    blocks = model.blocks()
    frozen = {id(block) for j in model.frozen for block in model.stages[j].blocks}
    for position, block in enumerate(blocks):
        for handle in getattr(block, "_drop_path_hooks", []):
            handle.remove()
        value = rate * position / max(len(blocks) - 1, 1)
        if frozen_rate == "0" and id(block) in frozen:
            value = 0.0
        block._drop_path_hooks = [block.register_forward_hook(_drop_path_hook(value))] if value > 0 else []


def _drop_path_hook(rate: float) -> Callable[[nn.Module, tuple, Any], Any]:
    def hook(module: nn.Module, args: tuple, output: Any) -> Any:
        x = args[0]
        out = output[0] if isinstance(output, tuple) else output
        if not module.training or out.shape != x.shape:
            return None
        keep = torch.empty((x.shape[0],) + (1,) * (x.dim() - 1), device=x.device, dtype=x.dtype)
        keep.bernoulli_(1 - rate).div_(1 - rate)
        dropped = x + (out - x) * keep
        return (dropped, *output[1:]) if isinstance(output, tuple) else dropped

    return hook


# -------------------------------------------------------------------------------------------- families
class Family(abc.ABC):
    """How one kind of model splits into stem, a sequence of blocks and head; built from a template model.

    Subclasses implement ``matches``, ``block_count``, ``parts`` (fresh stem / blocks / head of one position),
    ``inputs`` (raw model inputs -> first interface value and side inputs), ``to_plain`` and ``describe``.
    """

    name = ""
    call: BlockCall = staticmethod(_plain_call)

    def __init__(self, template: nn.Module, target_depths: Sequence[int]) -> None:
        self.template, self.target_depths = template, list(target_depths)

    @classmethod
    @abc.abstractmethod
    def matches(cls, model: nn.Module) -> bool:
        """True when ``model`` is of this family."""

    @classmethod
    @abc.abstractmethod
    def block_count(cls, model: nn.Module) -> int:
        """The number of blocks ``model`` splits into."""

    @abc.abstractmethod
    def parts(self, position: int, depth: int) -> tuple[nn.Module | None, list[nn.Module], nn.Module | None]:
        """Fresh stem (first position only), ``depth`` blocks and head (last position only) of a position."""

    def inputs(self, *args: Any, **kwargs: Any) -> tuple[Any, Side]:
        return args[0] if args else kwargs["pixel_values"], {}

    @abc.abstractmethod
    def to_plain(self, blocks: list[nn.Module], stem: nn.Module, head: nn.Module) -> nn.Module:
        """The ordinary zoo or Hugging Face model holding ``blocks``, ``stem`` and ``head``."""

    def describe(self) -> dict[str, Any]:
        """What fixes the architecture (checked when phases meet): name and arguments of the model."""
        spec = self.template.shrink_spec
        return {"family": self.name, "model": spec["name"], "args": spec["kwargs"]}

    def _is_edge(self, position: int) -> tuple[bool, bool]:
        return position == 0, position == len(self.target_depths) - 1


FAMILIES: Registry[type[Family]] = Registry("staged model family")


class ViTStem(nn.Module):
    """Patch embedding, class token and position embedding of a shrink ViT (module 0 owns them)."""

    def __init__(self, vit: VisionTransformer) -> None:
        super().__init__()
        self.patch_embed, self.cls_token, self.pos_embed = vit.patch_embed, vit.cls_token, vit.pos_embed

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embed(pixels).flatten(2).transpose(1, 2)
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        return torch.cat((cls, tokens), dim=1) + self.pos_embed


class ViTHead(nn.Module):
    """Final norm and classifier on the class token (module K-1 owns them)."""

    def __init__(self, vit: VisionTransformer) -> None:
        super().__init__()
        self.norm, self.head = vit.norm, vit.head

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(tokens)[:, 0])


@FAMILIES.register("vit")
class ViTFamily(Family):
    """shrink's ViTs: stage parts come from a fresh zoo ViT of the stage's depth (the zoo's initialisation)."""

    name = "vit"

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        return isinstance(model, VisionTransformer) and hasattr(model, "shrink_spec")

    @classmethod
    def block_count(cls, model: nn.Module) -> int:
        return len(model.blocks)

    def _fresh(self, depth: int) -> VisionTransformer:
        spec = self.template.shrink_spec
        return build_model(spec["name"], **{**spec["kwargs"], "depth": depth})

    def parts(self, position: int, depth: int) -> tuple[nn.Module | None, list[nn.Module], nn.Module | None]:
        first, last = self._is_edge(position)
        vit = self._fresh(depth)
        return ViTStem(vit) if first else None, list(vit.blocks), ViTHead(vit) if last else None

    def to_plain(self, blocks: list[nn.Module], stem: nn.Module, head: nn.Module) -> nn.Module:
        vit = self._fresh(len(blocks))
        vit.patch_embed, vit.cls_token, vit.pos_embed = stem.patch_embed, stem.cls_token, stem.pos_embed
        vit.blocks, vit.norm, vit.head = nn.Sequential(*blocks), head.norm, head.head
        return vit


class CNNStem(nn.Module):
    """The CIFAR ResNet's first conv, BatchNorm and ReLU."""

    def __init__(self, net: CifarResNet) -> None:
        super().__init__()
        self.conv1, self.bn1, self.relu = net.conv1, net.bn1, net.relu

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn1(self.conv1(pixels)))


class CNNHead(nn.Module):
    """Global average pooling and the classifier."""

    def __init__(self, net: CifarResNet) -> None:
        super().__init__()
        self.avgpool, self.fc = net.avgpool, net.fc

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(features), 1))


@FAMILIES.register("cifar-resnet")
class CifarResNetFamily(Family):
    """CIFAR ResNets as one sequence of BasicBlocks (3n of them). A module may cross a stride / width change;
    at the target's depth a position holds the target's own blocks, at any other depth its first block makes
    the module's whole change (stride = product of the module's strides, projection shortcut)."""

    name = "cifar-resnet"

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        return isinstance(model, CifarResNet) and hasattr(model, "shrink_spec")

    @classmethod
    def block_count(cls, model: nn.Module) -> int:
        return len(cls._flat(model))

    @staticmethod
    def _flat(net: nn.Module) -> list[nn.Module]:
        return [*net.layer1, *net.layer2, *net.layer3]

    def _fresh(self) -> CifarResNet:
        spec = self.template.shrink_spec
        return build_model(spec["name"], **spec["kwargs"])

    def _span(self, position: int) -> range:
        start = sum(self.target_depths[:position])
        return range(start, start + self.target_depths[position])

    def parts(self, position: int, depth: int) -> tuple[nn.Module | None, list[nn.Module], nn.Module | None]:
        first, last = self._is_edge(position)
        net = self._fresh()
        span = self._span(position)
        if depth == len(span):
            blocks = [self._flat(net)[k] for k in span]
        else:
            target = [self._flat(self.template)[k] for k in span]
            stride = 1
            for block in target:
                stride *= block.conv1.stride[0]
            width_in, width_out = target[0].conv1.in_channels, target[-1].conv2.out_channels
            blocks = [BasicBlock(width_in, width_out, stride), *(BasicBlock(width_out, width_out)
                                                                  for _ in range(depth - 1))]
            CifarResNet._init_weights(nn.ModuleList(blocks))  # the zoo's init, applied to these blocks only
        return CNNStem(net) if first else None, blocks, CNNHead(net) if last else None

    def to_plain(self, blocks: list[nn.Module], stem: nn.Module, head: nn.Module) -> nn.Module:
        net = self._fresh()
        net.conv1, net.bn1, net.relu, net.avgpool, net.fc = stem.conv1, stem.bn1, stem.relu, head.avgpool, head.fc
        start = 0
        for name in ("layer1", "layer2", "layer3"):
            count = len(getattr(net, name))
            setattr(net, name, nn.Sequential(*blocks[start:start + count]))
            start += count
        return net


class BertStem(nn.Module):
    """BERT's embeddings (word, position, token type, LayerNorm)."""

    def __init__(self, embeddings: nn.Module) -> None:
        super().__init__()
        self.embeddings = embeddings

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.embeddings(input_ids=inputs["input_ids"], token_type_ids=inputs.get("token_type_ids"))


class BertHead(nn.Module):
    """Pooler, dropout and classifier of a BERT sequence classifier."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.pooler, self.dropout, self.classifier = model.bert.pooler, model.dropout, model.classifier

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.pooler(hidden)))


def _bert_call(block: nn.Module, x: torch.Tensor, side: Side) -> torch.Tensor:
    out = block(x, attention_mask=side["attention_mask"])
    return out[0] if isinstance(out, tuple) else out


@FAMILIES.register("bert")
class BertFamily(Family):
    """Hugging Face BERT-layout classifiers (``.bert`` with embeddings, encoder layers and pooler, ``.classifier``):
    stage 0 = embeddings + its layers, the last = its layers + pooler + classifier; the extended attention mask
    is the side input. Fresh initialisation from the model's config (pretrained weights are not the method)."""

    name = "bert"
    call = staticmethod(_bert_call)

    @classmethod
    def matches(cls, model: nn.Module) -> bool:
        bert = getattr(model, "bert", None)
        return (hasattr(model, "config") and hasattr(model, "classifier") and bert is not None
                and getattr(bert, "pooler", None) is not None and hasattr(bert, "encoder"))

    @classmethod
    def block_count(cls, model: nn.Module) -> int:
        return len(model.bert.encoder.layer)

    def _fresh(self, depth: int) -> nn.Module:
        config = copy.deepcopy(self.template.config)
        config.num_hidden_layers = depth
        return type(self.template)(config)

    def parts(self, position: int, depth: int) -> tuple[nn.Module | None, list[nn.Module], nn.Module | None]:
        first, last = self._is_edge(position)
        model = self._fresh(depth)
        return (BertStem(model.bert.embeddings) if first else None, list(model.bert.encoder.layer),
                BertHead(model) if last else None)

    def inputs(self, *args: Any, **kwargs: Any) -> tuple[Any, Side]:
        ids = kwargs["input_ids"] if "input_ids" in kwargs else args[0]
        mask = kwargs.get("attention_mask")
        if mask is None:
            mask = torch.ones_like(ids)
        additive = (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
        return {"input_ids": ids, "token_type_ids": kwargs.get("token_type_ids")}, {"attention_mask": additive}

    def to_plain(self, blocks: list[nn.Module], stem: nn.Module, head: nn.Module) -> nn.Module:
        model = self._fresh(len(blocks))
        model.bert.embeddings, model.bert.encoder.layer = stem.embeddings, nn.ModuleList(blocks)
        model.bert.pooler, model.dropout, model.classifier = head.pooler, head.dropout, head.classifier
        for index, layer in enumerate(blocks):  # attention modules know their layer index (caches, logging)
            for module in layer.modules():
                if hasattr(module, "layer_idx"):
                    module.layer_idx = index
        return model

    def describe(self) -> dict[str, Any]:
        config = self.template.config.to_dict()
        for key in ("transformers_version", "_name_or_path", "num_hidden_layers"):
            config.pop(key, None)
        return {"family": self.name, "model": type(self.template).__name__, "args": config}


def family_of(model: nn.Module) -> type[Family]:
    """The registered family that can split ``model``; UserError naming the supported ones otherwise."""
    for name in FAMILIES.names():
        family = FAMILIES.get(name)
        if family.matches(model):
            return family
    raise UserError(f"{type(model).__name__} does not split into stem, a sequence of blocks and head as the "
                    f"supported families do ({', '.join(FAMILIES.names())}); pick a ViT, a CIFAR ResNet or a "
                    "BERT-layout encoder")


# --------------------------------------------------------------------------------------------- builder
def partition(blocks: int, modules: int | None = None, depths: Sequence[int] | None = None) -> list[int]:
    """Per-module target depths: ``depths`` as given (they must sum to ``blocks``) or ``blocks / modules`` each.

    Usage: ``partition(12, modules=4) == [3, 3, 3, 3]``; ``partition(54, depths=[14, 13, 14, 13])``
    """
    if depths:
        if any(depth < 1 for depth in depths) or sum(depths) != blocks:
            raise UserError(f"module depths {list(depths)} must be positive and sum to the model's {blocks} blocks; "
                            "fix --depths")
        if modules is not None and modules != len(depths):
            raise UserError(f"--modules {modules} disagrees with the {len(depths)} module depths given; drop one")
        return list(depths)
    if modules is None or modules < 2:
        raise UserError(f"assembling needs at least 2 modules, got {modules}; pass --modules K")
    if blocks % modules:
        raise UserError(f"the model's {blocks} blocks do not divide into {modules} equal modules; pick a module "
                        f"count that divides {blocks}, or give per-module depths (--depths) that sum to {blocks}")
    return [blocks // modules] * modules


class StagedBuilder:
    """Target, meta and hybrid staged models from one family; see the module docstring.

    Usage: ``StagedBuilder(ViTFamily(template, [3, 3, 3, 3]), meta_depths=[1, 1, 1, 1]).hybrid(1)``
    """

    def __init__(self, family: Family, meta_depths: Sequence[int] | None = None) -> None:
        self.family = family
        self.target_depths = family.target_depths
        self.modules = len(self.target_depths)
        self.meta_depths = list(meta_depths) if meta_depths else [1] * self.modules
        if len(self.meta_depths) != self.modules or min(self.meta_depths) < 1:
            raise UserError(f"meta depths {self.meta_depths} need one positive depth per module ({self.modules})")

    def build(self, depths: Sequence[int]) -> StagedModel:
        """A freshly initialised staged model with ``depths[j]`` blocks at position j."""
        stages = []
        for position, depth in enumerate(depths):
            stem, blocks, head = self.family.parts(position, depth)
            stages.append(Stage(blocks, stem, head, call=self.family.call))
        return StagedModel(stages, self.family, depths)

    def target(self) -> StagedModel:
        return self.build(self.target_depths)

    def meta(self) -> StagedModel:
        return self.build(self.meta_depths)

    def hybrid(self, index: int) -> StagedModel:
        """Meta depths everywhere except the target module at ``index``."""
        if not 0 <= index < self.modules:
            raise UserError(f"module {index} does not exist; modules are numbered 0..{self.modules - 1}")
        depths = list(self.meta_depths)
        depths[index] = self.target_depths[index]
        return self.build(depths)

    def to_plain(self, target: StagedModel) -> nn.Module:
        """The assembled target as the plain zoo / Hugging Face model (same tensors), for saving and export."""
        if target.depths != self.target_depths:
            raise ValueError(f"to_plain needs the target ({self.target_depths}), got depths {target.depths}")
        return self.family.to_plain(target.blocks(), target.stages[0].stem, target.stages[-1].head)

    def signature(self) -> dict[str, Any]:
        """What must agree between meta model, incubated modules and assembly (architecture and split)."""
        return {**self.family.describe(), "target_depths": self.target_depths, "meta_depths": self.meta_depths}

    def fingerprint(self) -> str:
        """A short digest of :meth:`signature`. Usage: ``builder.fingerprint()``."""
        text = json.dumps(self.signature(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def staged_builder(template: nn.Module, modules: int | None = None, depths: Sequence[int] | None = None,
                   meta_depth: int = 1) -> StagedBuilder:
    """The builder for ``template`` (a zoo or Hugging Face model) split into ``modules`` equal modules or ``depths``,
    with ``meta_depth`` blocks per meta module.

    Usage: ``staged_builder(build_model("vit-micro", depth=8), modules=4)``
    """
    family = family_of(template)
    target_depths = partition(family.block_count(template), modules, depths)
    return StagedBuilder(family(template, target_depths), [meta_depth] * len(target_depths))


__all__ = ["FAMILIES", "Family", "Stage", "StagedBuilder", "StagedModel", "family_of", "partition",
           "set_drop_path", "staged_builder"]
