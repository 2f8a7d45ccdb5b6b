"""``text-files``: a folder of ``train`` / ``dev`` (and optional ``test``) CSV, TSV or JSON-lines files.

Columns default to ``text`` and ``label`` (no second text); ``--text-column`` and friends rename them.
Labels that are strings or integers become classes (sorted, taken from train); floats a regression.

Usage: ``load_task_data("text-files", "reviews/", text_column="review", label_column="stars")``
"""
from __future__ import annotations

from pathlib import Path

from shrink.data.tables import TABLE_SUFFIXES, Table, read_table
from shrink.data.task import DATASETS, LoadRequest, TaskData, default_metrics, find_file, optional_file
from shrink.data.text import LabelSpace, TextColumns, text_task

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
    return text_task(request.full_name, train, dev, _maybe_read(test_path), columns, labels,
                     default_metrics(labels.is_regression))


def _names(stems: tuple[str, ...]) -> list[str]:
    return [f"{stem}.{suffix}" for stem in stems for suffix in TABLE_SUFFIXES]


def _maybe_read(path: Path | None) -> Table | None:
    return None if path is None else read_table(path)
