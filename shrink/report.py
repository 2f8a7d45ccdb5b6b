"""Result tables: the same rows printed to the terminal (rich) and written as Markdown for report.md.

Usage::

    rows = [{"model": "resnet20", "accuracy": 0.91}]
    print_table("results", rows)
    text = markdown_table(rows)
"""
from __future__ import annotations

import re
import shutil
from typing import TYPE_CHECKING, Any, Sequence

from rich.console import Console
from rich.table import Table

from shrink.modelcard import ModelCard, write_model_card

if TYPE_CHECKING:
    from shrink.runs import RunDir


# What a column means, for report.md's legend: (pattern, explanation with the pattern's groups as {0}, {1}).
COLUMN_NOTES: tuple[tuple[str, str], ...] = (
    (r"latency b(\d+) ms", "median milliseconds per call on a batch of {0}, timed on this machine with the threads "
                           "pinned; 'noisy' instead when the interquartile range exceeds 20% of the median or too "
                           "few blocks were timed, since such a figure is not a result"),
    (r"b(\d+) p90 ms", "90th percentile of the same timings at batch {0}: the slow calls a service also sees"),
    (r"params", "parameters"),
    (r"MACs", "multiply-accumulates per example: convolutions and linears (PyTorch's FLOP counter)"),
    (r"MACs \(Torch-Pruning\)", "MACs as Torch-Pruning counts them (adds BatchNorm, activations and pooling; "
                                 "the figure papers quote)"),
    (r"MB on disk", "size of the saved model in megabytes"),
    (r"(dev|holdout|test) (.+)", "{1} on the {0} split"),
    (r"retention", "the student's primary metric divided by the teacher's"),
    (r"speedup", "the base model's MACs divided by the pruned model's"),
    (r"best epoch chosen on", "the split on which the kept epoch was chosen: a score on that same split is "
                              "optimistic"),
    (r"best epoch", "the epoch whose model was kept"),
    (r"train_loss", "mean training loss over the epoch"),
    (r"loss (.+)", "mean of the {0} loss term over the stage's last epoch"),
)


def column_legend(columns: Sequence[str]) -> str:
    """Markdown bullets explaining the ``columns`` that :data:`COLUMN_NOTES` knows.

    Usage: ``column_legend(["params", "latency b1 ms"])``
    """
    lines = []
    for column in columns:
        for pattern, note in COLUMN_NOTES:
            match = re.fullmatch(pattern, column)
            if match:
                lines.append(f"- **{column}**: {note.format(*match.groups())}")
                break
    return "\n".join(lines)


def format_value(value: Any) -> str:
    """Numbers to short human strings (4 significant decimals for fractions, thousands separators)."""
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != value:
            return "nan"
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    return str(value)


def _columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    columns: list[str] = []
    for row in rows:
        columns.extend(key for key in row if key not in columns)
    return columns


def print_table(title: str, rows: Sequence[dict[str, Any]], console: Console | None = None) -> None:
    """Print ``rows`` (dicts; the union of their keys are the columns) as a table."""
    table = Table(title=title)
    columns = _columns(rows)
    for column in columns:
        table.add_column(column, justify="left" if column == columns[0] else "right")
    for row in rows:
        table.add_row(*(format_value(row.get(column)) for column in columns))
    # the terminal's width (COLUMNS when set); a pipe or log file gets 160 columns
    (console or Console(width=shutil.get_terminal_size((160, 24)).columns)).print(table)


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """``rows`` as a GitHub Markdown table."""
    columns = _columns(rows)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(format_value(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def publish(run: "RunDir", metrics: dict[str, Any], command: str, intro: str,
            sections: Sequence[tuple[str, Sequence[dict[str, Any]]]], footer: str = "",
            card: ModelCard | None = None) -> None:
    """Print each section as a table, write the same tables to report.md, and mark the run complete.

    The last section is the result, printed last so it is what stays on screen. ``card`` is written into
    the saved model folder (``RUN/model/README.md``).
    Usage: ``publish(run, metrics, "shrink train", "", [("history", rows), ("result", [summary])])``
    """
    for heading, rows in sections:
        print_table(f"{command} {heading}: {run.path}" if heading == sections[-1][0] else heading, rows)
    if card is not None and (run / "model").is_dir():
        write_model_card(run / "model", card)
    body = "".join(f"## {heading.capitalize()}\n\n{markdown_table(rows)}\n" for heading, rows in sections)
    legend = column_legend(list(dict.fromkeys(column for _, rows in sections for column in _columns(rows))))
    body += f"## Columns\n\n{legend}\n\n" if legend else ""
    run.finish(metrics, f"# {command}\n\nRun: `{run.path}`\n\n{intro}\n\n{body}{footer}")
