from __future__ import annotations

from config._lines import LineIndex, format_path, scan_lines

DOC = '''\
# comment
title = "x"   # trailing comment

[site]
id = "main"
"quoted.key" = 1
a.b . c = 2

[[lines]]
extension = "2001"
notes = """
multi-line [not a table]
extension = "fake"
"""

[[lines]]
extension = "2002"
sources = [
  "10.0.0.1",   # first
  "10.0.0.2",
]
inline = { x = 1, y = [1, 2] }

[lines.extra]
k = 'v'

[pbx.nested]
deep = true
'''


def test_tables_keys_and_dotted_keys() -> None:
    lines = scan_lines(DOC)

    assert lines[("title",)] == 2
    assert lines[("site",)] == 4
    assert lines[("site", "id")] == 5
    assert lines[("site", "quoted.key")] == 6
    assert lines[("site", "a")] == 7
    assert lines[("site", "a", "b", "c")] == 7


def test_array_of_tables_counts_occurrences() -> None:
    lines = scan_lines(DOC)

    assert lines[("lines",)] == 9
    assert lines[("lines", 0)] == 9
    assert lines[("lines", 0, "extension")] == 10
    assert lines[("lines", 1)] == 16
    assert lines[("lines", 1, "extension")] == 17
    # A sub-table header belongs to the latest element.
    assert lines[("lines", 1, "extra", "k")] == 25


def test_multiline_string_content_is_not_read_as_keys() -> None:
    lines = scan_lines(DOC)

    assert lines[("lines", 0, "notes")] == 11
    assert ("multi-line [not a table]",) not in lines
    assert lines[("lines", 1, "extension")] == 17


def test_array_elements_and_inline_tables_get_their_lines() -> None:
    lines = scan_lines(DOC)

    assert lines[("lines", 1, "sources")] == 18
    assert lines[("lines", 1, "sources", 0)] == 19
    assert lines[("lines", 1, "sources", 1)] == 20
    assert lines[("lines", 1, "inline", "y", 1)] == 22


def test_missing_key_falls_back_to_nearest_parent() -> None:
    index = LineIndex(DOC)

    assert index.line_of(("pbx", "nested", "missing")) == 27
    assert index.line_of(("pbx", "host")) == 27
    assert index.line_of(("lines", 1, "role")) == 16
    assert index.line_of(("nowhere",)) is None
    assert index.line_of(()) is None


def test_crlf_line_endings() -> None:
    lines = scan_lines('[pbx]\r\nhost = "h"\r\n\r\n[[lines]]\r\nextension = "1"\r\n')

    assert lines[("pbx", "host")] == 2
    assert lines[("lines", 0, "extension")] == 5


def test_unfollowable_text_keeps_what_was_scanned() -> None:
    lines = scan_lines("a = 1\nb = @@@\n")

    assert lines[("a",)] == 1


def test_format_path() -> None:
    assert format_path(("agents", 2, "extension")) == "agents[2].extension"
    assert format_path(("site", "quoted.key")) == 'site."quoted.key"'
    assert format_path(()) == ""
