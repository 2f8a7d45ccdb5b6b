"""The nine GLUE tasks, read from their official task folders (``train.tsv``, ``dev.tsv``, ``test.tsv``).

Each task keeps its published column conventions: CoLA's train/dev files have no header, MRPC's header
starts with a byte-order mark, STS-B is a regression, MNLI's dev file is ``dev_matched.tsv``
(``mnli-mm`` reads the mismatched one). Label ids follow the Hugging Face ``glue`` dataset.

Usage: ``load_task_data("mrpc", "glue/MRPC").metrics == ("f1", "accuracy")``
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

from shrink.data.tables import read_table
from shrink.data.task import DATASETS, LoadRequest, TaskData, find_file, optional_file
from shrink.data.text import LabelSpace, TextColumns, text_task

BINARY = ("0", "1")


@dataclass(frozen=True)
class GlueTask:
    """One GLUE task's files, columns, labels and metrics (the first metric is the primary one).

    Usage: ``GLUE_TASKS["rte"].columns.pair == "sentence2"``
    """

    name: str
    aliases: tuple[str, ...]
    columns: TextColumns
    labels: LabelSpace
    metrics: tuple[str, ...]
    dev_file: str = "dev.tsv"
    test_file: str = "test.tsv"
    headerless: tuple[str, ...] | None = None  # column names of train/dev files that have no header row


ENTAILMENT = LabelSpace(("entailment", "not_entailment"))
MNLI_LABELS = LabelSpace(("entailment", "neutral", "contradiction"))
MNLI_COLUMNS = TextColumns("sentence1", "sentence2", "gold_label")

GLUE_TASKS: dict[str, GlueTask] = {task.name: task for task in (
    GlueTask("cola", (), TextColumns("sentence", None, "label"),
             LabelSpace(BINARY, ("unacceptable", "acceptable")), ("mcc",),
             headerless=("source", "label", "mark", "sentence")),
    GlueTask("sst2", ("sst-2",), TextColumns("sentence", None, "label"),
             LabelSpace(BINARY, ("negative", "positive")), ("accuracy",)),
    GlueTask("mrpc", (), TextColumns("#1 String", "#2 String", "Quality"),
             LabelSpace(BINARY, ("not_equivalent", "equivalent")), ("f1", "accuracy")),
    GlueTask("stsb", ("sts-b", "sts"), TextColumns("sentence1", "sentence2", "score"),
             LabelSpace(None), ("pearson", "spearman")),
    GlueTask("qqp", (), TextColumns("question1", "question2", "is_duplicate"),
             LabelSpace(BINARY, ("not_duplicate", "duplicate")), ("f1", "accuracy")),
    GlueTask("mnli", ("mnli-m", "mnli-matched"), MNLI_COLUMNS, MNLI_LABELS, ("accuracy",),
             dev_file="dev_matched.tsv", test_file="test_matched.tsv"),
    GlueTask("mnli-mm", ("mnli-mismatched",), MNLI_COLUMNS, MNLI_LABELS, ("accuracy",),
             dev_file="dev_mismatched.tsv", test_file="test_mismatched.tsv"),
    GlueTask("qnli", (), TextColumns("question", "sentence", "label"), ENTAILMENT, ("accuracy",)),
    GlueTask("rte", (), TextColumns("sentence1", "sentence2", "label"), ENTAILMENT, ("accuracy",)),
    GlueTask("wnli", (), TextColumns("sentence1", "sentence2", "label"),
             LabelSpace(BINARY, ("not_entailment", "entailment")), ("accuracy",)),
)}


def load_glue(task: GlueTask, request: LoadRequest) -> TaskData:
    """Read ``task`` from the GLUE folder ``request.data_dir``. Usage: ``load_glue(GLUE_TASKS["sst2"], request)``."""
    what = f"a GLUE task folder with train.tsv/{task.dev_file}"
    folder = request.folder(what)
    test = optional_file(folder, [task.test_file])
    # GLUE test files always carry a header, even CoLA's.
    return text_task(
        task.name,
        read_table(find_file(folder, ["train.tsv"], f"pass {what}"), task.headerless),
        read_table(find_file(folder, [task.dev_file], f"pass {what}"), task.headerless),
        None if test is None else read_table(test),
        task.columns.override(request), task.labels, task.metrics,
    )


def glue_summary(task: GlueTask) -> str:
    """One line on ``task`` for ``shrink datasets``. Usage: ``glue_summary(GLUE_TASKS["rte"])``."""
    shape = "sentence pairs" if task.columns.pair else "single sentences"
    labels = "a regression score" if task.labels.values is None else f"{len(task.labels.values)} labels"
    return (f"GLUE {task.name.upper()}: {shape}, {labels}, {'/'.join(task.metrics)}; "
            f"needs --data-dir: the task folder (train.tsv, {task.dev_file})")


for _task in GLUE_TASKS.values():
    DATASETS.add(_task.name, functools.partial(load_glue, _task), _task.aliases, summary=glue_summary(_task))
