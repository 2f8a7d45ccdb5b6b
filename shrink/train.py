"""The training engine on Accelerate, shared by ``shrink train``, distillation, pruning-finetune and incubation.

The loop takes a pluggable *step*: a function ``step(model, batch) -> loss`` (or a dict with a ``"loss"``
entry and other named terms to log). When the step is itself an ``nn.Module`` (a distillation objective
with projection heads or an MI critic), its parameters are trained and checkpointed with the model.

Determinism and resume: the data order of epoch ``e`` is a permutation seeded by ``(seed, e)`` and every
example's augmentation draws from its own generator seeded by ``(seed, e, index)``, so neither depends on
how far the process got, on prefetching or on workers. Checkpoints are Accelerate states (model,
optimizer, scheduler, RNG) plus a small JSON of the loop's position, written under a temporary name and
renamed into place; ``resume=True`` continues from the newest one, skipping the batches already seen,
and reaches the same final metrics as an uninterrupted run.

Usage::

    trainer = Trainer(model, task.train, task.dev, collate=collate, metrics=task.metrics,
                      config=TrainConfig(epochs=3, lr=1e-3), run=RunDir.create("runs/x"))
    result = trainer.fit()
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import set_seed
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm.auto import tqdm

from shrink.checkpoints import latest_checkpoint, write_manifest
from shrink.errors import UserError
from shrink.optim import make_optimizer, make_scheduler
from shrink.progress import bars_on, lines_on
from shrink.recipe import TrainConfig
from shrink.runs import RunDir, atomic_write_json
from shrink.tracking import LOGS_FOLDER, check_trackers, hyperparameters

Batch = Mapping[str, torch.Tensor]
StepOutput = torch.Tensor | Mapping[str, torch.Tensor]
Step = Callable[[nn.Module, Batch], StepOutput]
Predict = Callable[[nn.Module, Batch], torch.Tensor]
SaveModel = Callable[[nn.Module, Path], None]
EpochListener = Callable[[dict[str, float]], None]
_EPOCH_LISTENERS: list[EpochListener] = []


@contextlib.contextmanager
def epoch_listener(listener: EpochListener) -> Iterator[None]:
    """Call ``listener(entry)`` with each epoch's history entry (epoch, train loss, dev metrics; ``last`` True
    after the final epoch) of every Trainer in this process while the block runs; an exception it raises stops
    training (a search's pruner).

    Usage: ``with epoch_listener(lambda entry: print(entry["accuracy"])): trainer.fit()``
    """
    _EPOCH_LISTENERS.append(listener)
    try:
        yield
    finally:
        _EPOCH_LISTENERS.remove(listener)


PROGRESS_FILE = "progress.json"
# Large primes spread (seed, epoch, index) over the 63-bit seed space without collisions in practice.
_EPOCH_MIX, _INDEX_MIX = 1_000_003, 7_919


def logits_of(output: Any) -> torch.Tensor:
    """The logits of a model output (Hugging Face outputs carry ``.logits``). Usage: ``logits_of(model(**x))``."""
    return output.logits if hasattr(output, "logits") else output


def forward_logits(model: nn.Module, batch: Batch) -> torch.Tensor:
    """Run ``model`` on a batch and return its logits, for image CNNs and Hugging Face models alike.

    Usage: ``logits = forward_logits(model, batch)``
    """
    if "pixel_values" in batch and not hasattr(model, "config"):
        out = model(batch["pixel_values"])
    else:
        out = model(**{k: v for k, v in batch.items() if k != "labels"})
    return logits_of(out)


def supervised_loss(logits: torch.Tensor, labels: torch.Tensor, is_regression: bool = False) -> torch.Tensor:
    """Cross-entropy for classification, MSE for regression (one output). Usage: ``supervised_loss(z, y)``."""
    if is_regression:
        return nn.functional.mse_loss(logits.view(-1).float(), labels.view(-1).float())
    return nn.functional.cross_entropy(logits.float(), labels)


def supervised_step(is_regression: bool = False) -> Step:
    """The plain fine-tuning step: hard-label loss on the model's logits. Usage: ``Trainer(..., step=supervised_step())``."""

    def step(model: nn.Module, batch: Batch) -> torch.Tensor:
        return supervised_loss(forward_logits(model, batch), batch["labels"], is_regression)

    return step


class EpochSampler(Sampler):
    """Yields ``(epoch, index)`` pairs in a permutation seeded by ``(seed, epoch)``; set ``.epoch`` first.

    With ``lengths`` (one per example) and ``batch_size``, the permutation is grouped by length as Hugging Face's
    ``group_by_length`` does: cut into megabatches of ``MEGABATCH`` batches, each sorted by length and cut into
    batches, whose order inside the megabatch is then shuffled (a partial last batch stays last, so the loader's
    batches stay aligned). Batches then hold similar lengths and pad little; the order is still a function of
    ``(seed, epoch)`` alone, so resuming mid-epoch works as before.
    Usage: ``EpochSampler(len(train), 42, lengths=text_lengths(train), batch_size=32)``
    """

    MEGABATCH = 50

    def __init__(self, size: int, seed: int, shuffle: bool = True, lengths: Sequence[int] | None = None,
                 batch_size: int = 1) -> None:
        self.size, self.seed, self.shuffle, self.epoch = size, seed, shuffle, 0
        self.lengths, self.batch_size = lengths, batch_size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed * _EPOCH_MIX + self.epoch)
            order = torch.randperm(self.size, generator=gen).tolist()
            if self.lengths is not None:
                order = self._grouped(order, gen)
        else:
            order = range(self.size)
        return ((self.epoch, i) for i in order)

    def _grouped(self, order: list[int], gen: torch.Generator) -> list[int]:
        size, lengths = self.batch_size, self.lengths
        grouped: list[int] = []
        for start in range(0, len(order), size * self.MEGABATCH):
            chunk = sorted(order[start:start + size * self.MEGABATCH], key=lambda i: lengths[i], reverse=True)
            batches = [chunk[i:i + size] for i in range(0, len(chunk), size)]
            full = len(batches) - (len(batches[-1]) < size)
            for position in [*torch.randperm(full, generator=gen).tolist(), *range(full, len(batches))]:
                grouped.extend(batches[position])
        return grouped

    def __len__(self) -> int:
        return self.size


def text_lengths(dataset: Dataset) -> list[int]:
    """Characters per example (``text`` plus ``text_pair``): a free stand-in for token counts when batches are
    grouped by length (tokenising everything first would cost a pass over the data). UserError for non-text data.
    Usage: ``text_lengths(task.train)[:3]  # [54, 12, 87]``
    """
    lengths = []
    for index in range(len(dataset)):  # type: ignore[arg-type]
        example = dataset[index]
        if not isinstance(example, Mapping) or not isinstance(example.get("text"), str):
            raise UserError("train.group_by_length (--group-by-length) groups text examples by length; this "
                            "training set is not text: leave it off")
        lengths.append(len(example["text"]) + len(example.get("text_pair") or ""))
    return lengths


class SeededExamples(Dataset):
    """Wraps a dataset so each ``(epoch, index)`` item draws its augmentation from its own seeded RNG; a dataset
    with ``example_at(epoch, index)`` is asked through it.

    The global RNG is forked and restored around the item, so loading data never disturbs the RNG that
    dropout uses: that keeps resumed runs identical to uninterrupted ones.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed = dataset, seed

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        saved = torch.get_rng_state()
        # the generator's own seeding: torch.manual_seed also records a stack trace, ~2 ms per call
        torch.default_generator.manual_seed((self.seed * _EPOCH_MIX + epoch) * _INDEX_MIX + index)
        # a dataset whose examples change with the epoch (augmented copies remade every K epochs) says so
        example_at = getattr(self.dataset, "example_at", None)
        try:
            return example_at(epoch, index) if example_at is not None else self.dataset[index]
        finally:
            torch.set_rng_state(saved)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]


@dataclass
class TrainResult:
    """What ``Trainer.fit`` returns: best and final dev metrics, per-epoch history and throughput."""

    best: dict[str, float]
    best_epoch: int
    final: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    steps: int = 0
    train_samples_per_s: float = 0.0
    train_seconds: float = 0.0


@dataclass
class _Progress:
    """The loop's position, saved beside each Accelerate state."""

    step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0
    epoch_loss_sum: float = 0.0
    best_score: float | None = None
    best_epoch: int = -1
    best: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    train_seconds: float = 0.0
    samples_seen: int = 0


class Trainer:
    """Train ``model`` with a pluggable step; evaluate each epoch; keep the best; checkpoint and resume.

    Usage: ``Trainer(model, train_set, dev_set, collate=c, metrics=("accuracy",), config=cfg).fit()``
    """

    def __init__(
        self,
        model: nn.Module,
        train_set: Dataset,
        dev_set: Dataset | None,
        *,
        collate: Callable[[list], dict[str, torch.Tensor]],
        metrics: Sequence[str] = ("accuracy",),
        config: TrainConfig | None = None,
        step: Step | None = None,
        predict: Predict = forward_logits,
        is_regression: bool = False,
        run: RunDir | None = None,
        resume: bool = False,
        save_model: SaveModel | None = None,
        lr_default: float = 1e-3,
    ) -> None:
        self.config = config or TrainConfig()
        self.metric_names = tuple(metrics)
        self.run = run
        self.resume = resume
        self.predict = predict
        self.save_model = save_model
        self.step_fn = step or supervised_step(is_regression)
        check_mixed_precision(self.config)
        # trackers write beside the run; a phase without a run directory (a throwaway model) is not tracked
        self.tracked = bool(self.config.report_to) and run is not None
        if self.tracked:
            check_trackers(self.config.report_to)
        self.accelerator = make_accelerator(self.config, run.path / LOGS_FOLDER if self.tracked else None)
        self.sampler = EpochSampler(len(train_set), self.config.seed,  # type: ignore[arg-type]
                                    lengths=text_lengths(train_set) if self.config.group_by_length else None,
                                    batch_size=self.config.batch_size)
        train_loader = DataLoader(
            SeededExamples(train_set, self.config.seed), batch_size=self.config.batch_size,
            sampler=self.sampler, collate_fn=collate, num_workers=self.config.num_workers,
            generator=torch.Generator().manual_seed(self.config.seed),  # keeps the global RNG for dropout only
        )
        eval_loader = None
        if dev_set is not None:
            eval_loader = DataLoader(dev_set, batch_size=self.config.eval_batch_size or 2 * self.config.batch_size,
                                     shuffle=False, collate_fn=collate, num_workers=self.config.num_workers)
        trainable = [model] + ([self.step_fn] if isinstance(self.step_fn, nn.Module) else [])
        optimizer = make_optimizer(self.config, trainable, lr=self.config.lr or lr_default)
        prepared = self.accelerator.prepare(*trainable, optimizer, train_loader)
        self.model = prepared[0]
        if isinstance(self.step_fn, nn.Module):
            self.step_fn = prepared[1]
        self.optimizer, self.train_loader = prepared[-2], prepared[-1]
        self.eval_loader = self.accelerator.prepare(eval_loader) if eval_loader is not None else None
        self.steps_per_epoch = math.ceil(len(self.train_loader) / self.config.grad_accum)
        self.total_steps = self.config.max_steps or math.ceil(self.config.epochs * self.steps_per_epoch)
        scheduler = make_scheduler(self.config, optimizer, self.total_steps, self.steps_per_epoch,
                                   self.accelerator.num_processes)
        self.scheduler = self.accelerator.prepare(scheduler)
        self.progress = _Progress()
        self.name = run.path.name if run is not None else "train"  # names the bar and lines of each phase

    # ----------------------------------------------------------------------------------- loop
    def fit(self) -> TrainResult:
        """Run (or resume) training to ``total_steps``; returns the best and final dev metrics."""
        set_seed(self.config.seed)  # dropout draws depend on the seed alone, not on what ran before fit
        if self.resume:
            self._load_latest_checkpoint()
        if self.tracked:
            self.accelerator.init_trackers(self.name, config=hyperparameters(self.config))
        prog = self.progress
        bar = tqdm(total=self.total_steps, initial=prog.step, desc=self.name, unit="step",
                   disable=not (bars_on(self.config.progress, self.config.verbosity)
                                and self.accelerator.is_local_main_process))
        running_loss, window_start, window_samples = None, time.perf_counter(), 0
        while prog.step < self.total_steps:
            self._train_mode()
            self.sampler.epoch = prog.epoch
            loader = self.train_loader
            if prog.batches_in_epoch:
                loader = self.accelerator.skip_first_batches(loader, prog.batches_in_epoch)
            epoch_start = time.perf_counter()
            for batch in loader:
                with self.accelerator.accumulate(self.model):
                    loss, terms = self._forward(batch)
                    self.accelerator.backward(loss)
                    if self.accelerator.sync_gradients and self.config.max_grad_norm:
                        self.accelerator.clip_grad_norm_(self._parameters(), self.config.max_grad_norm)
                    self.optimizer.step()
                    self.scheduler.step()
                    self.optimizer.zero_grad(set_to_none=True)
                prog.batches_in_epoch += 1
                batch_size = len(batch["labels"]) * self.accelerator.num_processes
                prog.samples_seen += batch_size
                window_samples += batch_size
                value = terms["loss"]
                prog.epoch_loss_sum += value
                running_loss = value if running_loss is None else 0.9 * running_loss + 0.1 * value
                if not self.accelerator.sync_gradients:
                    continue
                prog.step += 1
                bar.update(1)
                if prog.step % 10 == 0 or prog.step == self.total_steps:
                    now = time.perf_counter()
                    lr, speed = self.scheduler.get_last_lr()[0], window_samples / max(now - window_start, 1e-9)
                    bar.set_postfix(loss=f"{running_loss:.4f}", lr=f"{lr:.2e}", samples_s=f"{speed:.0f}")
                    self._log({"train/loss": running_loss, "train/lr": lr, "train/samples_per_s": speed})
                    window_start, window_samples = now, 0
                if self.config.checkpoint_every and prog.step % self.config.checkpoint_every == 0:
                    prog.train_seconds += time.perf_counter() - epoch_start
                    epoch_start = time.perf_counter()
                    self._checkpoint()
                if prog.step >= self.total_steps:
                    break
            prog.train_seconds += time.perf_counter() - epoch_start
            self._end_epoch(self._epoch_train_loss())
        bar.close()
        if self.tracked:
            self.accelerator.end_training()
        return self._result()

    def _train_mode(self) -> None:
        # Models arrive in whatever mode their loader left (from_pretrained and pruning hand over eval mode,
        # evaluation switches to it): dropout and BatchNorm statistics must train every epoch.
        self.model.train()
        if isinstance(self.step_fn, nn.Module):
            self.step_fn.train()

    def _forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        out = self.step_fn(self.model, batch)
        terms = dict(out) if isinstance(out, Mapping) else {"loss": out}
        if "loss" not in terms:
            raise ValueError("a training step must return a tensor or a mapping with a 'loss' entry")
        return terms["loss"], {k: float(v.detach()) for k, v in terms.items()}

    def _parameters(self) -> Iterator[nn.Parameter]:
        for group in self.optimizer.param_groups:
            yield from group["params"]

    def _epoch_train_loss(self) -> float:
        """Mean training loss of the epoch over every process's batches."""
        totals = torch.tensor([self.progress.epoch_loss_sum, float(self.progress.batches_in_epoch)],
                              device=self.accelerator.device, dtype=torch.float64)
        loss_sum, batches = self.accelerator.reduce(totals, reduction="sum").tolist()
        return loss_sum / max(batches, 1.0)

    def _end_epoch(self, train_loss: float) -> None:
        prog = self.progress
        entry = {"epoch": prog.epoch + 1, "step": prog.step, "train_loss": train_loss}
        if self.eval_loader is not None:
            metrics = self.evaluate()
            entry.update(metrics)
            score = metrics[self.metric_names[0]]
            if prog.best_score is None or score > prog.best_score:
                prog.best_score, prog.best_epoch, prog.best = score, prog.epoch + 1, metrics
                self._save_model("best")
        prog.history.append(entry)
        self._log({("train/epoch_loss" if key == "train_loss" else f"dev/{key}"): value
                   for key, value in entry.items() if key not in ("epoch", "step")})
        for listener in list(_EPOCH_LISTENERS):
            listener({**entry, "last": prog.step >= self.total_steps})
        if lines_on(self.config.progress, self.config.verbosity):
            epochs = math.ceil(self.total_steps / self.steps_per_epoch)
            figures = ", ".join(f"{k} {v:.4g}" for k, v in entry.items() if k not in ("epoch", "step"))
            self.accelerator.print(f"{self.name} epoch {entry['epoch']}/{epochs} (step {prog.step}/"
                                   f"{self.total_steps}): {figures}", flush=True)
        prog.epoch += 1
        prog.batches_in_epoch, prog.epoch_loss_sum = 0, 0.0
        self._checkpoint()

    def _log(self, values: dict[str, float]) -> None:
        if self.tracked:
            self.accelerator.log(values, step=self.progress.step)

    # ------------------------------------------------------------------------------ evaluate
    def evaluate(self, loader: DataLoader | None = None) -> dict[str, float]:
        """Dev metrics of the current model (gathered across processes). Usage: ``trainer.evaluate()``."""
        loader = loader or self.eval_loader
        if loader is None:
            raise ValueError("no evaluation data was given")
        return evaluate_model(self.model, loader, self.metric_names, self.predict, self.accelerator)

    # ---------------------------------------------------------------------------- checkpoints
    def _save_model(self, name: str) -> None:
        if self.run is None or self.save_model is None:
            return
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            self.save_model(self.accelerator.unwrap_model(self.model), self.run / name)

    def _checkpoint(self) -> None:
        if self.run is None:
            return
        prog = self.progress
        final = self.run.checkpoints / f"step-{prog.step:08d}"
        tmp = self.run.checkpoints / f".tmp-step-{prog.step:08d}"
        if self.accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        self.accelerator.wait_for_everyone()
        self.accelerator.save_state(str(tmp))
        if self.accelerator.is_main_process:
            atomic_write_json(tmp / PROGRESS_FILE, prog.__dict__)
            write_manifest(tmp)  # last: a checkpoint is trusted only with every file as written here
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            for old in _checkpoint_dirs(self.run.checkpoints)[: -self.config.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
        self.accelerator.wait_for_everyone()

    def _load_latest_checkpoint(self) -> None:
        if self.run is None:
            raise UserError("--resume needs a run directory")
        latest = self._latest_checkpoint(self.run.checkpoints)
        if latest is None:
            self.accelerator.print(f"no checkpoint in {self.run.checkpoints}; starting from the beginning")
            return
        try:
            saved = json.loads((latest / PROGRESS_FILE).read_text())
            self.accelerator.load_state(str(latest))
        except Exception as err:  # any failure to read back our own files means a damaged checkpoint
            raise UserError(f"checkpoint {latest} is corrupt ({type(err).__name__}); delete it to resume "
                            "from an earlier one, or start again with --overwrite") from None
        self.progress = _Progress(**saved)
        self.accelerator.print(f"resumed from {latest.name} (epoch {self.progress.epoch + 1}, "
                               f"step {self.progress.step}/{self.total_steps})")
        if self.progress.step >= self.total_steps and self.progress.batches_in_epoch:
            self._end_epoch(self._epoch_train_loss())  # stopped after the last step's checkpoint, before its eval

    def _latest_checkpoint(self, folder: Path) -> Path | None:
        """The newest trusted checkpoint; the main process recovers a half-replaced one before the others look."""
        latest = latest_checkpoint(folder) if self.accelerator.is_main_process else None
        self.accelerator.wait_for_everyone()
        return latest if self.accelerator.is_main_process else latest_checkpoint(folder)

    def _result(self) -> TrainResult:
        prog = self.progress
        final = {k: v for k, v in prog.history[-1].items() if k in self.metric_names} if prog.history else {}
        return TrainResult(best=prog.best or final, best_epoch=prog.best_epoch, final=final,
                           history=prog.history, steps=prog.step,
                           train_samples_per_s=prog.samples_seen / max(prog.train_seconds, 1e-9),
                           train_seconds=prog.train_seconds)


@torch.no_grad()
def evaluate_model(model: nn.Module, loader: DataLoader, metrics: Sequence[str], predict: Predict = forward_logits,
                   accelerator: Accelerator | None = None) -> dict[str, float]:
    """Task metrics of ``model`` over ``loader`` (gathered across processes when an accelerator is given).

    Usage: ``evaluate_model(model, DataLoader(task.dev, 64, collate_fn=collate), task.metrics)``
    """
    from shrink.data import compute_metrics

    was_training = model.training
    model.eval()
    preds, labels = [], []
    for batch in loader:
        if accelerator is None:
            logits, gold = predict(model, batch).float(), batch["labels"]
        else:
            with accelerator.autocast():
                logits = predict(model, batch)
            logits, gold = accelerator.gather_for_metrics((logits.float(), batch["labels"]))
        preds.append(logits.cpu().numpy())
        labels.append(gold.cpu().numpy())
    model.train(was_training)
    return compute_metrics(metrics, np.concatenate(preds), np.concatenate(labels))


def check_mixed_precision(config: TrainConfig) -> None:
    """UserError when this machine cannot train in ``config.mixed_precision``. Usage: ``check_mixed_precision(cfg)``."""
    if config.mixed_precision == "fp16" and not torch.cuda.is_available():
        raise UserError("--mixed-precision fp16 needs a GPU; use bf16 on a CPU")


def make_accelerator(config: TrainConfig, logging_dir: Path | None = None) -> Accelerator:
    """An Accelerator for ``config``; in a single process, settings left by an earlier run are replaced.

    Accelerate keeps its state in a process-wide singleton, so a notebook or test that trains twice with
    different precision would otherwise be refused. With ``logging_dir`` the trackers of
    ``config.report_to`` are attached. Usage: ``make_accelerator(TrainConfig())``.
    """
    from accelerate.state import AcceleratorState

    if AcceleratorState._shared_state and process_state().num_processes == 1:
        AcceleratorState._reset_state()
    tracking = {"log_with": list(config.report_to), "project_dir": logging_dir} if logging_dir else {}
    return Accelerator(mixed_precision=config.mixed_precision, gradient_accumulation_steps=config.grad_accum,
                       cpu=_multi_cpu(), **tracking)


def process_state() -> PartialState:
    """Accelerate's view of this process (rank, world size), also under ``torchrun`` on CPU-only machines.

    Usage: ``if process_state().is_main_process: write_files()``
    """
    return PartialState(cpu=_multi_cpu())


def _multi_cpu() -> bool:
    # Accelerate treats a launch with several processes as multi-CPU (gloo) only when asked for the CPU.
    return not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1


def _checkpoint_dirs(folder: Path) -> list[Path]:
    """Whole checkpoints (renamed into place), oldest first."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("step-*") if p.is_dir())
