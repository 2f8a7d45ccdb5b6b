"""Meta-distillation: second-order MAML of the student towards the aggregated experts (spec §2 step 4).

One task is one source domain: S support and Q query examples of it (disjoint). The in-domain expert is
masked out of the teacher's tokens, the student's features take one SGD step (rate alpha) on the MSE to
the fused feature, and the adapted student's cross-entropy on the query set is the meta-loss::

    t      = A.get_feat(mask(tokens(xs)))                  # graph to phi kept
    theta' = theta_e - alpha * grad(mse(F(xs; theta_e), t), theta_e, create_graph=True)
    L_out  = CE(C(F(xq; theta')), yq)                      # backward: student (beta) and aggregator (tau)

The aggregator enters only the inner loss, so its gradient is purely second-order: first-order MAML
gives it exactly zero, and ``first_order`` is refused unless the aggregator is frozen. Every network
stays in eval mode (BatchNorm keeps its statistics, dropout is off). Under several processes each
takes its own task(s) and the meta-gradients are averaged by an all-reduce before the optimizer steps,
so ``torchrun`` / ``accelerate launch`` scale the meta-batch.

Usage::

    result = meta_train(student, teacher, split.train, split.train_domains, collate, section.meta,
                        select=lambda: evaluate_domains(student, val_domains, collate)["mean"])
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from distill.moe.adapt import MetaStudent, unlabeled
from distill.moe.config import MetaSection
from distill.teachers.meta_dmoe import MetaDMoETeacher
from shrink.data.domains import DomainBatchSampler, DomainTask
from shrink.errors import UserError
from shrink.progress import bars_on, lines_on
from shrink.train import Batch, process_state, supervised_loss


@dataclass
class Episode:
    """One task's tensors: the support batch (labels removed), the query batch, the expert to mask."""

    domain: str
    support: Batch
    query: Batch
    exclude: int | None


def make_episode(dataset: Dataset, task: DomainTask, collate: Any, teacher: MetaDMoETeacher) -> Episode:
    """Collate the task's examples; the support set loses its labels. Usage: ``make_episode(data, task, c, t)``."""
    support = unlabeled(collate([dataset[i] for i in task.support]))
    query = collate([dataset[i] for i in task.query])
    return Episode(task.domain, support, query, teacher.expert_of(task.domain))


def check_first_order(first_order: bool, freeze_aggregator: bool) -> None:
    """Refuse first-order MAML with a trainable aggregator: its gradient would be exactly zero."""
    if first_order and not freeze_aggregator:
        raise UserError("first-order meta-training gives the aggregator exactly zero gradient (it enters only the "
                        "inner loss); use second order (the default) or freeze the aggregator (freeze_aggregator)")


def meta_loss(student: MetaStudent, teacher: MetaDMoETeacher, episode: Episode, alpha: float,
              first_order: bool = False) -> torch.Tensor:
    """L_out of one task, with the graph back to theta_e, theta_c and (second order) phi.

    Usage: ``meta_loss(student, teacher, episode, alpha=0.01).backward()``
    """
    # The math attention kernel: the fused CPU/GPU kernels of transformers' attention have no double backward.
    with sdpa_kernel(SDPBackend.MATH):
        target = teacher.target(episode.support, episode.exclude)
        params = student.feature_params()
        inner = F.mse_loss(student.features(episode.support, params), target)  # mean over S*D (spec Q2)
        grads = torch.autograd.grad(inner, list(params.values()), create_graph=not first_order)
        adapted = {name: param - alpha * grad for (name, param), grad in zip(params.items(), grads)}
        return supervised_loss(student.logits(episode.query, adapted), episode.query["labels"])


def meta_parameters(student: MetaStudent, teacher: MetaDMoETeacher, freeze_aggregator: bool) -> list[nn.Parameter]:
    """What meta-training updates: the student's parameters and, unless frozen, the aggregator's (phi)."""
    own = [param for param in student.parameters() if param.requires_grad]
    return own + ([] if freeze_aggregator else teacher.trainable())


def meta_gradients(student: MetaStudent, teacher: MetaDMoETeacher, episodes: Sequence[Episode], alpha: float,
                   params: Sequence[nn.Parameter], first_order: bool = False) -> float:
    """Set ``.grad`` of ``params`` to the meta-gradient of this process's ``episodes`` (their mean), averaged
    over processes by an all-reduce; returns the mean meta-loss over every task.

    Usage: ``loss = meta_gradients(student, teacher, [episode], 0.01, meta_parameters(student, teacher, False))``
    """
    for param in params:
        param.grad = None
    total = torch.zeros((), dtype=torch.float64)
    for episode in episodes:
        loss = meta_loss(student, teacher, episode, alpha, first_order) / len(episodes)
        loss.backward()
        total += loss.detach().double()
    return all_reduce_mean(params, total)


def all_reduce_mean(params: Sequence[nn.Parameter], loss: torch.Tensor) -> float:
    """Average the gradients (a missing one counts as zero) and ``loss`` over the processes, if several."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return float(loss)
    world = dist.get_world_size()
    for param in params:
        if param.grad is None:
            param.grad = torch.zeros_like(param)
        dist.all_reduce(param.grad)
        param.grad /= world
    dist.all_reduce(loss)
    return float(loss) / world


@dataclass
class MetaResult:
    """What :func:`meta_train` returns: the step chosen, its selection score, history and wall time."""

    best_step: int | None
    best_score: float | None
    steps: int
    seconds: float
    history: list[dict[str, float | None]] = field(default_factory=list)


def meta_train(student: MetaStudent, teacher: MetaDMoETeacher, data: Dataset, domains: Sequence[str], collate: Any,
               section: MetaSection, select: Callable[[], float] | None = None, progress: bool = True,
               verbosity: str = "normal", name: str = "meta") -> MetaResult:
    """Meta-train ``student`` (and the aggregator) on single-domain tasks of ``data`` (``domains[i]`` is the
    domain of ``data[i]``); every ``section.eval_every`` steps ``select()`` scores the pair (TTA on held-out
    source data), first before any step, and the best is kept (step 0: the ERM start). Usage: see the module
    docstring.
    """
    check_first_order(section.first_order, section.freeze_aggregator)
    state = process_state()
    rank = state.process_index
    per_process, meta_batch = section.tasks_per_process, section.tasks_per_process * state.num_processes
    sampler = DomainBatchSampler(domains, section.support, section.query, section.steps * meta_batch, section.seed)
    student.eval()
    teacher.eval()
    own = [param for param in student.parameters() if param.requires_grad]
    optimizers = [torch.optim.Adam(own, lr=section.beta)]
    if not section.freeze_aggregator:
        optimizers.append(torch.optim.Adam(teacher.trainable(), lr=section.tau))
    schedules = [torch.optim.lr_scheduler.ExponentialLR(opt, gamma=section.lr_decay) for opt in optimizers]
    params = meta_parameters(student, teacher, section.freeze_aggregator)
    epoch_steps = max(1, len(domains) // (section.support + section.query) // meta_batch)
    best: tuple[float, int, dict, dict] | None = None
    result = MetaResult(None, None, section.steps, 0.0)
    bar = tqdm(total=section.steps, desc=name, unit="step",
               disable=not (bars_on(progress, verbosity) and state.is_local_main_process))
    start, running = time.perf_counter(), None

    def consider(step: int) -> None:
        nonlocal best
        score = select()  # type: ignore[misc]
        result.history.append({"step": step, "meta_loss": running, "selection_score": score})
        if lines_on(progress, verbosity) and state.is_local_main_process:
            shown = "-" if running is None else f"{running:.4g}"
            print(f"{name} step {step}/{section.steps}: meta_loss {shown}, source TTA accuracy {score:.4g}", flush=True)
        if best is None or score > best[0]:
            best = (score, step, copy.deepcopy(student.state_dict()),
                    copy.deepcopy({"aggregator": teacher.aggregator.state_dict(),
                                   "projections": teacher.pool.projections.state_dict()}))

    if select is not None and section.eval_every:
        consider(0)  # the start (ERM + one step) is a candidate, and its score shows what meta-training adds
    for step in range(section.steps):
        episodes = [make_episode(data, sampler.task(step * meta_batch + rank * per_process + slot), collate, teacher)
                    for slot in range(per_process)]
        loss = meta_gradients(student, teacher, episodes, section.alpha, params, section.first_order)
        for optimizer in optimizers:
            optimizer.step()
        if (step + 1) % epoch_steps == 0:
            for schedule in schedules:
                schedule.step()
        running = loss if running is None else 0.95 * running + 0.05 * loss
        bar.update(1)
        bar.set_postfix(meta_loss=f"{running:.4f}")
        if select is not None and section.eval_every and ((step + 1) % section.eval_every == 0
                                                          or step + 1 == section.steps):
            consider(step + 1)
    bar.close()
    if best is not None:
        result.best_score, result.best_step = best[0], best[1]
        student.load_state_dict(best[2])
        teacher.aggregator.load_state_dict(best[3]["aggregator"])
        teacher.pool.projections.load_state_dict(best[3]["projections"])
    result.seconds = time.perf_counter() - start
    student.meta_trained = True
    return result


__all__ = ["Episode", "MetaResult", "all_reduce_mean", "check_first_order", "make_episode", "meta_gradients",
           "meta_loss", "meta_parameters", "meta_train"]
