"""From a validated recipe to data, model and collate function; and ``shrink train`` itself.

Everything that can fail on bad input (unknown model, missing files, a label column that does not
exist) is done *before* the run directory is created, so a refused command leaves nothing behind.

Usage::

    recipe = load_recipe("demo")
    experiment = prepare_experiment(recipe)
    metrics = train_and_report(experiment, resume=False, overwrite=False)
"""
from __future__ import annotations

import dataclasses
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from accelerate.utils import set_seed
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from shrink.bench import DEFAULT_IMAGE_SHAPE, measure_models, size_on_disk
from shrink.data import TaskData, load_task_data, make_collate
from shrink.errors import UserError
from shrink.models import create_model, model_modality, name_labels, save_model
from shrink.recipe import Recipe, TrainConfig, read_yaml, save_recipe
from shrink.modelcard import ModelCard
from shrink.report import publish
from shrink.runs import RECIPE_FILE, RunDir, atomic_dir
from shrink.timing import latency_columns
from shrink.train import Trainer, TrainResult, check_mixed_precision, evaluate_model, process_state

# The slice of the training split that --select-on train-holdout keeps out of training to choose the best epoch.
HOLDOUT_FRACTION = 0.1
# AdamW peak rates that suit each family when the recipe names none.
LR_TRANSFORMER, LR_CNN = 5e-5, 1e-3
# Recipe keys that do not change what a run computes, so --resume may change them.
RESUME_FREE_KEYS = {"output_dir", "data.data_dir", "train.progress", "train.verbosity", "train.num_workers",
                    "train.checkpoint_every", "train.keep_checkpoints", "train.eval_batch_size", "train.report_to"}


@dataclass
class Experiment:
    """A recipe resolved into objects: the task's data, the model, its tokenizer and the batch collator."""

    recipe: Recipe
    task: TaskData
    model: nn.Module
    tokenizer: Any
    collate: Callable[[list], dict]

    @property
    def is_transformer(self) -> bool:
        """True for Hugging Face models (they carry a ``config``)."""
        return hasattr(self.model, "config")

    def save(self, model: nn.Module, folder: Path) -> None:
        """Save ``model`` (with the tokenizer for text models) atomically into ``folder``."""
        save_model(model, folder, tokenizer=self.tokenizer)

    def dev_loader(self, batch_size: int = 64) -> DataLoader:
        """The dev split in order, collated."""
        return DataLoader(self.task.dev, batch_size=batch_size, shuffle=False, collate_fn=self.collate)


def load_task(recipe: Recipe) -> TaskData:
    """The recipe's dataset. Usage: ``load_task(recipe).dev``."""
    data = recipe.data
    task = load_task_data(
        data.dataset, data.data_dir, text_column=data.text_column, text_pair_column=data.text_pair_column,
        label_column=data.label_column, domain_column=data.domain_column, max_train_samples=data.max_train_samples,
        max_eval_samples=data.max_eval_samples, seed=recipe.train.seed, augment=data.augment,
    )
    for split in ("train", "dev"):
        if len(getattr(task, split)) == 0:  # nothing to learn from or to measure: no result would mean anything
            raise UserError(f"the {split} split of {task.name} has no examples; give it data rows")
    if recipe.train.group_by_length and task.modality != "text":
        raise UserError(f"--group-by-length groups text examples by length; {task.name} is {task.modality} data: "
                        "leave it off")
    return task


def load_for_task(name: str, task: TaskData, tokenizer_fallback: Any = None, **args: Any) -> tuple[nn.Module, Any]:
    """``create_model`` sized for ``task`` (labels and their names, image shape; CIFAR's shape for text tasks).

    Usage: ``model, tokenizer = load_for_task("bert-tiny", task)``
    """
    kind = model_modality(name)
    if kind is not None and kind != task.modality:
        raise UserError(f"'{name}' is {'an image' if kind == 'image' else 'a text'} model but {task.name} is "
                        f"{task.modality} data; pick a model for {task.modality} data (see `shrink models`) "
                        f"or {kind} data")
    image = task.image_shape or DEFAULT_IMAGE_SHAPE
    model, tokenizer = create_model(name, num_classes=task.num_labels, in_channels=image[0], image_size=image[-1],
                                    is_regression=task.is_regression, tokenizer_fallback=tokenizer_fallback, **args)
    name_labels(model, task.label_names)
    return model, tokenizer


def prepare_experiment(recipe: Recipe, model_name: str | None = None) -> Experiment:
    """Load the data and build (or load) the model sized for it. Usage: ``prepare_experiment(recipe)``."""
    task = load_task(recipe)
    set_seed(recipe.train.seed)  # the model's random init belongs to the seeded run
    model, tokenizer = load_for_task(model_name or recipe.model.name, task, task.tokenizer, **recipe.model.args)
    collate = make_collate(task, tokenizer, recipe.data.max_length)
    return Experiment(recipe, task, model, tokenizer, collate)


def default_output_dir(recipe: Recipe, command: str) -> str:
    """``runs/<command>-<model>-<dataset>`` when the recipe names no output directory."""
    model = Path(recipe.model.name.rstrip("/")).name
    return str(Path("runs") / f"{command}-{model}-{recipe.data.dataset}".replace(":", "_"))


def open_run(recipe: Recipe, command: str, resume: bool, overwrite: bool) -> RunDir:
    """Check the settings, then create (or reopen for ``resume``) the locked run directory with the recipe.

    Use the result as a context manager: a failed command then removes what it created (see RunDir).
    Usage: ``with open_run(recipe, "train", resume=False, overwrite=False) as run: ...``
    """
    check_mixed_precision(recipe.train)
    if recipe.output_dir is None:
        recipe.output_dir = default_output_dir(recipe, command)
    state = process_state()
    if not state.is_main_process:  # under `accelerate launch`, the main process owns the folder
        state.wait_for_everyone()
        return RunDir(recipe.output_dir)
    run = RunDir.create(recipe.output_dir, resume=resume, overwrite=overwrite)
    with ExitStack() as on_failure:
        on_failure.enter_context(run)
        if resume:
            refuse_changes(run / RECIPE_FILE, recipe)
        save_recipe(recipe, run / RECIPE_FILE)
        on_failure.pop_all()
    state.wait_for_everyone()
    return run


def selection_splits(task: TaskData, config: TrainConfig) -> tuple[Dataset, Dataset]:
    """(what to train on, what to choose the best epoch on) for ``config.select_on``.

    ``train-holdout`` holds a seeded ``HOLDOUT_FRACTION`` of the training split out of training.
    Usage: ``train_set, select_set = selection_splits(task, recipe.train)``
    """
    if config.select_on == "dev":
        return task.train, task.dev
    if task.selection is not None:
        return task.train, task.selection
    size = len(task.train)  # type: ignore[arg-type]
    kept, held = holdout_split(size, HOLDOUT_FRACTION, config.seed, "--select-on train-holdout")
    return Subset(task.train, kept), Subset(task.train, held)


def fix_selection(task: TaskData, config: TrainConfig) -> TaskData:
    """The task with its ``train-holdout`` taken now (``train`` the kept part, ``selection`` the held one), so that
    what is added to ``train`` later (augmented copies, unlabeled text) is never held out and no copy of a held-out
    example is trained on; the task unchanged when the best epoch is chosen on dev.

    Usage: ``task = fix_selection(task, recipe.train)``
    """
    if config.select_on == "dev" or task.selection is not None:
        return task
    train, held = selection_splits(task, config)
    return dataclasses.replace(task, train=train, selection=held)


def holdout_split(total: int, fraction: float, seed: int, needed_by: str) -> tuple[list[int], list[int]]:
    """(kept, held-out) sorted indices of ``total`` examples, a seeded ``fraction`` held out (at least one).

    Usage: ``train_idx, held_idx = holdout_split(len(dataset), 0.1, seed=3, needed_by="--select-on")``
    """
    held = max(1, round(total * fraction))
    if held >= total:
        raise UserError(f"{needed_by} needs more than {total} training examples to hold some out")
    order = torch.randperm(total, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(order[held:]), sorted(order[:held])


def selected_on(config: TrainConfig) -> str:
    """What a report prints next to a score about where the best epoch was chosen. Usage: ``selected_on(cfg)``."""
    return "dev (the reported split: optimistic)" if config.select_on == "dev" else \
        f"train holdout ({HOLDOUT_FRACTION:.0%}, seeded); dev reported only"


def refuse_changes(saved_path: Path, recipe: Recipe) -> None:
    """UserError naming the recipe keys that ``--resume`` would change: the checkpoint fixes them.

    Usage: ``refuse_changes(run / "recipe.yaml", recipe)``
    """
    if not saved_path.is_file():
        return
    saved = dotted(read_yaml(saved_path))
    new = dotted(recipe.model_dump(mode="json"))
    changed = [f"{key} ({saved.get(key)!r} -> {new.get(key)!r})" for key in sorted(saved.keys() | new.keys())
               if key not in RESUME_FREE_KEYS and saved.get(key) != new.get(key)]
    if changed:
        raise UserError(f"--resume cannot change {', '.join(changed)}: the run was started with the saved values; "
                        "resume without the change, or start again with --overwrite")


def dotted(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested mapping flattened to dotted keys. Usage: ``dotted({"train": {"lr": 1}}) == {"train.lr": 1}``."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(dotted(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def fit(experiment: Experiment, run: RunDir | None, resume: bool = False, step: Any = None) -> TrainResult:
    """Train the experiment's model with the core engine (optionally a custom ``step``); the best epoch is
    chosen on the split ``train.select_on`` names."""
    recipe = experiment.recipe
    train_set, select_set = selection_splits(experiment.task, recipe.train)
    trainer = Trainer(
        experiment.model, train_set, select_set, collate=experiment.collate,
        metrics=experiment.task.metrics, config=recipe.train, step=step, is_regression=experiment.task.is_regression,
        run=run, resume=resume, save_model=experiment.save,
        lr_default=LR_TRANSFORMER if experiment.is_transformer else LR_CNN,
    )
    return trainer.fit()


def model_figures(experiment: Experiment, models: Mapping[str, nn.Module],
                  batch_sizes: Sequence[int] = (1, 32)) -> dict[str, dict[str, Any]]:
    """Parameters, MACs (batch 1) and latency (per batch size) of each model on this machine, by name;
    the models' latencies are timed in alternating rounds, so they compare.

    Usage: ``model_figures(experiment, {"base": base, "pruned": pruned})["pruned"]["latency"]["1"]``
    """
    return measure_models(models, image_shape=experiment.task.image_shape,
                          seq_len=experiment.recipe.data.max_length, batch_sizes=batch_sizes)


def train_and_report(experiment: Experiment, resume: bool, overwrite: bool) -> dict[str, Any]:
    """``shrink train``: train, keep the best model as RUN/model, measure it, print and save the results."""
    recipe = experiment.recipe
    with open_run(recipe, "train", resume, overwrite) as run:
        return _train_in(experiment, run, resume)


def _train_in(experiment: Experiment, run: RunDir, resume: bool) -> dict[str, Any]:
    recipe = experiment.recipe
    result = fit(experiment, run, resume)
    if not process_state().is_main_process:
        return {}
    best_dir = run / "best"
    final_model = experiment.model
    if best_dir.is_dir():
        from shrink.models import load_model

        final_model = load_model(best_dir)
    with atomic_dir(run / "model") as folder:
        experiment.save(final_model, folder)
    figures = model_figures(experiment, {"model": final_model})["model"]
    figures["model_bytes"] = size_on_disk(run / "model")
    dev = result.best
    if recipe.train.select_on != "dev":
        dev = evaluate_model(final_model, experiment.dev_loader(), experiment.task.metrics)
    metrics: dict[str, Any] = {
        "command": "train", "model": recipe.model.name, "dataset": experiment.task.name,
        "primary_metric": experiment.task.metrics[0], "dev": dev, "best_epoch": result.best_epoch,
        "selected_on": recipe.train.select_on, "selection_score": result.best,
        # the last epoch's scores are on the selection split: dev, or the training holdout
        f"final_epoch_{'dev' if recipe.train.select_on == 'dev' else 'holdout'}": result.final, "steps": result.steps,
        "train_samples_per_s": result.train_samples_per_s, "train_seconds": result.train_seconds,
        **figures, "history": result.history,
    }
    summary = {"model": recipe.model.name, "dataset": experiment.task.name,
               **{f"dev {k}": v for k, v in dev.items()}, "best epoch chosen on": selected_on(recipe.train),
               "best epoch": result.best_epoch,
               "params": figures["params"], "MACs": figures["macs"], "MB on disk": figures["model_bytes"] / 1e6,
               **latency_columns({"1": figures["latency"]["1"]})}
    intro = (f"{recipe.model.name} trained on {experiment.task.name}; the best epoch was chosen on "
             f"{selected_on(recipe.train)} (the training history's scores are on that split).")
    card = ModelCard(method=f"{recipe.model.name} trained with `shrink train` (best epoch chosen on "
                     f"{selected_on(recipe.train)})", dataset=experiment.task.name, metrics=dev,
                     base_model=recipe.model.name if experiment.is_transformer else None)
    publish(run, metrics, "shrink train", intro, [("training history", result.history), ("result", [summary])],
            card=card)
    return metrics
