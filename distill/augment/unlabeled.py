"""Unlabeled in-domain text that the teacher labels, and the label value that marks an example as unlabelled.

Examples without a gold label (unlabeled text, augmented copies under KD) carry ``IGNORE_LABEL`` (or NaN for
regression): the hard-label term skips them, the teacher's outputs are their targets.

Usage::

    unlabeled = read_unlabeled("in_domain.txt", pairs=False, regression=False)   # a TextDataset
    mask = gold_rows(batch["labels"])                                            # rows with a gold label
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

from shrink.data.text import TextDataset
from shrink.errors import UserError

IGNORE_LABEL = -100  # cross-entropy's ignore_index


def ignore_label(regression: bool) -> int | float:
    """The label of an example without gold label. Usage: ``ignore_label(task.is_regression)``."""
    return math.nan if regression else IGNORE_LABEL


def gold_rows(labels: torch.Tensor) -> torch.Tensor:
    """Boolean mask of the rows with a gold label. Usage: ``logits[gold_rows(labels)]``."""
    return ~torch.isnan(labels) if labels.is_floating_point() else labels != IGNORE_LABEL


def read_unlabeled(path: str, pairs: bool, regression: bool) -> TextDataset:
    """The lines of ``path`` (UTF-8; one text, or for a pair task two tab-separated texts, per line; blank
    lines skipped) as examples without labels; UserError for a missing, empty or non-UTF-8 file or a line of
    the wrong shape.

    Usage: ``read_unlabeled("extra.tsv", pairs=True, regression=False)[0]["text_pair"]``
    """
    file = Path(path)
    if not file.is_file():
        raise UserError(f"unlabeled file {path} does not exist; pass --unlabeled with a text file, one example "
                        "per line")
    try:
        text = file.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise UserError(f"unlabeled file {path} is not UTF-8 text (byte {err.start}); convert it with "
                        f"`iconv -t UTF-8` first") from None
    texts, seconds = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if pairs and (len(fields) != 2 or not all(f.strip() for f in fields)):
            raise UserError(f"{path} line {number}: this task takes sentence pairs; write the two texts of each "
                            f"line separated by one tab")
        if not pairs and len(fields) != 1:
            raise UserError(f"{path} line {number}: this task takes one text per example, but the line has a tab; "
                            "remove it")
        texts.append(fields[0].strip())
        seconds.extend(f.strip() for f in fields[1:])
    if not texts:
        raise UserError(f"unlabeled file {path} has no text; give it one example per line")
    return TextDataset(texts, seconds if pairs else None, [ignore_label(regression)] * len(texts))


__all__ = ["IGNORE_LABEL", "gold_rows", "ignore_label", "read_unlabeled"]
