"""Meta-training: teach the metanetwork to make networks easier to prune without losing accuracy.

One meta-step on one data model (metapruning spec section 4): the metanetwork maps the model's graph to new
weights ``W``; the task loss (cross-entropy summed over training batches, through ``functional_call`` with
the BN running statistics of the original, scaled to the reference's sum over the whole training set in
batches of 500, see :func:`reference_ce_scale`) plus DepGraph's group-norm regulariser
``R = reg / 2 * sum_c gamma_c * ||w_c||^2`` (``gamma_c`` up to ``alpha`` times larger for weak channels)
is differentiated with respect to ``W`` held as detached leaves, accumulated over all batches, and chained
into the metanetwork with one backward pass (same gradient as back-propagating each batch, flat memory).

After each meta-epoch the metanetwork is judged on held-out data models: transformed, pruned to a target
speed-up without finetuning, and evaluated on a validation split of the *training* data. The best epoch's
weights are kept and saved with safetensors.

Usage::

    collection = [DataModel.from_model(m, example) for m in trained_models]
    result = meta_train(metanet, collection[:-1], collection[-1:], train_batches, val_batches,
                        MetaTrainConfig(epochs=20), save_dir="runs/meta/metanet")
"""
from __future__ import annotations

import copy
import itertools
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import torch
import torch_pruning as tp
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F
from torch.optim.swa_utils import update_bn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from prune.config import DEFAULT_SPEEDUP, PruneRecipe
from prune.graph import NetworkGraph, graph_params, network_to_graph
from prune.metacheckpoint import MetaState, load_meta_checkpoint, remove_meta_checkpoint, save_meta_checkpoint
from prune.metanet import MetaNetwork, apply_metanet, save_metanet
from prune.pruner import PHASES_DIR, checkpointed_fit, finetune, layer_widths, protected_modules, prune_model
from shrink.bench import DEFAULT_IMAGE_SHAPE, example_inputs
from shrink.errors import UserError
from shrink.experiment import Experiment, holdout_split, load_task, prepare_experiment
from shrink.models import load_model, save_model
from shrink.models.io import SPEC_FILE
from shrink.progress import bars_on, lines_on
from shrink.runs import atomic_write_json
from shrink.train import Batch, evaluate_model

HISTORY_FILE = "metatrain.json"
MIN_SELECT_SPEEDUP = 1.05
CALIBRATION_EXAMPLES = 1024  # images whose BatchNorm statistics replace stale ones
REFERENCE_META_BATCH = 500  # the reference's meta-step sums the CE over the training set in batches of 500


@dataclass(frozen=True)
class GroupMember:
    """One slice family of a dependency group: parameter ``param`` along ``dim`` (0 rows, 1 columns) at
    ``idxs``, which are the group's channels ``root``."""

    param: str
    dim: int
    idxs: torch.Tensor
    root: torch.Tensor


def regularizer_groups(model: nn.Module, example_input: torch.Tensor, protect: Sequence[str] = ()
                       ) -> list[list[GroupMember]]:
    """Torch-Pruning's coupled channel groups of ``model`` (classifier outputs excluded), as parameter slices.

    Usage: ``groups = regularizer_groups(model, torch.zeros(1, 3, 32, 32))``
    """
    was_training = model.training
    model.eval()  # tracing runs a forward pass: keep the BN statistics where they are
    try:
        graph = tp.DependencyGraph().build_dependency(model, example_inputs=example_input)
        ignored = protected_modules(model, protect, example_input)
        raw_groups = list(graph.get_all_groups(ignored_layers=ignored))
    finally:
        model.train(was_training)
    names = {module: name for name, module in model.named_modules()}
    handlers = {tp.prune_conv_out_channels: 0, tp.prune_linear_out_channels: 0, tp.prune_batchnorm_out_channels: 0,
                tp.prune_conv_in_channels: 1, tp.prune_linear_in_channels: 1}
    groups = []
    for group in raw_groups:
        members = []
        for position, (dep, idxs) in enumerate(group):
            module, handler, root = dep.target.module, dep.handler, group[position].root_idxs
            if handler not in handlers or getattr(module, "weight", None) is None or any(r is None for r in root):
                continue
            members.append(GroupMember(f"{names[module]}.weight", handlers[handler], torch.tensor(idxs),
                                       torch.tensor(root)))
        if members:
            groups.append(members)
    return groups


def group_norm_penalty(groups: Sequence[Sequence[GroupMember]], params: Mapping[str, torch.Tensor],
                       reg: float = 10.0, alpha: float = 16.0) -> torch.Tensor:
    """``reg / 2 * sum_c gamma_c ||w_c||^2`` over every group; its gradient is what Torch-Pruning's
    ``GroupNormPruner(reg).regularize(model, alpha)`` adds (group-L2 importance, max-normalised, gamma
    detached; a group whose importance is undefined is skipped, as there).
    Usage: ``group_norm_penalty(regularizer_groups(model, x), dict(model.named_parameters())).backward()``
    """
    total = next(iter(params.values())).new_zeros(())
    for members in groups:
        squares = [_channel_squares(params[member.param], member) for member in members]
        with torch.no_grad():
            imp = _group_squares(members, squares) / len(members)
            imp = (imp / imp.max()).sqrt()
            gamma = alpha ** ((imp.max() - imp) / (imp.max() - imp.min()))
        if not torch.isfinite(gamma).all():
            continue
        for member, square in zip(members, squares):
            total = total + (gamma[member.root.to(gamma.device)] * square).sum()
    return reg / 2 * total


def _group_squares(members: Sequence[GroupMember], squares: Sequence[torch.Tensor]) -> torch.Tensor:
    """Each channel's squared norm summed over the group's slice families (detached, fp32)."""
    total = torch.zeros(len(members[0].root), device=squares[0].device)
    for member, square in zip(members, squares):
        total.scatter_add_(0, member.root.to(total.device), square.detach().float())
    return total


def norm_concentration(groups: Sequence[Sequence[GroupMember]], params: Mapping[str, torch.Tensor],
                       top: float = 0.4) -> float:
    """Share of the squared group-L2 norm held by the strongest ``top`` fraction of prunable channels (all
    ``groups`` ranked together): how much of the network pruning by norm would keep. Meta-training should
    raise it. ``groups`` (from :func:`regularizer_groups`) serve every network of the same structure.
    Usage: ``norm_concentration(item.groups, dict(apply_metanet(metanet, item.model).named_parameters()))``
    """
    channels = torch.cat([_group_squares(members, [_channel_squares(params[m.param].detach(), m) for m in members])
                          for members in groups])
    strongest = channels.sort(descending=True).values[: max(1, math.ceil(top * len(channels)))]
    return float(strongest.sum() / channels.sum())


def _channel_squares(weight: torch.Tensor, member: GroupMember) -> torch.Tensor:
    picked = weight.index_select(member.dim, member.idxs.to(weight.device))
    return picked.movedim(member.dim, 0).reshape(len(member.idxs), -1).square().sum(1)


@dataclass
class DataModel:
    """A network of the meta-training collection with its graph and regulariser groups (built once).

    Usage: ``DataModel.from_model(model, torch.zeros(1, 3, 32, 32), name="seed-1")``
    """

    model: nn.Module
    graph: NetworkGraph
    groups: list[list[GroupMember]]
    example_input: torch.Tensor
    name: str = "model"

    @classmethod
    def from_model(cls, model: nn.Module, example_input: torch.Tensor, name: str = "model") -> DataModel:
        """Trace ``model`` once (graph + groups); it is kept in eval mode (meta-steps use its BN statistics)."""
        model.eval()
        return cls(model, network_to_graph(model, example_input), regularizer_groups(model, example_input),
                   example_input, name)


@dataclass(frozen=True)
class MetaTrainConfig:
    """Meta-training settings (spec defaults for ResNet-56: lr 1e-3, 100 epochs, milestone 3, reg 10, alpha 16).

    ``select_speedup``: the speed-up held-out models are pruned to (without finetuning) to pick the epoch.
    ``ce_scale``: multiplies each batch's mean CE (see :func:`reference_ce_scale`). ``batch_stats``: see
    :func:`meta_step`. ``max_layer_ratio``: the per-layer cap of the selection prune (as the final prune's),
    against ``base_widths`` (the unpruned architecture's :func:`prune.pruner.layer_widths`; the held-out models
    were pruned lightly before).
    """

    epochs: int = 100
    lr: float = 1e-3
    weight_decay: float = 5e-4
    milestones: tuple[int, ...] = (3,)
    gamma: float = 0.1
    reg: float = 10.0
    alpha: float = 16.0
    ce_scale: float = 1.0
    select_speedup: float = 2.0
    batch_stats: bool = False
    max_layer_ratio: float | None = None
    base_widths: Mapping[str, tuple[int, int]] | None = None
    progress: bool = True


@dataclass
class MetaTrainResult:
    """Per-epoch losses and selection scores, and the chosen epoch (0: the untrained metanetwork)."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_score: float = -math.inf


def meta_step(metanet: MetaNetwork, item: DataModel, batches: Iterable[Batch], reg: float = 10.0,
              alpha: float = 16.0, ce_scale: float = 1.0, batch_stats: bool = False) -> dict[str, float]:
    """Accumulate one data model's meta-gradient into ``metanet``'s ``.grad``; returns the CE (the batches'
    mean CE summed, times ``ce_scale``) and R.

    ``batch_stats``: BatchNorm normalises with each batch's statistics (the data model's running statistics
    are left as they are) instead of the original running statistics, which go stale as soon as the
    metanetwork rescales a channel.

    A non-finite weight gradient skips the step (as the reference does) and reports ``skipped: 1``.
    Usage: ``optimizer.zero_grad(); meta_step(metanet, item, batches); optimizer.step()``
    """
    data = item.graph.data
    x_pred, e_pred = metanet(data.x, data.edge_index, data.edge_attr, item.graph.layout.blocks)
    weights = graph_params(item.graph.layout, x_pred, e_pred)
    leaves = {name: value.detach().requires_grad_() for name, value in weights.items()}
    # Batch statistics update the running ones in place: hand BatchNorm copies, so the data model keeps its own.
    buffers = {name: buffer.clone() for name, buffer in item.model.named_buffers()} if batch_stats else {}
    ce = 0.0
    item.model.train(batch_stats)
    try:
        for batch in batches:
            logits = functional_call(item.model, {**leaves, **buffers}, (batch["pixel_values"],))
            loss = ce_scale * F.cross_entropy(logits, batch["labels"])
            loss.backward()
            ce += float(loss.detach())
    finally:
        item.model.eval()
    ce_grads = [leaf.grad for leaf in leaves.values()]
    penalty = group_norm_penalty(item.groups, leaves, reg, alpha)
    reg_grads = torch.autograd.grad(penalty, list(leaves.values()), allow_unused=True)
    # The balance of the two pulls on W decides whether the networks stay accurate: worth logging.
    terms = {"ce": ce, "reg": float(penalty.detach()), "skipped": 0.0,
             "reg_to_ce_grad": _norm(reg_grads) / max(_norm(ce_grads), 1e-12)}
    grads = [_sum((ce_grad, reg_grad), like=leaf)
             for ce_grad, reg_grad, leaf in zip(ce_grads, reg_grads, leaves.values())]
    if not all(torch.isfinite(grad).all() for grad in grads):
        return {**terms, "skipped": 1.0}
    torch.autograd.backward(list(weights.values()), grads)
    return terms


def _norm(tensors: Iterable[torch.Tensor | None]) -> float:
    return math.sqrt(sum(float(t.detach().square().sum()) for t in tensors if t is not None))


def _sum(tensors: Iterable[torch.Tensor | None], like: torch.Tensor) -> torch.Tensor:
    present = [t for t in tensors if t is not None]
    return sum(present[1:], present[0]) if present else torch.zeros_like(like)


def recalibrate_batchnorm(model: nn.Module, batches: Iterable[Batch],
                          examples: int = CALIBRATION_EXAMPLES) -> nn.Module:
    """Replace ``model``'s BatchNorm running statistics by their average over about ``examples`` images of
    ``batches`` (torch's ``update_bn``); its training mode is kept. A metanetwork or a prune changes the
    weights but not the statistics, so without this a better network can score worse.
    Usage: ``recalibrate_batchnorm(transformed, train_loader)``
    """
    def images() -> Iterator[torch.Tensor]:
        seen = 0
        for batch in batches:
            if seen >= examples:
                return
            seen += len(batch["pixel_values"])
            yield batch["pixel_values"]

    with torch.no_grad():
        update_bn(images(), model)
    return model


def selection_score(metanet: MetaNetwork, held_out: Sequence[DataModel], val_batches: Iterable[Batch],
                    speedup: float, calibration_batches: Iterable[Batch],
                    max_layer_ratio: float | None = None,
                    base_widths: Mapping[str, tuple[int, int]] | None = None) -> dict[str, float]:
    """Mean over the held-out models after the metanetwork: ``score``, the validation accuracy after pruning
    to ``speedup`` (no finetuning) and BatchNorm recalibration on ``calibration_batches`` (training data),
    and ``concentration``, the group-norm share of the top 40% of channels before pruning. The prune caps each
    layer at ``max_layer_ratio`` of its ``base_widths`` width as the final one does
    (:func:`prune.pruner.prune_model`).
    Usage: ``selection_score(metanet, held_out, val_batches, 2.0, train_batches)["score"]``
    """
    scores, shares = [], []
    for item in held_out:
        pruned = apply_metanet(metanet, item.model, item.example_input)
        shares.append(norm_concentration(item.groups, dict(pruned.named_parameters())))  # same structure
        prune_model(pruned, item.example_input, speedup=speedup, max_layer_ratio=max_layer_ratio,
                    base_widths=base_widths)
        recalibrate_batchnorm(pruned, calibration_batches)
        scores.append(evaluate_model(pruned, val_batches, ("accuracy",))["accuracy"])
    return {"score": sum(scores) / len(scores), "concentration": sum(shares) / len(shares)}


def meta_train(metanet: MetaNetwork, collection: Sequence[DataModel], held_out: Sequence[DataModel],
               train_batches: Iterable[Batch], val_batches: Iterable[Batch], config: MetaTrainConfig = MetaTrainConfig(),
               save_dir: str | os.PathLike | None = None, log: Callable[[str], None] = print,
               checkpoint_dir: Path | None = None) -> MetaTrainResult:
    """Meta-train ``metanet`` (one step per collection model per epoch), keep the epoch whose held-out
    score is best, load those weights back into ``metanet`` and save them to ``save_dir``.

    ``train_batches`` / ``val_batches``: re-iterable batches (a DataLoader) from the training data only.
    With ``checkpoint_dir`` every epoch is checkpointed there and an interrupted meta-training continues
    from its last epoch (:mod:`prune.metacheckpoint`); the checkpoint goes once the result is saved.
    Usage: ``meta_train(metanet, models[:8], models[8:], train_loader, holdout_loader, MetaTrainConfig(epochs=30))``
    """
    if not collection or not held_out:
        raise UserError("meta-training needs at least one training and one held-out data model "
                        "(--data-models 2 or more)")
    optimizer = torch.optim.AdamW(metanet.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(config.milestones), config.gamma)
    generator = _shuffle_generator(train_batches)
    saved = load_meta_checkpoint(checkpoint_dir, metanet, optimizer, generator) if checkpoint_dir else None
    if saved is None:
        result, best_state = MetaTrainResult(), copy.deepcopy(metanet.state_dict())
        selection = selection_score(metanet, held_out, val_batches, config.select_speedup, train_batches,
                                    config.max_layer_ratio, config.base_widths)
        result.best_score = selection["score"]
        result.history.append({"epoch": 0, **selection})
        done = 0
    else:
        result, best_state = MetaTrainResult(saved.history, saved.best_epoch, saved.best_score), saved.best
        done = scheduler.last_epoch = saved.epoch  # the step schedule counts epochs
        log(f"meta-training resumed after epoch {done}")

    def checkpoint(epoch: int) -> None:
        if checkpoint_dir is not None:
            save_meta_checkpoint(checkpoint_dir, MetaState(metanet, optimizer, epoch, result.history,
                                                           result.best_epoch, result.best_score, best_state), generator)

    if saved is None:
        checkpoint(0)
    bar = tqdm(range(done + 1, config.epochs + 1), desc="meta-train", unit="epoch", initial=done,
               total=config.epochs, disable=not bars_on(config.progress))
    for epoch in bar:
        metanet.train()
        sums = {"ce": 0.0, "reg": 0.0, "skipped": 0.0, "reg_to_ce_grad": 0.0}
        for item in collection:
            optimizer.zero_grad(set_to_none=True)
            terms = meta_step(metanet, item, train_batches, config.reg, config.alpha, config.ce_scale,
                              config.batch_stats)
            if not terms["skipped"]:
                optimizer.step()
            for key, value in terms.items():
                sums[key] += value
        scheduler.step()
        metanet.eval()
        selection = selection_score(metanet, held_out, val_batches, config.select_speedup, train_batches,
                                    config.max_layer_ratio, config.base_widths)
        score = selection["score"]
        entry = {"epoch": epoch, **{key: value / len(collection) for key, value in sums.items()},
                 "skipped": sums["skipped"], **selection}
        result.history.append(entry)
        figures = {"ce": f"{entry['ce']:.3f}", "reg": f"{entry['reg']:.3f}",
                   "reg_to_ce_grad": f"{entry['reg_to_ce_grad']:.2f}", "score": f"{score:.4f}",
                   "top40": f"{selection['concentration']:.3f}"}
        bar.set_postfix(figures)
        if lines_on(config.progress):
            log(f"meta-train epoch {epoch}/{config.epochs}: " + ", ".join(f"{k} {v}" for k, v in figures.items()))
        if score > result.best_score:
            result.best_score, result.best_epoch = score, epoch
            best_state = copy.deepcopy(metanet.state_dict())
        checkpoint(epoch)
    bar.close()
    metanet.load_state_dict(best_state)
    log(f"meta-training kept epoch {result.best_epoch} (held-out accuracy at {config.select_speedup}x without "
        f"finetuning: {result.best_score:.4f}; norm share of the top 40% channels "
        f"{result.history[0]['concentration']:.3f} -> {result.history[result.best_epoch]['concentration']:.3f})")
    if save_dir is not None:
        folder = save_metanet(metanet, save_dir)
        atomic_write_json(Path(folder) / HISTORY_FILE, {"best_epoch": result.best_epoch,
                                                        "best_score": result.best_score, "history": result.history})
        if checkpoint_dir is not None:
            remove_meta_checkpoint(checkpoint_dir)
    return result


def _shuffle_generator(batches: Iterable[Batch]) -> torch.Generator | None:
    """The generator that shuffles a DataLoader (or the one a ``_Limited`` view reads): part of the state."""
    return getattr(getattr(batches, "loader", batches), "generator", None)


# ------------------------------------------------------------------------------------- the collection
def light_prune(experiment: Experiment, model: nn.Module, recipe: PruneRecipe, checkpoints: Path | None = None
                ) -> nn.Module:
    """Prune ``model`` lightly (``prune.meta.light_speedup``, group-L2) and finetune it (checkpointed into
    ``checkpoints`` when given): the state of every data model and of the target before the metanetwork.
    Usage: ``light_prune(experiment, model, recipe)``
    """
    meta = recipe.prune.meta
    prune_model(model, example_input(experiment), speedup=meta.light_speedup, protect=recipe.prune.protect,
                iterative_steps=recipe.prune.iterative_steps, round_to=recipe.prune.round_to,
                max_layer_ratio=recipe.prune.max_layer_ratio)
    finetune(experiment, model, meta.light_finetune.apply(recipe.train), checkpoints=checkpoints)
    return model


def example_input(experiment: Experiment) -> torch.Tensor | dict[str, torch.Tensor]:
    """One example for tracing: a zero image of the task's shape, or (text) seeded token ids of the recipe's length.

    Usage: ``example_input(experiment).shape``
    """
    if experiment.task.modality == "text":
        return example_inputs(experiment.model, 1, seq_len=experiment.recipe.data.max_length)
    return torch.zeros(1, *(experiment.task.image_shape or DEFAULT_IMAGE_SHAPE))


def build_collection(recipe: PruneRecipe, folder: Path, log: Callable[[str], None] = print) -> list[Path]:
    """Train ``prune.meta.data_models`` networks (seeds after the recipe's), lightly prune and finetune each,
    and save them under ``folder``; a data model saved by an earlier (interrupted) run is reused, and one
    interrupted while training resumes from its checkpoints in ``folder/../phases``.
    Usage: ``paths = build_collection(recipe, run / "collection")``
    """
    paths = []
    for index in range(recipe.prune.meta.data_models):
        path = folder / f"data-model-{index}"
        if not path.is_dir():
            seeded = recipe.model_copy(update={"train": recipe.train.model_copy(
                update={"seed": recipe.train.seed + 1 + index})})
            experiment = prepare_experiment(seeded)
            log(f"data model {index + 1}/{recipe.prune.meta.data_models}: training, pruning to "
                f"{recipe.prune.meta.light_speedup}x, finetuning")
            phases = folder.parent / PHASES_DIR / path.name
            checkpointed_fit(experiment, phases / "train")
            save_model(light_prune(experiment, experiment.model, seeded, checkpoints=phases / "light"), path)
            shutil.rmtree(phases, ignore_errors=True)  # the data model is saved whole
        paths.append(path)
    return paths


def given_collection(folder: str | os.PathLike, held_out: int) -> list[Path]:
    """The saved model folders inside ``folder`` (name order); UserError when fewer than ``held_out`` + 1.

    Usage: ``paths = given_collection("runs/prune-r56/collection", held_out=1)``
    """
    root = Path(folder)
    paths = sorted(path for path in root.iterdir() if (path / SPEC_FILE).is_file()) if root.is_dir() else []
    if len(paths) <= held_out:
        raise UserError(f"collection {root} holds {len(paths)} saved model folder(s); meta-training needs more than "
                        f"held_out = {held_out} (folders written by shrink's save_model, e.g. RUN/collection)")
    return paths


def meta_loaders(recipe: PruneRecipe, experiment: Experiment) -> tuple[DataLoader, DataLoader]:
    """Meta-training batches (the training split, augmented, minus a seeded ``val_fraction``) and the
    held-back part without augmentation, for epoch selection. Usage: ``train, val = meta_loaders(recipe, e)``
    """
    train_set = experiment.task.train
    kept, held = holdout_split(len(train_set), recipe.prune.meta.val_fraction, recipe.train.seed,
                               "meta-training's validation part")
    plain = load_task(recipe.model_copy(update={"data": recipe.data.model_copy(update={"augment": False})}))
    train = shuffled_loader(Subset(train_set, kept), recipe, experiment)
    val = DataLoader(Subset(plain.train, held), batch_size=recipe.train.batch_size, collate_fn=experiment.collate)
    return train, val


def shuffled_loader(dataset: Dataset, recipe: PruneRecipe, experiment: Experiment) -> DataLoader:
    """Batches of ``dataset`` shuffled by a generator seeded from the recipe: the same order on every run, and
    the generator is the loader's whole state (meta-training checkpoints it).
    Usage: ``recalibrate_batchnorm(model, shuffled_loader(experiment.task.train, recipe, experiment))``
    """
    return DataLoader(dataset, batch_size=recipe.train.batch_size, shuffle=True,
                      generator=torch.Generator().manual_seed(recipe.train.seed), collate_fn=experiment.collate)


class _Limited:
    """A re-iterable view of the first ``count`` batches of ``loader`` (all when ``count`` is None)."""

    def __init__(self, loader: Iterable[Batch], count: int | None) -> None:
        self.loader, self.count = loader, count

    def __iter__(self) -> Iterator[Batch]:
        return itertools.islice(self.loader, self.count)


def reference_ce_scale(train_examples: int, batches_per_step: int) -> float:
    """The CE weight that balances the regulariser as in the reference, whatever the batch size and count.

    The reference sums the batch-mean CE over the whole training set in batches of 500 (~100 on CIFAR),
    and ``reg = 10`` is tuned against that sum; with fewer or other batches the same ``reg`` would
    dominate and shrink the network to chance. This scale turns the mean CE of the batches a step sees
    into an estimate of that sum: ``train_examples / 500`` batch means.
    Usage: ``reference_ce_scale(45_000, 20) == 4.5``
    """
    return train_examples / (REFERENCE_META_BATCH * batches_per_step)


def train_metanet(recipe: PruneRecipe, experiment: Experiment, folder: Path,
                  log: Callable[[str], None] = print) -> MetaNetwork:
    """The ``prune metatrain`` stage: build (or reuse) the collection in ``folder / "collection"``, meta-train,
    keep the best held-out epoch and save it to ``folder / "metanet"``. Usage: ``train_metanet(recipe, e, run.path)``
    """
    meta = recipe.prune.meta
    example = example_input(experiment)
    paths = given_collection(meta.collection, meta.held_out) if meta.collection else \
        build_collection(recipe, folder / "collection", log)
    models = [DataModel.from_model(load_model(path), example, name=path.name) for path in paths]
    split = len(models) - meta.held_out
    layout = models[0].graph.layout
    metanet = MetaNetwork(layout.node_dim, layout.edge_dim, meta.hidden, meta.layers, meta.rho)
    train, val = meta_loaders(recipe, experiment)
    batches = min(meta.batches_per_step or len(train), len(train))
    # Held-out models are already lightly pruned: judge them at the rest of the way to the target.
    target = recipe.prune.target().get("speedup", DEFAULT_SPEEDUP)
    config = MetaTrainConfig(epochs=meta.epochs, lr=meta.lr, milestones=tuple(meta.milestones), reg=meta.reg,
                             alpha=meta.alpha, ce_scale=reference_ce_scale(len(train.dataset), batches),
                             select_speedup=max(MIN_SELECT_SPEEDUP, target / meta.light_speedup),
                             batch_stats=meta.batch_stats, max_layer_ratio=recipe.prune.max_layer_ratio,
                             base_widths=layer_widths(experiment.model),
                             progress=recipe.train.progress)
    meta_train(metanet, models[:split], models[split:], _Limited(train, meta.batches_per_step), val, config,
               save_dir=folder / "metanet", log=log, checkpoint_dir=folder / PHASES_DIR / "metatrain")
    return metanet
