"""Map TOML key paths to the line they are written on.

``tomllib`` returns plain data without positions, so this scanner walks the text once more to
tell an error message which line to point at. It understands what a hand-written config
uses: ``[table]`` and ``[[array.of.tables]]`` headers (counting occurrences for the index),
bare, quoted and dotted keys, and values spanning lines (multi-line strings and arrays).
Elements of arrays and keys of inline tables get their own line too. It is only run on text
``tomllib`` has accepted; should it still meet something it does not follow, it stops and
keeps what it has, since a missing line number costs far less than a crash.
"""

from __future__ import annotations

import bisect
import contextlib
import re
from collections.abc import Sequence

__all__ = ["KeyPath", "LineIndex", "format_path", "scan_lines"]

KeyPath = tuple[str | int, ...]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_WHITESPACE = " \t"


def format_path(path: Sequence[str | int]) -> str:
    """Render a key path the way messages show it: ``agents[2].extension``."""
    out: list[str] = []
    for segment in path:
        if isinstance(segment, int):
            out.append(f"[{segment}]")
            continue
        name = segment if _BARE_KEY.fullmatch(segment) else _quote(segment)
        out.append(f".{name}" if out else name)
    return "".join(out)


def _quote(key: str) -> str:
    return '"' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'


class LineIndex:
    """Line numbers of the keys of one TOML document, with a fallback to parents."""

    def __init__(self, text: str) -> None:
        self._lines = scan_lines(text)

    def line_of(self, path: Sequence[str | int]) -> int | None:
        """Return the line of ``path``, or of its nearest parent written in the file."""
        key = tuple(path)
        for end in range(len(key), 0, -1):
            line = self._lines.get(key[:end])
            if line is not None:
                return line
        return None


def scan_lines(text: str) -> dict[KeyPath, int]:
    """Return ``{key path: 1-based line}`` for every table, key and array element in ``text``.

    A table defined in several places (an implicit parent, then its own header) keeps the
    first line it appears on.
    """
    scanner = _Scanner(text)
    with contextlib.suppress(_Stop):
        scanner.run()
    return scanner.lines


class _Stop(Exception):
    """The scanner met text it does not understand."""


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.lines: dict[KeyPath, int] = {}
        self._line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
        self._aot_counts: dict[KeyPath, int] = {}
        self._table: KeyPath = ()

    # -- driving -------------------------------------------------------------------------

    def run(self) -> None:
        while True:
            self._skip_blank(newlines=True)
            if self.pos >= len(self.text):
                return
            if self.text.startswith("[[", self.pos):
                self._array_table_header()
            elif self.text[self.pos] == "[":
                self._table_header()
            else:
                self._key_value(self._table)
            self._skip_blank(newlines=False)
            if self.pos < len(self.text) and self.text[self.pos] != "\n":
                raise _Stop

    def _table_header(self) -> None:
        line = self._line()
        self.pos += 1
        keys = self._key()
        self._expect("]")
        self._table = self._resolve(keys, line)

    def _array_table_header(self) -> None:
        line = self._line()
        self.pos += 2
        keys = self._key()
        self._expect("]]")
        array = (*self._resolve(keys[:-1], line), keys[-1])
        index = self._aot_counts.get(array, 0)
        self._aot_counts[array] = index + 1
        self._record(array, line)
        self._table = (*array, index)
        self._record(self._table, line)

    def _resolve(self, keys: Sequence[str], line: int) -> KeyPath:
        # A header naming an array of tables refers to its latest element.
        path: KeyPath = ()
        for key in keys:
            path = (*path, key)
            count = self._aot_counts.get(path)
            if count is not None:
                path = (*path, count - 1)
            self._record(path, line)
        return path

    def _key_value(self, table: KeyPath) -> None:
        line = self._line()
        keys = self._key()
        self._expect("=")
        path = table
        for key in keys:
            path = (*path, key)
            self._record(path, line)
        self._skip_blank(newlines=False)
        self._value(path)

    # -- values --------------------------------------------------------------------------

    def _value(self, path: KeyPath) -> None:
        text, pos = self.text, self.pos
        if text.startswith('"""', pos):
            self._multiline_string('"""', escapes=True)
        elif text.startswith("'''", pos):
            self._multiline_string("'''", escapes=False)
        elif pos < len(text) and text[pos] == '"':
            self._string('"', escapes=True)
        elif pos < len(text) and text[pos] == "'":
            self._string("'", escapes=False)
        elif pos < len(text) and text[pos] == "[":
            self._array(path)
        elif pos < len(text) and text[pos] == "{":
            self._inline_table(path)
        else:
            match = re.compile(r"[^,\]}#\n\r]*").match(text, pos)
            assert match is not None  # the pattern matches the empty string
            if match.end() == pos:
                raise _Stop
            self.pos = match.end()

    def _array(self, path: KeyPath) -> None:
        self.pos += 1
        index = 0
        while True:
            self._skip_blank(newlines=True)
            if self._peek() == "]":
                self.pos += 1
                return
            element = (*path, index)
            self._record(element, self._line())
            self._value(element)
            index += 1
            self._skip_blank(newlines=True)
            if self._peek() == ",":
                self.pos += 1
            elif self._peek() != "]":
                raise _Stop

    def _inline_table(self, path: KeyPath) -> None:
        self.pos += 1
        while True:
            self._skip_blank(newlines=False)
            if self._peek() == "}":
                self.pos += 1
                return
            self._key_value(path)
            self._skip_blank(newlines=False)
            if self._peek() == ",":
                self.pos += 1
            elif self._peek() != "}":
                raise _Stop

    def _string(self, quote: str, *, escapes: bool) -> None:
        pos = self.pos + 1
        while pos < len(self.text):
            char = self.text[pos]
            if escapes and char == "\\":
                pos += 2
                continue
            if char == quote:
                self.pos = pos + 1
                return
            if char == "\n":
                break
            pos += 1
        raise _Stop

    def _multiline_string(self, delimiter: str, *, escapes: bool) -> None:
        pos = self.pos + 3
        while pos < len(self.text):
            if escapes and self.text[pos] == "\\":
                pos += 2
                continue
            if self.text.startswith(delimiter, pos):
                # Up to two quotes may sit just before the closing delimiter.
                end = pos + 3
                while end < len(self.text) and self.text[end] == delimiter[0] and end < pos + 5:
                    end += 1
                self.pos = end
                return
            pos += 1
        raise _Stop

    # -- keys and blanks -----------------------------------------------------------------

    def _key(self) -> list[str]:
        keys: list[str] = []
        while True:
            self._skip_blank(newlines=False)
            char = self._peek()
            if char in ('"', "'"):
                start = self.pos
                self._string(char, escapes=char == '"')
                raw = self.text[start + 1 : self.pos - 1]
                keys.append(_unescape(raw) if char == '"' else raw)
            else:
                match = _BARE_KEY.match(self.text, self.pos)
                if match is None:
                    raise _Stop
                keys.append(match.group())
                self.pos = match.end()
            self._skip_blank(newlines=False)
            if self._peek() != ".":
                return keys
            self.pos += 1

    def _expect(self, token: str) -> None:
        self._skip_blank(newlines=False)
        if not self.text.startswith(token, self.pos):
            raise _Stop
        self.pos += len(token)

    def _skip_blank(self, *, newlines: bool) -> None:
        text = self.text
        while self.pos < len(text):
            char = text[self.pos]
            if char in _WHITESPACE or (newlines and char in "\r\n"):
                self.pos += 1
            elif char == "\r" and text.startswith("\r\n", self.pos):
                # A CRLF file: treat the CR as part of the line ending.
                self.pos += 1
            elif char == "#":
                end = text.find("\n", self.pos)
                self.pos = len(text) if end < 0 else end
            else:
                return

    def _peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def _line(self) -> int:
        return bisect.bisect_right(self._line_starts, self.pos)

    def _record(self, path: KeyPath, line: int) -> None:
        self.lines.setdefault(path, line)


def _unescape(raw: str) -> str:
    # Config keys are plain words; the common escapes are enough to name them in a message.
    return raw.replace('\\"', '"').replace("\\\\", "\\")
