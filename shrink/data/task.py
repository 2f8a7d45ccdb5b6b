"""The task contract: what every dataset loader returns, the loader registry, and ``load_task_data``.

Usage::

    task = load_task_data("sst2", "glue/SST-2", max_train_samples=2000)
    task.train[0]  # {"text": "...", "text_pair": None, "label": 1}
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch.utils.data import Dataset, Subset

from shrink.errors import UserError
from shrink.registry import Registry


@dataclass
class TaskData:
    """A dataset ready for training: splits, label space and the metrics that judge it.

    Usage: ``task = load_task_data("synthetic-text"); len(task.train), task.metrics[0]``
    """

    name: str
    modality: str
    train: Dataset
    dev: Dataset
    test: Dataset | None
    num_labels: int
    is_regression: bool
    metrics: tuple[str, ...]
    label_names: list[str] | None
    image_shape: tuple[int, int, int] | None = None
    tokenizer: object | None = None
    # the split the best epoch is chosen on when it was fixed before training (see shrink.experiment.fix_selection)
    selection: Dataset | None = None


@dataclass(frozen=True)
class LoadRequest:
    """What a registered loader is asked for: the parsed name, the folder and the reading options.

    ``spec`` is the text after ``name:`` (``hf:glue/sst2`` -> ``glue/sst2``, ``synthetic-image:1x16x16``).
    Usage: ``LoadRequest("sst2", None, Path("glue/SST-2")).folder("a GLUE task folder")``
    """

    name: str
    spec: str | None
    data_dir: Path | None
    text_column: str | None = None
    text_pair_column: str | None = None
    label_column: str | None = None
    domain_column: str | None = None
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    seed: int = 0
    augment: bool = True

    @property
    def full_name(self) -> str:
        """The name as the user wrote it, spec included. Usage: ``request.full_name``."""
        return self.name if self.spec is None else f"{self.name}:{self.spec}"

    def folder(self, what: str, default: Path | None = None) -> Path:
        """The data folder, or ``default`` when none was given; UserError saying what to pass otherwise.

        Usage: ``folder = request.folder("a GLUE task folder with train.tsv/dev.tsv")``
        """
        folder = self.data_dir
        if folder is None and default is not None and default.is_dir():
            folder = default
        if folder is None:
            raise UserError(f"task {self.full_name} needs --data-dir ({what})")
        if not folder.is_dir():
            raise UserError(f"data directory {folder} does not exist; pass --data-dir with {what}")
        return folder


Loader = Callable[[LoadRequest], TaskData]
DATASETS: Registry[Loader] = Registry("dataset")


def takes_spec(loader: Loader) -> Loader:
    """Mark a loader that reads the ``name:spec`` suffix; load_task_data refuses a suffix for the others.

    Usage: ``@DATASETS.register("image-folder") @takes_spec def load(request): ...``
    """
    loader.takes_spec = True  # type: ignore[attr-defined]
    return loader


def default_metrics(is_regression: bool) -> tuple[str, ...]:
    """Metrics for a task without a convention of its own. Usage: ``default_metrics(is_regression=False)``."""
    return ("pearson", "spearman") if is_regression else ("accuracy", "f1")


def find_file(folder: Path, names: Sequence[str], what: str) -> Path:
    """The first of ``names`` present in ``folder``; UserError naming the path when none is.

    Usage: ``find_file(folder, ["train.tsv"], "a GLUE task folder needs train.tsv and dev.tsv")``
    """
    found = optional_file(folder, names)
    if found is None:
        tried = " or ".join(str(folder / name) for name in names)
        raise UserError(f"missing file {tried}; {what}")
    return found


def optional_file(folder: Path, names: Sequence[str]) -> Path | None:
    """The first of ``names`` present in ``folder``, or None. Usage: ``optional_file(folder, ["test.tsv"])``."""
    for name in names:
        if (folder / name).is_file():
            return folder / name
    return None


def load_task_data(
    name: str,
    data_dir: str | None = None,
    *,
    text_column: str | None = None,
    text_pair_column: str | None = None,
    label_column: str | None = None,
    domain_column: str | None = None,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    seed: int = 0,
    augment: bool = True,
) -> TaskData:
    """Load a registered dataset (``sst2``, ``cifar10``, ``text-files``, ``hf:glue/rte``, ...) as a TaskData.

    ``max_*_samples`` keep a subset drawn by a permutation seeded with ``seed`` (dev and test alike).
    ``domain_column`` names the column that gives each example's domain (see :mod:`shrink.data.domains`).
    Usage: ``load_task_data("rte", "glue/RTE", max_eval_samples=100)``
    """
    for option, value in (("max_train_samples", max_train_samples), ("max_eval_samples", max_eval_samples)):
        if value is not None and value < 1:
            raise UserError(f"{option} must be a positive number of examples, got {value}")
    kind, colon, spec = name.partition(":")
    loader = DATASETS.get(kind)
    if colon and not getattr(loader, "takes_spec", False):
        raise UserError(f"dataset {kind} takes no ':' option (got '{name}'); write just {kind}")
    request = LoadRequest(
        name=DATASETS.canonical(kind), spec=spec if colon else None, data_dir=Path(data_dir) if data_dir else None,
        text_column=text_column, text_pair_column=text_pair_column, label_column=label_column,
        domain_column=domain_column, max_train_samples=max_train_samples, max_eval_samples=max_eval_samples,
        seed=seed, augment=augment,
    )
    task = loader(request)
    return dataclasses.replace(
        task,
        train=seeded_subset(task.train, max_train_samples, seed),
        dev=seeded_subset(task.dev, max_eval_samples, seed),
        test=None if task.test is None else seeded_subset(task.test, max_eval_samples, seed),
    )


def seeded_subset(dataset: Dataset, size: int | None, seed: int) -> Dataset:
    """``size`` examples of ``dataset`` picked by a seeded permutation, kept in their original order.

    The dataset itself when it is no larger. Usage: ``seeded_subset(task.train, 1000, seed=0)``
    """
    total = len(dataset)  # type: ignore[arg-type]
    if size is None or size >= total:
        return dataset
    picked = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:size]
    return Subset(dataset, sorted(picked.tolist()))
