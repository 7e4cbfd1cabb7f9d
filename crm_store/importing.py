"""Reading phone numbers for a call list out of a CSV or XLSX file.

:func:`read_numbers` reads one column of a spreadsheet into
:class:`~crm_store.CallListEntry` values, checking every row first: if any row is
malformed it raises :class:`ImportRejected` listing each bad row by its line (the
header is line 1) and nothing is returned, so nothing is half-imported. A number
that is present but not dialable is *not* a bad row: it becomes an ``invalid``
item with its reason when the list is created
(:meth:`~crm_store.CallListRepository.create_list`), so the import can be reviewed.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Literal

from .dto import CallListEntry
from .exceptions import StoreError

__all__ = ["ImportRejected", "RowError", "read_numbers"]

Format = Literal["csv", "xlsx"]
# Longer than any phone number written with spaces and an extension; longer cells are
# pasted text or a wrong column.
_MAX_CELL = 64


@dataclass(frozen=True, slots=True)
class RowError:
    """One bad row: its line in the file (1-based, header included) and why."""

    line: int
    message: str


class ImportRejected(StoreError):
    """The file cannot be imported; ``errors`` lists every bad row by line."""

    def __init__(self, errors: list[RowError]) -> None:
        shown = "; ".join(f"line {e.line}: {e.message}" for e in errors[:10])
        more = f" (and {len(errors) - 10} more)" if len(errors) > 10 else ""
        super().__init__(f"import rejected: {shown}{more}")
        self.errors = errors


def read_numbers(
    data: bytes,
    *,
    format: Format = "csv",
    column: str | int = 0,
    header: bool = True,
) -> list[CallListEntry]:
    """The numbers in ``column`` (a header name, or a 0-based index) of ``data``.

    CSV is read as UTF-8 (a BOM is allowed) with the delimiter sniffed among
    ``, ; tab``; XLSX reads the first sheet. Empty rows are ignored. Raises
    :class:`ImportRejected` when the file cannot be read at all, when the column
    does not exist, or when any row lacks the column or holds an over-long cell.
    """
    rows = _csv_rows(data) if format == "csv" else _xlsx_rows(data)
    errors: list[RowError] = []
    index: int
    start = 0
    if header:
        if not rows:
            raise ImportRejected([RowError(1, "the file is empty")])
        names = [cell.strip().lower() for cell in rows[0][1]]
        start = 1
        if isinstance(column, str):
            if column.strip().lower() not in names:
                raise ImportRejected([RowError(rows[0][0], f"no column named {column!r}")])
            index = names.index(column.strip().lower())
        else:
            index = column
    else:
        if isinstance(column, str):
            raise ImportRejected([RowError(1, "a column name needs a header row")])
        index = column
    entries: list[CallListEntry] = []
    for line, cells in rows[start:]:
        if not any(cell.strip() for cell in cells):
            continue
        if index >= len(cells):
            errors.append(RowError(line, f"{len(cells)} fields, no column {index + 1}"))
            continue
        cell = cells[index].strip()
        if len(cell) > _MAX_CELL:
            errors.append(RowError(line, f"cell longer than {_MAX_CELL} characters"))
            continue
        entries.append(CallListEntry(cell))
    if errors:
        raise ImportRejected(errors)
    return entries


def _csv_rows(data: bytes) -> list[tuple[int, list[str]]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ImportRejected([RowError(line, "not UTF-8 text")]) from None
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(
            text[:4096], delimiters=",;\t"
        )
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(io.StringIO(text, newline=""), dialect)
    rows: list[tuple[int, list[str]]] = []
    try:
        for cells in reader:
            # line_num is the physical line the record ended on (quoted newlines).
            rows.append((reader.line_num, cells))
    except csv.Error as exc:
        raise ImportRejected([RowError(reader.line_num, f"malformed CSV: {exc}")]) from None
    return rows


def _xlsx_rows(data: bytes) -> list[tuple[int, list[str]]]:
    # Imported here: openpyxl is only needed by XLSX imports.
    import zipfile

    import openpyxl  # type: ignore[import-untyped]

    try:
        book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except (zipfile.BadZipFile, OSError, KeyError, ValueError) as exc:
        raise ImportRejected([RowError(1, f"not an XLSX workbook: {exc}")]) from None
    try:
        sheet = book.worksheets[0]
        rows: list[tuple[int, list[str]]] = []
        for number, values in enumerate(sheet.iter_rows(values_only=True), start=1):
            rows.append((number, [_cell_text(v) for v in values]))
        return rows
    finally:
        book.close()


def _cell_text(value: object) -> str:
    if value is None:
        return ""
    # Spreadsheets store long digit strings as numbers: 33612345678.0 must read back
    # as the digits, not in scientific notation.
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
