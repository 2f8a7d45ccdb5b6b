"""Measured speed instead of assumed speed: latency targets on ONNX Runtime and widths the runtime runs fast.

Fewer MACs buy less time than they promise on a CPU runtime: kernels work on blocks of channels, so a
layer 61 channels wide can cost what a 64-wide one does, or more. Two tools close the gap:

- :class:`LatencyGoal` lets the pruning loop stop on the *measured* ONNX Runtime speed-up of the pruned
  model over the base (``prune --latency-speedup 2 --latency-batch 64``). Measuring (export + timing) costs
  seconds, so it measures only when a prediction from the last measurement comes near the target, or when
  the MACs have fallen noticeably since; near the target it measures every step, so it stops within one
  step of the crossing.
- :class:`FastWidths` rounds every pruned group down to the fastest width within a small window, from a
  lookup table of single-layer latencies measured once per machine, runtime, thread count and batch size
  and cached on disk (``$SHRINK_CACHE``, else ``$XDG_CACHE_HOME/shrink``, else ``~/.cache/shrink``).

Usage::

    meter = MeasuredSpeedup(base, lambda b: example_inputs(base, b), batch=64)
    goal = LatencyGoal(meter, target=2.0)
    prune_model(model, x, latency_speedup=2.0, latency_goal=goal, widths=FastWidths(x, "group-l2", batch=64))
"""
from __future__ import annotations

import copy
import functools
import json
import math
import os
import re
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch_pruning as tp
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from prune.importance import CRITERIA
from prune.pruner import channels, hooked_forward, protected_modules
from shrink.bench import compare_latency, is_text_model
from shrink.export import export_onnx
from shrink.onnx_runtime import OnnxModel, ort_session
from shrink.provenance import cpu_model
from shrink.runs import atomic_write_json
from shrink.timing import time_interleaved

Inputs = dict[str, torch.Tensor]
# Speed-up of a model over the base, measured: model -> base latency / model latency.
SpeedupMeter = Callable[[nn.Module], float]


def cache_dir() -> Path:
    """Where shrink keeps per-machine measurements. Usage: ``cache_dir() / "latency"``."""
    if os.environ.get("SHRINK_CACHE"):
        return Path(os.environ["SHRINK_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "shrink"


# ------------------------------------------------------------------------------------ measured speed-up
def runnable(model: nn.Module, runtime: str, folder: Path, make_batch: Callable[[int], Inputs],
             threads: int | None = None) -> nn.Module:
    """``model`` as ``runtime`` runs it: itself for torch, else exported into ``folder`` (no parity check) and
    loaded in ONNX Runtime. Usage: ``runnable(pruned, "onnxruntime", tmp, make_batch)(**make_batch(64))``
    """
    if runtime == "torch":
        return model
    path = folder / "model.onnx"
    export_onnx(model, path, example_batch=make_batch(2), validate=False, fuse=is_text_model(model))
    return OnnxModel(path, threads or torch.get_num_threads())


class MeasuredSpeedup:
    """Speed-up of a model over ``base`` on ``runtime`` at one batch size, both timed in alternating rounds
    (a burst of load on a shared machine slows both alike); for ONNX Runtime each call exports the model.

    Usage: ``MeasuredSpeedup(base, lambda b: example_inputs(base, b), batch=64)(pruned)  # e.g. 1.93``
    """

    def __init__(self, base: nn.Module, make_batch: Callable[[int], Inputs], batch: int = 64,
                 runtime: str = "onnxruntime", min_time_s: float = 1.0) -> None:
        self.make_batch, self.batch, self.runtime, self.min_time_s = make_batch, batch, runtime, min_time_s
        self.folder = tempfile.TemporaryDirectory(prefix="shrink-latency-")
        self.base = runnable(base, runtime, Path(self.folder.name) / "base", make_batch)

    def __call__(self, model: nn.Module) -> float:
        candidate = runnable(model, self.runtime, Path(self.folder.name) / "candidate", self.make_batch)
        stats = compare_latency({"base": (self.base, self.make_batch), "candidate": (candidate, self.make_batch)},
                                (self.batch,), min_time_s=self.min_time_s)
        return stats["base"][str(self.batch)]["median_ms"] / stats["candidate"][str(self.batch)]["median_ms"]


class LatencyGoal:
    """The pruning loop's progress towards a measured speed-up ``target``: ``goal(model, macs_speedup)``
    returns the speed-up reached (from measurements, or predicted below the target) and whether it measured.

    The model is: latency speed-up = MACs speed-up ** k, k the median over the last three measurements (1
    before any). It measures when the prediction is within ``margin`` of the target's gain or the MACs
    speed-up grew by ``probe`` since the last measurement; when a measurement says the target is reached, the
    model is timed twice more and the median of the three decides, so one noisy timing on a shared machine
    neither ends the loop early nor, in the prediction, makes it run on. ``widths`` (e.g. :class:`FastWidths`)
    is applied to a copy before measuring, so what is measured is what the loop's caller will get after
    applying it too.
    Usage: ``LatencyGoal(MeasuredSpeedup(base, make_batch), 2.0)(model, 2.3)  # (1.71, True)``
    """

    def __init__(self, meter: SpeedupMeter, target: float, widths: Callable[[nn.Module], object] | None = None,
                 margin: float = 0.15, probe: float = 0.1) -> None:
        self.meter, self.target, self.widths = meter, target, widths
        self.margin, self.probe = margin, probe
        self.measured: list[tuple[float, float]] = []  # (MACs speed-up, measured speed-up)

    def predict(self, macs_speedup: float) -> float:
        """The latency speed-up expected at ``macs_speedup``: MACs speed-up ** k, k the median over the last
        three measurements."""
        exponents = [math.log(max(latency, 1e-6)) / math.log(macs) for macs, latency in self.measured[-3:]
                     if macs > 1.0]
        return macs_speedup ** statistics.median(exponents) if exponents else macs_speedup

    def __call__(self, model: nn.Module, macs_speedup: float) -> tuple[float, bool]:
        predicted = self.predict(macs_speedup)
        near = predicted >= 1 + (self.target - 1) * (1 - self.margin)
        last_macs = self.measured[-1][0] if self.measured else 1.0
        if not near and macs_speedup < last_macs * (1 + self.probe):
            return min(predicted, self.target * 0.999), False  # a prediction never ends the loop
        candidate = model
        if self.widths is not None:
            candidate = copy.deepcopy(model)
            self.widths(candidate)
        self.measured.append((macs_speedup, self.meter(candidate)))
        estimate = self.predict(macs_speedup)
        if estimate >= self.target:  # the loop would stop: two more timings of this model decide
            estimate = statistics.median([self.measured.pop()[1], self.meter(candidate), self.meter(candidate)])
            self.measured.append((macs_speedup, estimate))
        return estimate, True


# ------------------------------------------------------------------------------------ the lookup table
@dataclass(frozen=True)
class LayerShape:
    """A conv or linear layer's shape as it runs: what its latency depends on besides its two widths."""

    kind: str  # "conv" or "linear"
    kernel: tuple[int, ...] = ()
    stride: tuple[int, ...] = ()
    padding: tuple[int, ...] = ()
    groups: int = 1
    spatial: tuple[int, ...] = ()  # input H, W (convs) or the leading token dims (linears)

    def key(self, in_ch: int, out_ch: int) -> str:
        """The table key of this layer at widths (in_ch, out_ch), e.g. ``conv k3x3 s1x1 p1x1 g1 @32x32 16->13``."""
        kernel, stride, padding, spatial = ("x".join(map(str, dims)) for dims in
                                            (self.kernel, self.stride, self.padding, self.spatial))
        return f"{self.kind} k{kernel} s{stride} p{padding} g{self.groups} @{spatial} {in_ch}->{out_ch}"


def layer_shapes(model: nn.Module, example_input: torch.Tensor) -> dict[nn.Module, LayerShape]:
    """The :class:`LayerShape` of every 2-d conv and linear layer, from one forward pass (hooks).

    Usage: ``layer_shapes(resnet20, torch.zeros(1, 3, 32, 32))[resnet20.conv1].spatial == (32, 32)``
    """
    shapes: dict[nn.Module, LayerShape] = {}

    def record(name: str, module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        size = tuple(inputs[0].shape)
        if isinstance(module, nn.Conv2d) and isinstance(module.padding, tuple):
            shapes[module] = LayerShape("conv", tuple(module.kernel_size), tuple(module.stride),
                                        tuple(module.padding), module.groups, size[2:])
        elif isinstance(module, nn.Linear):
            shapes[module] = LayerShape("linear", spatial=size[1:-1])

    hooked_forward(model, example_input, record)
    return shapes


def layer_graph(shape: LayerShape, in_ch: int, out_ch: int, batch: int) -> tuple[onnx.ModelProto, np.ndarray]:
    """A one-layer ONNX graph (conv + ReLU, or linear) with random weights, and an input for it."""
    rng = np.random.default_rng(0)
    if shape.kind == "conv":
        weight = rng.standard_normal((out_ch, in_ch // shape.groups, *shape.kernel), dtype=np.float32)
        x = rng.standard_normal((batch, in_ch, *shape.spatial), dtype=np.float32)
        nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=list(shape.kernel),
                                  strides=list(shape.stride), pads=[*shape.padding, *shape.padding],
                                  group=shape.groups),
                 helper.make_node("Relu", ["c"], ["y"])]
    else:
        weight = rng.standard_normal((in_ch, out_ch), dtype=np.float32)
        x = rng.standard_normal((batch, *shape.spatial, in_ch), dtype=np.float32)
        nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["y"])]
    bias = rng.standard_normal(out_ch, dtype=np.float32)
    graph = helper.make_graph(
        nodes, "layer", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), x


class LatencyTable:
    """Single-layer ONNX Runtime latencies (ms) by :meth:`LayerShape.key`, measured on demand and kept in a
    JSON file per CPU, runtime version, thread count and batch size.

    Usage: ``LatencyTable(batch=64).ms([(shape, 61, 64)])``; ``table.save()`` keeps new measurements.
    """

    def __init__(self, batch: int = 64, threads: int | None = None, path: Path | None = None,
                 min_time_s: float = 0.1) -> None:
        self.batch, self.threads = batch, threads or torch.get_num_threads()
        self.min_time_s = min_time_s
        machine = re.sub(r"[^A-Za-z0-9]+", "-", cpu_model()).strip("-")
        name = f"{machine}-ort{ort.__version__}-t{self.threads}-b{batch}.json"
        self.path = path or cache_dir() / "latency" / name
        self.entries: dict[str, float] = {}
        try:  # a table from an older or interrupted version is remeasured, never trusted half-read
            self.entries = {key: float(value) for key, value in json.loads(self.path.read_text()).items()}
        except (OSError, ValueError, TypeError, AttributeError):
            self.entries = {}
        self.new = 0

    def ms(self, layers: Sequence[tuple[LayerShape, int, int]]) -> list[float]:
        """The latency of each (shape, in_ch, out_ch); those the table lacks are measured now, together in
        alternating rounds, so that load on the machine hits the widths being compared alike."""
        missing = {shape.key(i, o): (shape, i, o) for shape, i, o in layers if shape.key(i, o) not in self.entries}
        if missing:
            calls = {}
            with tempfile.TemporaryDirectory(prefix="shrink-layer-") as folder:
                for index, (key, (shape, in_ch, out_ch)) in enumerate(missing.items()):
                    graph, x = layer_graph(shape, in_ch, out_ch, self.batch)
                    path = Path(folder) / f"{index}.onnx"
                    onnx.save(graph, str(path))
                    calls[key] = functools.partial(ort_session(path, self.threads).run, None, {"x": x})
            stats = time_interleaved(calls, threads=self.threads, min_time_s=self.min_time_s, rounds=3)
            self.entries.update({key: figures["median_ms"] for key, figures in stats.items()})
            self.new += len(missing)
        return [self.entries[shape.key(i, o)] for shape, i, o in layers]

    def save(self) -> None:
        """Write the table if anything new was measured (atomically: concurrent runs never see half a file)."""
        if self.new:
            atomic_write_json(self.path, dict(sorted(self.entries.items())))
            self.new = 0


# -------------------------------------------------------------------------------------- fast widths
class FastWidths:
    """Rounds each prunable group of a (pruned) network down to the width the runtime runs most efficiently:
    of the widths in ``[w - window + 1, w]`` (the window at most w / 4 wide), the one with the least summed
    layer latency per kept channel (every conv/linear the group touches, from the :class:`LatencyTable`), see
    :meth:`choose`. The channels removed are the least important by ``criterion``. Call it on a model to
    prune it in place; returns {root layer: (old, new)}.

    Usage: ``FastWidths(torch.zeros(1, 3, 32, 32), "group-l2", batch=64)(pruned)``
    """

    def __init__(self, example_input: torch.Tensor, criterion: str = "group-l2", *, batch: int = 64,
                 protect: Sequence[str] = (), window: int = 8, tolerance: float = 0.03,
                 table: LatencyTable | None = None, grad_fn: Callable[[nn.Module], None] | None = None) -> None:
        self.example_input, self.criterion = example_input, CRITERIA.get(criterion)
        self.protect, self.window, self.tolerance = list(protect), window, tolerance
        self.table = table or LatencyTable(batch)
        self.grad_fn = grad_fn

    def group_ms(self, members: Sequence[tuple[nn.Module, bool]], shapes: dict[nn.Module, LayerShape],
                 widths: Sequence[int]) -> list[float]:
        """Summed latency of the group's layers with the pruned dimension (out: True) at each of ``widths``."""
        layers = []
        for width in widths:
            for module, is_out in members:
                if module in shapes:
                    out_ch, in_ch = channels(module)
                    depthwise = shapes[module].groups > 1  # in and out shrink together
                    layers.append((shapes[module], width if depthwise or not is_out else in_ch,
                                   width if depthwise or is_out else out_ch))
        times = self.table.ms(layers)
        per_width = len(times) // len(widths)
        return [sum(times[index * per_width:(index + 1) * per_width]) for index in range(len(widths))]

    def choose(self, members: Sequence[tuple[nn.Module, bool]], shapes: dict[nn.Module, LayerShape],
               width: int) -> int:
        """The width this group is rounded to: the widest whose time per kept channel is within ``tolerance`` of
        the window's best, and better than ``width``'s by more than that (time falling only in proportion to
        the channels removed is no reason to remove them). At most a quarter of the channels go."""
        candidates = list(range(width, width - max(1, min(self.window, width // 4)), -1))  # widest first
        per_channel = [cost / c for c, cost in zip(candidates, self.group_ms(members, shapes, candidates))]
        best = min(per_channel)
        return next(c for c, cost in zip(candidates, per_channel) if cost <= best * (1 + self.tolerance))

    def __call__(self, model: nn.Module) -> dict[str, tuple[int, int]]:
        was_training = model.training
        model.eval()
        try:
            return self._round(model, protected_modules(model, self.protect, self.example_input))
        finally:
            model.zero_grad(set_to_none=True)
            model.train(was_training)
            self.table.save()

    def _round(self, model: nn.Module, ignored: list[nn.Module]) -> dict[str, tuple[int, int]]:
        shapes = layer_shapes(model, self.example_input)
        names = {module: name for name, module in model.named_modules()}
        graph = tp.DependencyGraph().build_dependency(model, example_inputs=self.example_input)
        plans = []
        for group in graph.get_all_groups(ignored_layers=ignored, root_module_types=(nn.Conv2d, nn.Linear)):
            root = group[0].dep.target.module
            members = [(dep.target.module, graph.is_out_channel_pruning_fn(dep.handler)) for dep, _ in group
                       if isinstance(dep.target.module, (nn.Conv2d, nn.Linear))]
            width = channels(root)[0]
            chosen = self.choose(members, shapes, width)
            if chosen < width:
                plans.append((root, group[0].dep.handler, width, chosen))
        importance = self.criterion.make()
        if self.criterion.needs_grad and plans:
            self.grad_fn(model)
        changed = {}
        for root, handler, width, chosen in plans:
            scores = importance(graph.get_pruning_group(root, handler, list(range(width))))
            weakest = torch.argsort(scores)[: width - chosen].tolist()
            group = graph.get_pruning_group(root, handler, weakest)
            if graph.check_pruning_group(group):
                group.prune()
                changed[names[root]] = (width, chosen)
        return changed


__all__ = ["FastWidths", "LatencyGoal", "LatencyTable", "LayerShape", "MeasuredSpeedup", "cache_dir", "layer_shapes",
           "runnable"]
