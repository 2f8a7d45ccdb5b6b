"""Result tables: the same rows printed to the terminal (rich) and written as Markdown for report.md.

Usage::

    rows = [{"model": "resnet20", "accuracy": 0.91}]
    print_table("results", rows)
    text = markdown_table(rows)
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from rich.console import Console
from rich.table import Table

from shrink.modelcard import ModelCard, write_model_card

if TYPE_CHECKING:
    from shrink.runs import RunDir


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
    (console or Console(width=160)).print(table)


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
    run.finish(metrics, f"# {command}\n\nRun: `{run.path}`\n\n{intro}\n\n{body}{footer}")
