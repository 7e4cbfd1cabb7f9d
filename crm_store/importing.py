"""Reading phone numbers for a call list out of a CSV or XLSX file.

:func:`read_numbers` reads one column of a spreadsheet into
:class:`~crm_store.CallListEntry` values, checking every row first: if any row is
malformed it raises :class:`ImportRejected` listing each bad row by its line (the
header is line 1) and nothing is returned, so nothing is half-imported. A number
that is present but not dialable is *not* a bad row: it becomes an ``invalid``
item with its reason when the list is created
(:meth:`~crm_store.CallListRepository.create_list`), so the import can be reviewed.

A file is read only within :class:`ImportLimits` (the defaults are the module's
``MAX_*`` constants): its size in bytes, its rows, its columns and the length of
every cell. An XLSX workbook is a zip of XML parts, so its *unpacked* size is bounded
too, and the sheet's own declared dimensions (which a hostile file sets to the whole
``A1:XFD1048576`` grid) are ignored: only the cells actually present are read. The
limit hit is reported like a bad row, by the line it was hit on. Cells holding a NUL
or a character that is not a Unicode scalar value are bad rows too.

:func:`printable` makes file text safe to print on a terminal (report lines of the
command line): control characters, which could move the cursor or rewrite what the
operator sees, are removed.
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from dataclasses import dataclass
from typing import Literal

from .dto import CallListEntry
from .exceptions import StoreError

__all__ = [
    "MAX_CELL_CHARS",
    "MAX_COLUMNS",
    "MAX_IMPORT_BYTES",
    "MAX_ROWS",
    "MAX_UNPACKED_BYTES",
    "ImportLimits",
    "ImportRejected",
    "RowError",
    "Table",
    "printable",
    "read_numbers",
    "read_table",
]

Format = Literal["csv", "xlsx"]
# Longer than any phone number written with spaces and an extension; longer cells are
# pasted text or a wrong column.
_MAX_NUMBER_CELL = 64

MAX_IMPORT_BYTES = 16 * 1024 * 1024
"""The largest file accepted, in bytes (CSV text or the XLSX zip as uploaded)."""
MAX_UNPACKED_BYTES = 64 * 1024 * 1024
"""The largest total unpacked size of an XLSX workbook's parts, in bytes."""
MAX_ROWS = 100_000
"""The most rows read, header and empty rows included."""
MAX_COLUMNS = 256
"""The most columns a row may have (trailing empty cells are not counted)."""
MAX_CELL_CHARS = 1024
"""The longest cell, in characters, in any column (the number column's own limit is
64: no phone number is longer)."""
# A workbook has a handful of parts; thousands are a zip made to waste time.
_MAX_XLSX_PARTS = 1000


@dataclass(frozen=True, slots=True)
class ImportLimits:
    """How much of a file :func:`read_numbers` reads before refusing it."""

    max_bytes: int = MAX_IMPORT_BYTES
    max_unpacked_bytes: int = MAX_UNPACKED_BYTES
    max_rows: int = MAX_ROWS
    max_columns: int = MAX_COLUMNS
    max_cell_chars: int = MAX_CELL_CHARS


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
        super().__init__(printable(f"import rejected: {shown}{more}"))
        self.errors = errors


# Bidirectional overrides and isolates (category Cf) reorder what a terminal shows.
_BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)


def printable(text: str) -> str:
    """``text`` fit for a terminal: control characters (C0, DEL, C1) and
    bidirectional controls removed, tabs and line breaks turned into spaces, lone
    surrogates into U+FFFD."""
    if text.isascii() and text.isprintable():
        return text
    out: list[str] = []
    for char in text:
        if char in "\t\r\n":
            out.append(" ")
            continue
        category = unicodedata.category(char)
        if category == "Cs":
            out.append("\ufffd")
        elif category != "Cc" and char not in _BIDI_CONTROLS:
            out.append(char)
    return "".join(out)


ENCODINGS: tuple[str, ...] = ("utf-8", "windows-1251", "windows-1250", "latin-1")
"""The encodings a CSV may be read in (UTF-8 may start with a BOM)."""
DELIMITERS: tuple[str, ...] = (",", ";", "\t", "|")
"""The delimiters a CSV may use."""
# The most of a file looked at to guess its encoding and delimiter.
_SNIFF_CHARS = 65536
# Non-letters that legitimately appear in names and addresses of the seeds' languages.
_USUAL_SIGNS = frozenset("«»\u2013\u2014№€…“”„\u2018\u2019•°§©®\u00d7·\u00a0")


@dataclass(frozen=True, slots=True)
class Table:
    """A file read as rows of text cells: each row with its line in the file
    (1-based, header included), and how the file was read."""

    rows: list[tuple[int, list[str]]]
    format: Format
    encoding: str | None
    delimiter: str | None

    @property
    def width(self) -> int:
        return max((len(cells) for _, cells in self.rows), default=0)


def read_table(
    data: bytes,
    *,
    format: Format = "csv",
    encoding: str | None = None,
    delimiter: str | None = None,
    limits: ImportLimits = ImportLimits(),
) -> Table:
    """Every row of ``data``, read within ``limits``.

    A CSV's ``encoding`` (one of :data:`ENCODINGS`) and ``delimiter`` (one of
    :data:`DELIMITERS`) are guessed when not given: UTF-8 if the bytes are UTF-8,
    else the single-byte encoding whose text looks most like words of one script;
    the delimiter that splits the first lines into the most regular columns.
    Raises :class:`ImportRejected` (the limit named, by line) like
    :func:`read_numbers`, and for a row holding a NUL or an over-long cell.
    """
    if len(data) > limits.max_bytes:
        raise ImportRejected([RowError(1, f"the file is larger than {limits.max_bytes} bytes")])
    if format == "xlsx":
        rows = _xlsx_rows(data, limits)
        used_encoding = used_delimiter = None
    else:
        if encoding is not None and encoding not in ENCODINGS:
            raise ValueError(f"unknown encoding {encoding!r}; one of {', '.join(ENCODINGS)}")
        if delimiter is not None and delimiter not in DELIMITERS:
            raise ValueError(f"unknown delimiter {delimiter!r}")
        used_encoding, text = _decode(data, encoding)
        used_delimiter = delimiter or _guess_delimiter(text)
        rows = _text_rows(text, _dialect(used_delimiter), limits)
    errors = [e for line, cells in rows if (e := _check_row(line, cells, limits)) is not None]
    if errors:
        raise ImportRejected(errors)
    return Table(rows, format, used_encoding, used_delimiter)


def _decode(data: bytes, encoding: str | None) -> tuple[str, str]:
    if encoding is None:
        try:
            return "utf-8", data.decode("utf-8-sig")
        except UnicodeDecodeError:
            pass
        scored: list[tuple[int, int, str, str]] = []
        # On a tie Latin-1 wins over Windows-1250: French read as either is all
        # letters, while Polish read as Latin-1 is not (ł, ą, ś, ż are signs there).
        for rank, name in enumerate(("windows-1251", "latin-1", "windows-1250")):
            try:
                text = data.decode(name)
            except UnicodeDecodeError:
                continue
            scored.append((_oddity(text[:_SNIFF_CHARS]), rank, name, text))
        if not scored:
            raise ImportRejected([RowError(1, "the text encoding could not be recognised")])
        _, _, name, text = min(scored)
        return name, text
    try:
        return encoding, data.decode("utf-8-sig" if encoding == "utf-8" else encoding)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ImportRejected([RowError(line, f"not {encoding} text")]) from None


_WORDS = re.compile(r"[^\W\d_]+")


def _oddity(text: str) -> int:
    """How unlike real text ``text`` is: signs that are no letters, words mixing
    Cyrillic and Latin letters, and words made only of accented Latin letters (what
    Cyrillic read as a Latin code page looks like)."""
    odd = sum(
        1
        for char in text
        if not char.isascii()
        and not char.isalpha()
        and char not in _USUAL_SIGNS
        and not char.isspace()
    )
    for word in _WORDS.findall(text):
        if word.isascii():
            continue
        cyrillic = any("\u0400" <= c <= "\u04ff" for c in word)
        latin = any(c.isascii() or ("\u00c0" <= c <= "\u024f") for c in word)
        if cyrillic and latin:
            odd += 2
        elif not cyrillic and len(word) > 1 and not any(c.isascii() for c in word):
            odd += 1
    return odd


def _guess_delimiter(text: str) -> str:
    sample = text[:_SNIFF_CHARS]
    lines = sample.splitlines()[:50]
    if len(lines) > 1 and len(sample) == _SNIFF_CHARS:
        lines.pop()  # cut in the middle
    best, best_score = ",", (0, 0)
    for candidate in DELIMITERS:
        try:
            widths = [len(r) for r in csv.reader(lines, _dialect(candidate)) if r]
        except csv.Error:
            continue
        if not widths:
            continue
        common = max(set(widths), key=widths.count)
        if common < 2:
            continue
        score = (widths.count(common), common)
        if score > best_score:
            best, best_score = candidate, score
    return best


def _dialect(delimiter: str) -> type[csv.Dialect]:
    class Dialect(csv.excel):
        pass

    Dialect.delimiter = delimiter
    return Dialect


def read_numbers(
    data: bytes,
    *,
    format: Format = "csv",
    column: str | int = 0,
    header: bool = True,
    limits: ImportLimits = ImportLimits(),
) -> list[CallListEntry]:
    """The numbers in ``column`` (a header name, or a 0-based index) of ``data``.

    CSV is read as UTF-8 (a BOM is allowed) with the delimiter sniffed among
    ``, ; tab``; XLSX reads the first sheet. Empty rows are ignored. Raises
    :class:`ImportRejected` when the file cannot be read at all, when it exceeds
    ``limits`` (bytes, rows, columns, cell length), when the column does not exist,
    or when any row lacks the column, holds an over-long cell, or a cell with a NUL
    or an invalid character.
    """
    if len(data) > limits.max_bytes:
        raise ImportRejected([RowError(1, f"the file is larger than {limits.max_bytes} bytes")])
    rows = _csv_rows(data, limits) if format == "csv" else _xlsx_rows(data, limits)
    errors = [e for line, cells in rows if (e := _check_row(line, cells, limits)) is not None]
    if errors:
        raise ImportRejected(errors)
    index: int
    start = 0
    if header:
        if not rows:
            raise ImportRejected([RowError(1, "the file is empty")])
        names = [cell.strip().lower() for cell in rows[0][1]]
        start = 1
        if isinstance(column, str):
            if column.strip().lower() not in names:
                raise ImportRejected(
                    [RowError(rows[0][0], f"no column named {printable(column)!r}")]
                )
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
        if len(cell) > _MAX_NUMBER_CELL:
            errors.append(RowError(line, f"cell longer than {_MAX_NUMBER_CELL} characters"))
            continue
        entries.append(CallListEntry(cell))
    if errors:
        raise ImportRejected(errors)
    return entries


def _check_row(line: int, cells: list[str], limits: ImportLimits) -> RowError | None:
    if len(cells) > limits.max_columns:
        return RowError(line, f"more than {limits.max_columns} columns")
    for number, cell in enumerate(cells, start=1):
        if len(cell) > limits.max_cell_chars:
            return RowError(
                line, f"column {number}: cell longer than {limits.max_cell_chars} characters"
            )
        if "\x00" in cell:
            return RowError(line, f"column {number}: cell holds a NUL character")
        if not cell.isascii():
            try:
                cell.encode("utf-8")
            except UnicodeEncodeError:
                return RowError(line, f"column {number}: cell is not valid Unicode")
    return None


def _too_many_rows(line: int, limits: ImportLimits) -> ImportRejected:
    return ImportRejected([RowError(line, f"more than {limits.max_rows} rows")])


def _csv_rows(data: bytes, limits: ImportLimits) -> list[tuple[int, list[str]]]:
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
    return _text_rows(text, dialect, limits)


def _text_rows(
    text: str, dialect: type[csv.Dialect] | csv.Dialect, limits: ImportLimits
) -> list[tuple[int, list[str]]]:
    reader = csv.reader(io.StringIO(text, newline=""), dialect)
    rows: list[tuple[int, list[str]]] = []
    try:
        start = 1
        for cells in reader:
            if len(rows) >= limits.max_rows:
                raise _too_many_rows(reader.line_num, limits)
            # A record is told by the physical line it starts on (a quoted cell may
            # hold line breaks): the line an editor shows it on.
            rows.append((start, cells))
            start = reader.line_num + 1
    except csv.Error as exc:
        # The reader's own refusals (a NUL byte, a field over its size limit).
        message = printable(str(exc))
        raise ImportRejected([RowError(reader.line_num, f"malformed CSV: {message}")]) from None
    return rows


def _xlsx_rows(data: bytes, limits: ImportLimits) -> list[tuple[int, list[str]]]:
    # Imported here: openpyxl is only needed by XLSX imports.
    import zipfile
    from xml.etree.ElementTree import ParseError

    import openpyxl  # type: ignore[import-untyped]

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            parts = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ImportRejected(
            [RowError(1, f"not an XLSX workbook: {printable(str(exc))}")]
        ) from None
    # zipfile never unpacks a member past its declared size (it stops there and the
    # CRC check fails), so the declared sizes bound what openpyxl can unpack.
    if len(parts) > _MAX_XLSX_PARTS:
        raise ImportRejected(
            [RowError(1, f"not an XLSX workbook: more than {_MAX_XLSX_PARTS} parts")]
        )
    unpacked = sum(part.file_size for part in parts)
    if unpacked > limits.max_unpacked_bytes:
        raise ImportRejected(
            [RowError(1, f"the workbook unpacks to more than {limits.max_unpacked_bytes} bytes")]
        )
    try:
        book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except (zipfile.BadZipFile, OSError, KeyError, ValueError, ParseError) as exc:
        raise ImportRejected(
            [RowError(1, f"not an XLSX workbook: {printable(str(exc))}")]
        ) from None
    try:
        if not book.worksheets:
            raise ImportRejected([RowError(1, "the workbook has no sheet")])
        sheet = book.worksheets[0]
        # The declared dimensions would make openpyxl pad every row to the declared
        # width and fill rows up to the declared height; forget them and read only
        # the cells present.
        sheet.reset_dimensions()
        rows: list[tuple[int, list[str]]] = []
        line = 0
        try:
            for line, values in enumerate(sheet.iter_rows(values_only=True), start=1):
                if line > limits.max_rows:
                    raise _too_many_rows(line, limits)
                cells = list(values)
                while cells and cells[-1] is None:
                    cells.pop()
                if len(cells) > limits.max_columns:
                    raise ImportRejected(
                        [RowError(line, f"more than {limits.max_columns} columns")]
                    )
                rows.append((line, [_cell_text(v) for v in cells]))
        except (ParseError, ValueError, KeyError, TypeError, OSError, zipfile.BadZipFile) as exc:
            raise ImportRejected(
                [RowError(line + 1, f"unreadable sheet: {printable(str(exc))}")]
            ) from None
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
