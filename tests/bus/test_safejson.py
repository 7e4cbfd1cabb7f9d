"""The bounded JSON reader every input boundary uses."""

from __future__ import annotations

import json

import pytest

from bus.safejson import BadJson, check_text, loads


def test_ordinary_message_is_read() -> None:
    payload = json.dumps({"id": "1", "args": {"n": [1, 2.5, None, True, "é"]}}).encode()
    assert loads(payload, max_bytes=1024) == {
        "id": "1",
        "args": {"n": [1, 2.5, None, True, "é"]},
    }


def test_sixty_kilobytes_of_brackets_is_refused_not_a_recursion_error() -> None:
    with pytest.raises(BadJson, match="nested deeper"):
        loads(b"[" * 60_000, max_bytes=100_000)


def test_depth_limit_is_exact() -> None:
    assert loads("[" * 4 + "]" * 4, max_bytes=100, max_depth=4) == [[[[]]]]
    with pytest.raises(BadJson, match="nested deeper than 4"):
        loads("[" * 5 + "]" * 5, max_bytes=100, max_depth=4)
    with pytest.raises(BadJson, match="nested deeper than 2"):
        loads('{"a": {"b": {}}}', max_bytes=100, max_depth=2)


@pytest.mark.parametrize(
    "text",
    ["NaN", "[Infinity]", '{"x": -Infinity}', "1e400", "9" * 400, str(2**63), "-" + "9" * 20],
)
def test_numbers_that_cannot_be_carried_are_refused(text: str) -> None:
    with pytest.raises(BadJson, match=r"out of range|not a number"):
        loads(text, max_bytes=1000)


def test_int64_bounds_are_accepted() -> None:
    assert loads(f"[{2**63 - 1}, {-(2**63)}]", max_bytes=100) == [2**63 - 1, -(2**63)]


@pytest.mark.parametrize("text", ['"\\ud800"', '{"\\udfff": 1}', '["ok", {"r": "a\\ud83d"}]'])
def test_lone_surrogates_are_refused(text: str) -> None:
    with pytest.raises(BadJson, match="not valid Unicode"):
        loads(text, max_bytes=100)


def test_a_surrogate_pair_is_one_valid_character() -> None:
    assert loads('"\\ud83d\\ude00"', max_bytes=100) == "\U0001f600"


def test_size_is_counted_in_utf8_bytes() -> None:
    with pytest.raises(BadJson, match="larger than 4 bytes"):
        loads('"éé"', max_bytes=4)
    with pytest.raises(BadJson, match="larger than 4 bytes"):
        loads(b"12345", max_bytes=4)


def test_bytes_that_are_not_utf8_are_refused() -> None:
    with pytest.raises(BadJson, match="not valid UTF-8"):
        loads(b'"\xff"', max_bytes=100)


def test_not_json_is_refused() -> None:
    with pytest.raises(BadJson, match="not JSON"):
        loads("{", max_bytes=100)


def test_check_text() -> None:
    assert check_text("Zoë") == "Zoë"
    with pytest.raises(BadJson, match="reason is not valid Unicode"):
        check_text("\ud800", where="reason")
