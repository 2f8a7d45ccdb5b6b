"""Text examples in memory, label spaces, and the table -> TaskData step shared by GLUE and plain files.

Usage::

    labels = LabelSpace(("entailment", "not_entailment"))
    task = text_task("rte", {"train": train_table, "dev": dev_table, "test": None},
                     TextColumns("sentence1", "sentence2", "label"), labels, ("accuracy",))
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from torch.utils.data import Dataset

from shrink.data.tables import Table
from shrink.data.task import LoadRequest, TaskData
from shrink.errors import UserError

UNLABELLED_CLASS = -1  # test files of benchmarks such as GLUE hide their labels


class TextDataset(Dataset):
    """Examples ``{"text": str, "text_pair": str | None, "label": int | float}`` held in lists.

    Usage: ``TextDataset(["good", "bad"], None, [1, 0])[0]``
    """

    def __init__(self, texts: Sequence[str], pairs: Sequence[str] | None, labels: Sequence[int | float]) -> None:
        if len(texts) != len(labels) or (pairs is not None and len(pairs) != len(texts)):
            raise ValueError("texts, pairs and labels must have the same length")
        self.texts, self.pairs, self.labels = list(texts), None if pairs is None else list(pairs), list(labels)

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, index: int) -> dict[str, Any]:
        pair = None if self.pairs is None else self.pairs[index]
        return {"text": self.texts[index], "text_pair": pair, "label": self.labels[index]}


@dataclass(frozen=True)
class LabelSpace:
    """How raw label values map to ids: ``values`` in id order, or None for a regression score.

    Usage: ``LabelSpace(("0", "1"), names=("negative", "positive")).encode("1") == 1``
    """

    values: tuple[str, ...] | None
    names: tuple[str, ...] | None = None

    @classmethod
    def infer(cls, raw: Iterable[object]) -> "LabelSpace":
        """Strings and integers become classes (sorted, numerically for integers); floats a regression score.

        Usage: ``LabelSpace.infer(["pos", "neg", "pos"]).values == ("neg", "pos")``
        """
        parsed = [_scalar(value) for value in raw if value not in (None, "")]
        if parsed and all(isinstance(value, int) for value in parsed):
            return cls(tuple(str(value) for value in sorted(set(parsed))))
        if parsed and all(isinstance(value, (int, float)) for value in parsed):
            return cls(None)
        return cls(tuple(sorted({str(value).strip() for value in parsed})))

    @property
    def is_regression(self) -> bool:
        """True for a real-valued score. Usage: ``labels.is_regression``."""
        return self.values is None

    @property
    def num_labels(self) -> int:
        """Output width of a model for this space: classes, or 1 for regression."""
        return 1 if self.values is None else len(self.values)

    @property
    def label_names(self) -> list[str] | None:
        """Display names of the classes (None for regression)."""
        if self.values is None:
            return None
        return list(self.names or self.values)

    def encode(self, raw: object, where: str) -> int | float:
        """The id (or float score) of ``raw``; UserError naming ``where`` when it is not in the space."""
        text = str(raw).strip()
        if self.values is None:
            try:
                score = float(text)
            except ValueError:
                raise UserError(f"{where}: label '{text}' is not a number (this task is a regression)") from None
            if not math.isfinite(score):
                raise UserError(f"{where}: label '{text}' is not a finite number; fix or drop the row")
            return score
        if text not in self.values:
            raise UserError(f"{where}: label '{text}' is not one of {', '.join(self.values)}")
        return self.values.index(text)

    @property
    def unlabelled(self) -> int | float:
        """The label given to examples of a file without labels."""
        return math.nan if self.values is None else UNLABELLED_CLASS


@dataclass(frozen=True)
class TextColumns:
    """Which columns hold the text, the optional second text and the label.

    Usage: ``TextColumns("sentence", None, "label").override(request)``
    """

    text: str
    pair: str | None
    label: str

    def override(self, request: LoadRequest) -> "TextColumns":
        """These columns with the ones the user named (``--text-column`` ...) put in their place."""
        return TextColumns(request.text_column or self.text, request.text_pair_column or self.pair,
                           request.label_column or self.label)

    def check(self, present: Sequence[str], source: str, labelled: bool = True) -> None:
        """UserError listing the columns ``source`` has when one of ours is not among them."""
        wanted = [self.text, self.pair, self.label if labelled else None]
        for column in filter(None, wanted):
            if column not in present:
                raise UserError(
                    f"{source} has no column '{column}'; its columns are: {', '.join(present)} "
                    "(choose with --text-column / --text-pair-column / --label-column)"
                )


def text_split(table: Table, columns: TextColumns, labels: LabelSpace, labelled: bool = True) -> TextDataset:
    """A TextDataset from ``table``'s rows; unlabelled files get ``labels.unlabelled``.

    Usage: ``text_split(read_table(path), TextColumns("text", None, "label"), LabelSpace(("0", "1")))``
    """
    columns.check(table.columns, str(table.path), labelled)
    texts, pairs, ids = [], [], []
    for number, row in enumerate(table.rows, start=1):
        where = f"{table.path} row {number}"
        texts.append(_text(row, columns.text, where))
        if columns.pair is not None:
            pairs.append(_text(row, columns.pair, where))
        ids.append(labels.encode(row.get(columns.label), where) if labelled else labels.unlabelled)
    return TextDataset(texts, pairs if columns.pair is not None else None, ids)


def text_task(name: str, train: Table, dev: Table, test: Table | None, columns: TextColumns,
              labels: LabelSpace, metrics: tuple[str, ...]) -> TaskData:
    """A text TaskData from train/dev (labelled) and an optional test table (labelled if it has the column).

    Usage: ``text_task("sst2", train, dev, None, TextColumns("sentence", None, "label"), labels, ("accuracy",))``
    """
    return TaskData(
        name=name, modality="text",
        train=text_split(train, columns, labels), dev=text_split(dev, columns, labels),
        test=None if test is None else text_split(test, columns, labels, labelled=columns.label in test.columns),
        num_labels=labels.num_labels, is_regression=labels.is_regression, metrics=metrics,
        label_names=labels.label_names,
    )


def _text(row: dict[str, Any], column: str, where: str) -> str:
    value = row.get(column)
    if not isinstance(value, str):
        raise UserError(f"{where}: column '{column}' should hold text, found {value!r}")
    return value


def _scalar(value: object) -> object:
    """``value`` as an int or float when it reads as one (CSV cells are strings), else unchanged."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return str(value)
    if isinstance(value, str):
        for kind in (int, float):
            try:
                return kind(value.strip())
            except ValueError:
                continue
    return value

