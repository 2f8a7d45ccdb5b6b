"""Structured pruning on Torch-Pruning's dependency graph: global ranking in small iterative steps until a
MACs speed-up (or parameter ratio) target is reached, with protected layers (the classifier by default).

Each step removes a further ``1 / iterative_steps`` of all prunable channels, ranked globally by the named
criterion (``prune.importance.CRITERIA``); coupled layers (residual partners, BN, the next layer's inputs)
shrink together. Ratios are always measured against the model as it was before pruning, with
:func:`shrink.bench.count_macs` (the toolkit's one MAC count).

Usage::

    result = prune_model(model, torch.zeros(1, 3, 32, 32), criterion="group-l2", speedup=2.5)
    result.speedup, result.macs, result.params      # the model was pruned in place
"""
from __future__ import annotations

import contextlib
import dataclasses
import difflib
import hashlib
import io
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
import torch_pruning as tp
from torch import nn

from prune.importance import CRITERIA, Criterion
from prune.transformers import block_paths, is_transformer
from shrink.bench import count_macs, count_parameters, device_of, zero_image
from shrink.errors import UserError
from shrink.experiment import Experiment, fit
from shrink.recipe import TrainConfig
from shrink.runs import RunDir
from shrink.train import Batch, Step, TrainResult, forward_logits, supervised_loss

PRUNABLE = (nn.modules.conv._ConvNd, nn.Linear)
GradFn = Callable[[nn.Module], None]
StepHook = Callable[[nn.Module, dict], None]
LatencyProgress = Callable[[nn.Module, float], tuple[float, bool]]  # (model, MACs speed-up) -> (reached, measured)
WidthRounding = Callable[[nn.Module], object]
Inputs = torch.Tensor | Mapping[str, torch.Tensor]  # an image batch, or keyword inputs (token ids) of a HF model
# (model, example inputs, importance=, iterative_steps=, round_to=, ignored_layers=) -> a stepper with step()
# and current_step, as Torch-Pruning's pruners are; prune.transformers.TransformerPruner is the other one.
PrunerFactory = Callable[..., Any]


Widths = Mapping[str, tuple[int, int]]  # (output, input) channels by layer path: see layer_widths


def channels(module: nn.Module) -> tuple[int, int] | None:
    """(output, input) channels of a conv, linear or BatchNorm layer; None for any other module.

    Usage: ``channels(nn.Conv2d(3, 16, 3)) == (16, 3)``
    """
    if isinstance(module, nn.modules.conv._ConvNd):
        return module.out_channels, module.in_channels
    if isinstance(module, nn.Linear):
        return module.out_features, module.in_features
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return module.num_features, module.num_features
    return None


def layer_widths(model: nn.Module) -> dict[str, tuple[int, int]]:
    """:func:`channels` of every conv, linear and BatchNorm layer by path: the widths a ``max_layer_ratio`` cap
    is measured against. Usage: ``layer_widths(resnet20)["conv1"] == (16, 3)``
    """
    return {name: widths for name, module in model.named_modules() if (widths := channels(module)) is not None}


def global_pruner(model: nn.Module, example_input: Inputs, max_layer_ratio: float | None = None,
                  base_widths: Widths | None = None, **options: Any) -> tp.pruner.BasePruner:
    """Torch-Pruning's pruner ranking every channel group globally (the CNN path of :func:`prune_model`);
    ``max_layer_ratio`` is its ``max_pruning_ratio`` (None: no cap), measured against ``base_widths`` (the
    original model's :func:`layer_widths`) where given, else against the widths ``model`` has now.

    Usage: ``global_pruner(model, x, importance=imp, iterative_steps=200, round_to=None, ignored_layers=[])``
    """
    pruner = tp.pruner.BasePruner(model, example_input, global_pruning=True, pruning_ratio=1.0,
                                  max_pruning_ratio=1.0 if max_layer_ratio is None else max_layer_ratio, **options)
    # Torch-Pruning caps each layer against the widths it saw when built; a model pruned before (metanet's
    # light prune) would otherwise lose the ratio twice over
    for name, module in model.named_modules() if base_widths else ():
        if name in base_widths and module in pruner.layer_init_out_ch:
            pruner.layer_init_out_ch[module], pruner.layer_init_in_ch[module] = base_widths[name]
    return pruner


def on_device(inputs: Inputs, model: nn.Module) -> Inputs:
    """``inputs`` (a tensor or keyword tensors) moved to the model's device. Usage: ``on_device(batch, model)``."""
    device = device_of(model)
    if isinstance(inputs, torch.Tensor):
        return inputs.to(device)
    return {name: value.to(device) for name, value in inputs.items()}


def run_forward(model: nn.Module, inputs: Inputs) -> Any:
    """``model(inputs)`` for a tensor, ``model(**inputs)`` for keyword inputs, on the model's device.

    Usage: ``run_forward(bert, {"input_ids": ids})``
    """
    inputs = on_device(inputs, model)
    return model(inputs) if isinstance(inputs, torch.Tensor) else model(**inputs)


def torch_pruning_macs(model: nn.Module, example_input: Inputs) -> int:
    """MACs as Torch-Pruning counts them, the figure pruning papers quote: convs and linears as
    :func:`shrink.bench.count_macs` counts them, plus BatchNorm, ReLU and pooling (ResNet-56: 127.37M against
    125.75M). Usage: ``torch_pruning_macs(resnet56, torch.zeros(1, 3, 32, 32))``
    """
    was_training = model.training
    model.eval()  # the counter runs a forward: in train mode it would move the BN statistics
    try:
        # its batch counter prints a warning for keyword-only inputs (HF models); the count is per example anyway
        with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
            return int(tp.utils.count_ops_and_params(model, on_device(example_input, model))[0])
    finally:
        model.train(was_training)


@dataclass
class PruneResult:
    """Before/after figures of one pruning run; ``history`` has one entry per step."""

    criterion: str
    base_macs: int
    base_params: int
    macs: int
    params: int
    steps: int
    history: list[dict[str, float]] = field(default_factory=list)
    latency_speedup: float | None = None  # the last measured one, with a latency target

    @property
    def speedup(self) -> float:
        """Base MACs / pruned MACs."""
        return self.base_macs / self.macs

    @property
    def param_ratio(self) -> float:
        """Base parameters / pruned parameters."""
        return self.base_params / self.params

    def as_dict(self) -> dict[str, object]:
        """JSON-ready figures (for metrics.json). Usage: ``metrics["prune"] = result.as_dict()``."""
        return {**asdict(self), "speedup": self.speedup, "param_ratio": self.param_ratio}


def hooked_forward(model: nn.Module, example_input: Inputs,
                   hook: Callable[[str, nn.Module, tuple[torch.Tensor, ...]], None]) -> None:
    """One eval-mode forward pass that calls ``hook(path, layer, inputs)`` for every conv/linear layer it runs
    (eval: a forward in train mode would move the BN statistics; the mode is restored after).

    Usage: ``hooked_forward(model, x, lambda path, layer, inputs: print(path, inputs[0].shape))``
    """
    hooks = [module.register_forward_hook(lambda mod, inp, out, name=name: hook(name, mod, inp))
             for name, module in model.named_modules() if isinstance(module, PRUNABLE)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            run_forward(model, example_input)
    finally:
        model.train(was_training)
        for handle in hooks:
            handle.remove()


def output_layers(model: nn.Module, example_input: Inputs) -> list[str]:
    """Module paths of the conv/linear layers that run last in forward (the classifier), by forward hooks.

    Usage: ``output_layers(build_model("resnet20"), torch.zeros(1, 3, 32, 32)) == ["fc"]``
    """
    order: list[str] = []
    hooked_forward(model, example_input, lambda name, layer, inputs: order.append(name))
    return order[-1:]


def protected_modules(model: nn.Module, names: Sequence[str], example_input: Inputs) -> list[nn.Module]:
    """The classifier plus the named layers, as modules; UserError for a path that is not in the model.

    Usage: ``protected_modules(model, ["layer1.0.conv1"], torch.zeros(1, 3, 32, 32))``
    """
    known = dict(model.named_modules())
    modules = []
    for name in [*output_layers(model, example_input), *names]:
        if name not in known or not name:
            close = difflib.get_close_matches(name, list(known), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise UserError(f"cannot protect '{name}': no such layer in the model{hint} (pass module paths)")
        modules.append(known[name])
    return modules


def prune_model(
    model: nn.Module,
    example_input: Inputs | None = None,
    *,
    criterion: str = "group-l2",
    speedup: float | None = None,
    param_ratio: float | None = None,
    protect: Sequence[str] = (),
    iterative_steps: int = 200,
    round_to: int | None = None,
    max_layer_ratio: float | None = None,
    base_widths: Widths | None = None,
    grad_fn: GradFn | None = None,
    base: tuple[int, int] | None = None,
    on_step: StepHook | None = None,
    latency_speedup: float | None = None,
    latency_goal: LatencyProgress | None = None,
    widths: WidthRounding | None = None,
    pruner: PrunerFactory = global_pruner,
) -> PruneResult:
    """Prune ``model`` in place until base/pruned MACs >= ``speedup`` (or params >= ``param_ratio``).

    ``base``: (MACs, params) of the original model when ``model`` was already pruned earlier (targets are
    always relative to the original). ``round_to``: keep every pruned layer's width a multiple of it (CPU and GPU
    kernels work in blocks of 8 or 16 channels, so odd widths save MACs but little time; the target may then
    be overshot by up to one block). ``max_layer_ratio``: no layer loses more than this fraction of its channels
    (Torch-Pruning's ``max_pruning_ratio``; without it a global ranking may leave a layer 1 channel), of its width
    in ``base_widths`` (the original's :func:`layer_widths`, when ``model`` was pruned before) or of its width now.
    ``grad_fn(model)`` runs a backward pass on some training data; criteria that rank by gradients
    (``taylor``) call it, in eval mode, before each step. ``on_step(model,
    entry)`` sees each step's history entry and may add figures to it (e.g. accuracy). ``pruner`` builds the
    stepper (default: Torch-Pruning's global ranking of channel groups; ``TransformerPruner.factory()`` prunes
    heads and FFN neurons).
    ``latency_speedup``: a measured speed-up target instead; ``latency_goal(model, macs_speedup)`` says how far
    the loop got, as (speed-up, whether it was measured) (:class:`prune.latency.LatencyGoal`). ``widths(model)``
    rounds the reached widths in place at the end (:class:`prune.latency.FastWidths`).
    Usage: ``prune_model(model, x, criterion="taylor", speedup=2, grad_fn=lambda m: loss_on(m).backward())``
    """
    targets = {"--speedup (MACs ratio)": speedup, "--param-ratio": param_ratio, "--latency-speedup": latency_speedup}
    given = [value for value in targets.values() if value is not None]
    if len(given) != 1:
        raise UserError(f"give exactly one pruning target: {', '.join(targets)}")
    if latency_speedup is not None and latency_goal is None:
        raise UserError("a --latency-speedup target needs a latency measurement (prune.latency.LatencyGoal)")
    target = given[0]
    if target <= 1.0:
        raise UserError(f"a pruning target must be above 1.0 (base / pruned), got {target}")
    chosen: Criterion = CRITERIA.get(criterion)
    if chosen.needs_grad and grad_fn is None:
        raise UserError(f"criterion '{criterion}' ranks by gradients and needs training data to compute them")
    if example_input is None:
        example_input = zero_image(model)
    was_training = model.training
    model.eval()  # tracing runs forward passes: in train mode they would move the BN running statistics
    try:
        result = PruneResult(CRITERIA.canonical(criterion), *(base or (count_macs(model, example_input),
                                                                        count_parameters(model))), 0, 0, 0)
        progress = _progress(speedup, param_ratio, latency_goal)
        stepper = pruner(model, example_input, importance=chosen.make(), iterative_steps=iterative_steps,
                         round_to=round_to, ignored_layers=protected_modules(model, protect, example_input),
                         max_layer_ratio=max_layer_ratio, base_widths=base_widths)
        _prune_steps(model, example_input, chosen, result, progress, target, stepper, iterative_steps, grad_fn,
                     on_step)
        if widths is not None:
            widths(model)
            result.macs, result.params = count_macs(model, example_input), count_parameters(model)
        return result
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)


def _progress(speedup: float | None, param_ratio: float | None,
              latency_goal: LatencyProgress | None) -> Callable[[nn.Module, PruneResult], tuple[float, dict]]:
    """How far the pruned model is towards the target, and what of it the history records."""
    if latency_goal is not None:
        def latency(model: nn.Module, result: PruneResult) -> tuple[float, dict]:
            reached, measured = latency_goal(model, result.speedup)
            if measured:
                result.latency_speedup = reached
            return reached, {"latency_speedup": reached} if measured else {}
        return latency
    if speedup is not None:
        return lambda model, result: (result.speedup, {})
    return lambda model, result: (result.param_ratio, {})


def _prune_steps(model: nn.Module, example_input: Inputs, chosen: Criterion, result: PruneResult,
                 progress: Callable[[nn.Module, PruneResult], tuple[float, dict]], target: float, pruner: Any,
                 iterative_steps: int, grad_fn: GradFn | None, on_step: StepHook | None) -> None:
    result.macs, result.params = count_macs(model, example_input), count_parameters(model)
    reached, _ = progress(model, result)
    while reached < target:
        if pruner.current_step >= iterative_steps:
            raise UserError(f"pruning stopped at {reached:.3f}x after {iterative_steps} steps without reaching "
                            f"{target}x; lower the target or protect fewer layers")
        if chosen.needs_grad:
            model.zero_grad(set_to_none=True)
            grad_fn(model)
        pruner.step()
        result.macs, result.params = count_macs(model, example_input), count_parameters(model)
        result.steps = pruner.current_step
        reached, measured = progress(model, result)
        entry = {"step": result.steps, "macs": result.macs, "params": result.params, "speedup": result.speedup,
                 "param_ratio": result.param_ratio, **measured}
        if on_step is not None:
            on_step(model, entry)
        result.history.append(entry)


def kd_step(teacher: nn.Module, weight: float, temperature: float, hidden_weight: float = 0.0,
            hidden_paths: Sequence[tuple[str, str]] = ()) -> Step:
    """A finetuning step that mixes the labels' CE with KL to the unpruned ``teacher`` (distill's KD loss):
    ``(1 - weight) * CE + weight * T^2 KL``, plus ``hidden_weight`` times the mean of distill's hidden-state MSE
    over ``hidden_paths`` (student module path, teacher module path), read by forward hooks.
    Usage: ``Trainer(pruned, ..., step=kd_step(base, 0.5, 4.0))``
    """
    # the documented seam: pruning may finetune with distill's KD loss (and its hidden-state objective)
    from distill.features import FeatureTaps
    from distill.objectives import KDLoss, hidden_mse

    kd = KDLoss("kl", temperature)
    teacher.eval()
    pairs = list(hidden_paths) if hidden_weight > 0 else []
    teacher_taps = FeatureTaps(teacher, [path for _, path in pairs])
    student_taps: dict[int, FeatureTaps] = {}

    def step(model: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        if pairs and id(model) not in student_taps:
            student_taps[id(model)] = FeatureTaps(model, [path for path, _ in pairs])
        logits = forward_logits(model, batch)
        with torch.no_grad():
            target = forward_logits(teacher.to(logits.device), batch)
        hard, soft = supervised_loss(logits, batch["labels"]), kd(logits, target)
        losses = {"loss": (1 - weight) * hard + weight * soft, "ce": hard, "kd": soft}
        if pairs:
            mask = batch.get("attention_mask")
            taps = student_taps[id(model)]
            hidden = torch.stack([hidden_mse(taps[s], teacher_taps[t], mask) for s, t in pairs]).mean()
            losses.update(loss=losses["loss"] + hidden_weight * hidden, hidden_mse=hidden)
        return losses

    return step


# Checkpoints of the training phases in progress (base, data models, finetunes) inside a run, for --resume.
PHASES_DIR = "phases"


def finetune(experiment: Experiment, model: nn.Module, train: TrainConfig, teacher: nn.Module | None = None,
             kd_weight: float = 0.0, temperature: float = 4.0, hidden_weight: float = 0.0,
             teacher_blocks: Sequence[int] | None = None, checkpoints: Path | None = None) -> TrainResult:
    """Train ``model`` (in place) on the experiment's task with the core engine and ``train`` settings, with KD
    from ``teacher`` when ``kd_weight`` > 0 (and, for transformers, ``hidden_weight`` times the hidden-state MSE
    of each block against the teacher's same block, or against block ``teacher_blocks[i]`` for block ``i`` when
    whole blocks were removed); the last epoch is kept (the dev split only reports). With
    ``checkpoints``, the phase checkpoints there and resumes from there (see :func:`checkpointed_fit`).
    Usage: ``finetune(experiment, pruned, recipe.prune.finetune.apply(recipe.train), teacher=base, kd_weight=0.5)``
    """
    phase = dataclasses.replace(experiment, model=model, recipe=experiment.recipe.model_copy(update={"train": train}))
    step = None
    if teacher is not None and (kd_weight > 0 or hidden_weight > 0):
        paths = []
        if hidden_weight > 0 and is_transformer(model):
            teacher_paths = block_paths(teacher)
            chosen = teacher_paths if teacher_blocks is None else [teacher_paths[index] for index in teacher_blocks]
            paths = list(zip(block_paths(model), chosen, strict=True))
        step = kd_step(teacher, kd_weight, temperature, hidden_weight if paths else 0.0, paths)
    return checkpointed_fit(phase, checkpoints, step=step)


def checkpointed_fit(experiment: Experiment, folder: Path | None, step: Step | None = None) -> TrainResult:
    """``fit`` that checkpoints into ``folder/<shape key>`` and resumes from the checkpoint found there, so a
    training phase inside a longer command (prune's base training and finetunes) survives an interruption.
    The key, a hash of the model's tensor shapes, keeps a differently pruned model off a foreign checkpoint.
    Usage: ``checkpointed_fit(experiment, run / "phases" / "finetune")``
    """
    if folder is None:
        return fit(experiment, None, step=step)
    shapes = ",".join(f"{name}:{tuple(t.shape)}" for name, t in experiment.model.state_dict().items())
    phase = RunDir(folder / hashlib.sha256(shapes.encode()).hexdigest()[:12])
    return fit(experiment, phase, resume=phase.checkpoints.is_dir(), step=step)
