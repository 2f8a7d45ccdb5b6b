"""Read a TSV, CSV or JSON-lines file into named columns and row dicts.

TSV is read the GLUE way: tab-separated, no quote handling (sentences contain quote characters), a
UTF-8 byte-order mark dropped. Usage::

    table = read_table(Path("glue/SST-2/train.tsv"))
    table.columns, table.rows[0]["sentence"]
"""
from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from shrink.errors import UserError

log = logging.getLogger(__name__)

TABLE_SUFFIXES = ("tsv", "csv", "jsonl")


@dataclass
class Table:
    """Columns in file order and one dict per data row. Usage: ``table.rows[0][table.columns[0]]``."""

    path: Path
    columns: list[str]
    rows: list[dict[str, Any]]


def read_table(path: Path, fieldnames: Sequence[str] | None = None) -> Table:
    """Read ``path`` by its suffix (.tsv, .csv, .jsonl); ``fieldnames`` names a file without a header row.

    Usage: ``read_table(Path("CoLA/train.tsv"), fieldnames=("source", "label", "mark", "sentence"))``
    """
    suffix = path.suffix.lower().lstrip(".")
    if suffix == "jsonl":
        return _read_jsonl(path)
    if suffix not in TABLE_SUFFIXES:
        raise UserError(f"cannot read {path}: expected a .tsv, .csv or .jsonl file")
    dialect = {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if suffix == "tsv" else {"delimiter": ","}
    records = [record for record in csv.reader(io.StringIO(read_utf8(path), newline=""), **dialect) if record]
    if fieldnames is not None:
        columns = list(fieldnames)
    else:
        columns = [name.strip() for name in records.pop(0)] if records else []
    if not columns:
        raise UserError(f"{path} is empty; expected a header row and data rows")
    rows = [dict(zip(columns, record)) for record in records if len(record) == len(columns)]
    if len(rows) < len(records):
        # Published files have a few broken rows (GLUE QQP); skip them as the reference scripts do.
        log.warning("skipped %d rows of %s whose field count differs from its %d columns",
                    len(records) - len(rows), path, len(columns))
    return Table(path, columns, rows)


def _read_jsonl(path: Path) -> Table:
    rows: list[dict[str, Any]] = []
    columns: dict[str, None] = {}
    for number, line in enumerate(read_utf8(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{path} line {number} is not valid JSON ({err.msg}); "
                            "write one object per line") from None
        if not isinstance(row, dict):
            raise UserError(f"{path} line {number} is not a JSON object; write one object per line")
        columns.update(dict.fromkeys(row))
        rows.append(row)
    return Table(path, list(columns), rows)


def read_utf8(path: Path) -> str:
    """The text of ``path`` (a UTF-8 byte-order mark dropped); UserError when it is not UTF-8.

    Usage: ``read_utf8(Path("train.tsv"))``
    """
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise UserError(f"{path} is not UTF-8 text (byte {err.start}: {err.reason}); save it as UTF-8") from None
