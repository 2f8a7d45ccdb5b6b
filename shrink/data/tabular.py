"""``text-files``: a folder of ``train`` / ``dev`` (and optional ``test``) CSV, TSV or JSON-lines files.

Columns default to ``text`` and ``label`` (no second text); ``--text-column`` and friends rename them.
Labels that are strings or integers become classes (sorted, taken from train); floats a regression.
``--domain-column`` names a column that gives each example's domain (multi-domain data, see
:mod:`shrink.data.domains`).

Usage: ``load_task_data("text-files", "reviews/", text_column="review", label_column="stars")``
"""
from __future__ import annotations

from pathlib import Path

from torch.utils.data import Dataset

from shrink.data.domains import DomainDataset
from shrink.data.tables import TABLE_SUFFIXES, Table, read_table
from shrink.data.task import DATASETS, LoadRequest, TaskData, default_metrics, find_file, optional_file
from shrink.data.text import LabelSpace, TextColumns, text_task
from shrink.errors import UserError

WHAT = "a folder with train.{csv,tsv,jsonl} and dev.{csv,tsv,jsonl}"
DEV_STEMS = ("dev", "validation", "val")


@DATASETS.register("text-files", aliases=("text-file", "csv", "tsv", "jsonl"),
                   summary="your text data as CSV, TSV or JSON-lines; needs --data-dir with train.* and dev.* "
                           "(columns: --text-column, --text-pair-column, --label-column)")
def load_text_files(request: LoadRequest) -> TaskData:
    """Read the train/dev/test files of ``request.data_dir``. Usage: ``load_text_files(request)``."""
    folder = request.folder(WHAT)
    columns = TextColumns("text", None, "label").override(request)
    train = read_table(find_file(folder, _names(("train",)), f"pass {WHAT}"))
    dev = read_table(find_file(folder, _names(DEV_STEMS), f"pass {WHAT}"))
    test_path = optional_file(folder, _names(("test",)))
    columns.check(train.columns, str(train.path))
    labels = LabelSpace.infer(row.get(columns.label) for row in train.rows)
    test = _maybe_read(test_path)
    task = text_task(request.full_name, train, dev, test, columns, labels, default_metrics(labels.is_regression))
    if request.domain_column:
        task.train, task.dev = (with_domains(split, table, request.domain_column)
                                for split, table in ((task.train, train), (task.dev, dev)))
        if task.test is not None and test is not None and request.domain_column in test.columns:
            task.test = with_domains(task.test, test, request.domain_column)
    return task


def with_domains(dataset: Dataset, table: Table, column: str) -> DomainDataset:
    """``dataset`` (one example per row of ``table``) with each example's domain read from ``column``.

    Usage: ``with_domains(task.train, read_table(path), "site")``
    """
    if column not in table.columns:
        raise UserError(f"{table.path} has no domain column '{column}'; its columns are: {', '.join(table.columns)} "
                        "(choose with --domain-column)")
    missing = [number for number, row in enumerate(table.rows, start=1) if row.get(column) in (None, "")]
    if missing:
        raise UserError(f"{table.path} row {missing[0]}: the domain column '{column}' is empty; "
                        "give every row a domain")
    return DomainDataset(dataset, [row[column] for row in table.rows])


def _names(stems: tuple[str, ...]) -> list[str]:
    return [f"{stem}.{suffix}" for stem in stems for suffix in TABLE_SUFFIXES]


def _maybe_read(path: Path | None) -> Table | None:
    return None if path is None else read_table(path)
