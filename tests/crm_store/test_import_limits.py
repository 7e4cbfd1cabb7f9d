"""Imports read only within their limits, and say which limit a file hit, by line."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from crm_store import ImportRejected, read_numbers
from crm_store.importing import MAX_CELL_CHARS, MAX_COLUMNS, MAX_ROWS, printable

openpyxl = pytest.importorskip("openpyxl")

REPO = Path(__file__).resolve().parents[2]


def _workbook(patch: Callable[[bytes], bytes] = lambda xml: xml) -> bytes:
    """A real two-row workbook (``phone`` / ``0612345678``) whose sheet XML is
    rewritten by ``patch``, as a hostile or broken producer would write it."""
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["phone"])
    sheet.append(["0612345678"])
    saved = io.BytesIO()
    book.save(saved)
    out = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(saved.getvalue())) as src,
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst,
    ):
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename == "xl/worksheets/sheet1.xml":
                data = patch(data)
            dst.writestr(info.filename, data)
    return out.getvalue()


def _declare(ref: bytes) -> Callable[[bytes], bytes]:
    return lambda xml: re.sub(
        rb'<dimension ref="[^"]*" ?/>', b'<dimension ref="' + ref + b'"/>', xml
    )


def _append_rows(rows: bytes) -> Callable[[bytes], bytes]:
    return lambda xml: xml.replace(b"</sheetData>", rows + b"</sheetData>")


def _rejected(data: bytes, format: str = "xlsx") -> list[tuple[int, str]]:
    with pytest.raises(ImportRejected) as rejected:
        read_numbers(data, format=format, column="phone")  # type: ignore[arg-type]
    return [(e.line, e.message) for e in rejected.value.errors]


def test_xlsx_declaring_the_whole_grid_is_refused_within_bounded_memory(tmp_path: Path) -> None:
    # A 5 KB file declaring A1:XFD1048576 with one cell in its last row: read
    # trusting the declaration, a million rows of 16,384 cells each are made up.
    # The reader runs in a child process with 1 GiB of address space so that a
    # regression fails with MemoryError instead of taking the machine down.
    last = b'<row r="1048576"><c r="XFD1048576" t="inlineStr"><is><t>x</t></is></c></row>'
    bomb = tmp_path / "bomb.xlsx"
    bomb.write_bytes(_workbook(lambda xml: _append_rows(last)(_declare(b"A1:XFD1048576")(xml))))
    assert bomb.stat().st_size < 10_000
    script = textwrap.dedent(
        f"""
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
        from crm_store import ImportRejected, read_numbers
        data = open({str(bomb)!r}, "rb").read()
        try:
            read_numbers(data, format="xlsx", column="phone")
        except ImportRejected as exc:
            print(exc)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == f"import rejected: line {MAX_ROWS + 1}: more than {MAX_ROWS} rows"


def test_xlsx_declared_dimensions_do_not_pad_rows(tmp_path: Path) -> None:
    entries = read_numbers(_workbook(_declare(b"A1:XFD1048576")), format="xlsx", column="phone")
    assert [e.number for e in entries] == ["0612345678"]


def test_xlsx_with_more_rows_than_the_limit_is_rejected_at_the_line_that_passes_it() -> None:
    # The declared dimension says two rows; a row far below is still there and must
    # not be silently left out either.
    far = _append_rows(
        b'<row r="200000"><c r="A200000" t="inlineStr"><is><t>0612</t></is></c></row>'
    )
    assert _rejected(_workbook(far)) == [(MAX_ROWS + 1, f"more than {MAX_ROWS} rows")]


def test_xlsx_row_wider_than_the_limit_is_rejected_by_line() -> None:
    wide = _append_rows(
        b'<row r="3"><c r="A3" t="inlineStr"><is><t>0612</t></is></c>'
        b'<c r="XFD3" t="inlineStr"><is><t>x</t></is></c></row>'
    )
    assert _rejected(_workbook(wide)) == [(3, f"more than {MAX_COLUMNS} columns")]


def test_xlsx_unpacking_past_the_limit_is_refused_before_it_is_parsed() -> None:
    # 70 MB of blanks inside the sheet compress to a few dozen KB.
    padded = _workbook(
        lambda xml: xml.replace(b"</sheetData>", b"</sheetData>" + b" " * 70_000_000)
    )
    assert len(padded) < 1_000_000
    [(line, message)] = _rejected(padded)
    assert line == 1
    assert message.startswith("the workbook unpacks to more than")


def test_xlsx_cell_with_a_lone_surrogate_is_rejected_by_line() -> None:
    surrogate = _workbook(lambda xml: xml.replace(b"0612345678", b"06&#55296;12"))
    [(line, message)] = _rejected(surrogate)
    assert line == 2
    assert message.startswith("unreadable sheet")


def test_csv_over_the_byte_limit_is_refused_whole() -> None:
    big = b"phone\n" + b"0612345678\n" * 1_600_000
    assert _rejected(big, "csv") == [(1, "the file is larger than 16777216 bytes")]


def test_csv_with_more_rows_than_the_limit_is_rejected_at_that_line() -> None:
    data = b"phone\n" + b"1\n" * MAX_ROWS
    assert _rejected(data, "csv") == [(MAX_ROWS + 1, f"more than {MAX_ROWS} rows")]


def test_csv_long_cell_in_any_column_lone_surrogate_and_nul_are_rejected_by_line() -> None:
    data = (
        b"phone,note\n0612345678,ok\n0612345679," + b"x" * (MAX_CELL_CHARS + 1) + b"\n"
        b"0612345670,fine\n"
    )
    assert _rejected(data, "csv") == [
        (3, f"column 2: cell longer than {MAX_CELL_CHARS} characters")
    ]
    # A UTF-16 surrogate encoded as if it were a character (CESU-8) is not UTF-8.
    surrogate = b"phone,note\n0612345678,ok\n0612345679,a\xed\xa0\x80b\n"
    assert _rejected(surrogate, "csv") == [(3, "not UTF-8 text")]
    nul = b"phone,note\n0612345678,a\x00b\n"
    [(line, message)] = _rejected(nul, "csv")
    assert line == 2
    assert "NUL" in message


def test_report_text_from_a_file_is_stripped_of_terminal_controls() -> None:
    hostile = "06\x1b[2J12\x9b31m\u202e34\r\n"
    assert printable(hostile) == "06[2J1231m34  "
    with pytest.raises(ImportRejected) as rejected:
        read_numbers(b"phone\n1\n", column="ph\x1b]0;pwned\x07one")
    assert "\x1b" not in str(rejected.value)
    assert "\x07" not in str(rejected.value)
