"""JSON from outside, read only as far as it can also be written and stored.

Every input boundary (websocket messages, MQTT payloads, the scale-out gateway's feed,
HTTP bodies) reads JSON through :func:`loads`, which accepts only what the rest of the
system can encode again and keep:

- at most ``max_bytes`` bytes of strict UTF-8;
- nesting at most ``max_depth`` arrays and objects deep (Python's decoder recurses, so
  60 KB of ``[`` would otherwise raise :class:`RecursionError`, which is not a
  :class:`ValueError` and escapes a handler that only expects bad JSON);
- finite numbers only: no ``NaN`` or ``Infinity``, no float that overflows to
  infinity, no integer outside the signed 64-bit range (a 400-digit number in a
  float field would raise :class:`OverflowError` further on);
- strings, keys included, made of Unicode scalar values: a lone UTF-16 surrogate
  (``"\\ud800"``) decodes to a Python ``str`` that cannot be encoded as UTF-8 again,
  so it would break every later send of whatever holds it.

Anything else raises :class:`BadJson`, a :class:`ValueError` whose message says what
was wrong, in words fit for a ``bad_request`` reply. Text from a peer the service
must not refuse (a SIP display name) is cleaned instead, where it is read
(``sip._sipmsg.text``).
"""

from __future__ import annotations

import json
import math
from typing import Any

from .exceptions import BusError

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "INT_MAX",
    "INT_MIN",
    "BadJson",
    "check_text",
    "loads",
]

DEFAULT_MAX_DEPTH = 32
INT_MIN = -(2**63)
INT_MAX = 2**63 - 1
# A decimal literal longer than this cannot be a 64-bit integer; refusing it before
# int() keeps Python's own 4,300-digit limit (a ValueError with another text) out of it.
_MAX_INT_CHARS = 20
_MAX_FLOAT_CHARS = 64


class BadJson(BusError, ValueError):
    """The payload is not JSON this service accepts; the message says why."""


def _refuse_constant(name: str) -> Any:
    raise BadJson(f"{name} is not a number JSON allows")


def _parse_int(text: str) -> int:
    if len(text) > _MAX_INT_CHARS:
        raise BadJson("a number is out of range")
    value = int(text)
    if not INT_MIN <= value <= INT_MAX:
        raise BadJson("a number is out of range")
    return value


def _parse_float(text: str) -> float:
    if len(text) > _MAX_FLOAT_CHARS:
        raise BadJson("a number is out of range")
    value = float(text)
    if not math.isfinite(value):
        raise BadJson("a number is out of range")
    return value


_DECODER = json.JSONDecoder(
    parse_int=_parse_int, parse_float=_parse_float, parse_constant=_refuse_constant
)


def check_text(value: str, *, where: str = "a string") -> str:
    """``value`` if it is made of Unicode scalar values; :class:`BadJson` if not."""
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise BadJson(f"{where} is not valid Unicode") from None
    return value


def loads(
    payload: bytes | bytearray | memoryview | str,
    *,
    max_bytes: int,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> Any:
    """The JSON value in ``payload``, within the limits in this module's docstring.

    ``max_bytes`` applies to the UTF-8 form (a ``str`` is measured as it would be sent).
    Raises :class:`BadJson`; never :class:`RecursionError`, :class:`OverflowError` or
    :class:`UnicodeError`.
    """
    if isinstance(payload, str):
        # A str that is not valid Unicode fails to encode; it was not sent as UTF-8.
        if len(payload) > max_bytes:
            raise BadJson(f"message larger than {max_bytes} bytes")
        try:
            size = len(payload.encode("utf-8"))
        except UnicodeEncodeError:
            raise BadJson("message is not valid UTF-8") from None
        if size > max_bytes:
            raise BadJson(f"message larger than {max_bytes} bytes")
        text = payload
    else:
        if len(payload) > max_bytes:
            raise BadJson(f"message larger than {max_bytes} bytes")
        try:
            text = bytes(payload).decode("utf-8")
        except UnicodeDecodeError:
            raise BadJson("message is not valid UTF-8") from None
    try:
        value = _DECODER.decode(text)
    except BadJson:
        raise
    except RecursionError:
        raise BadJson(f"message nested deeper than {max_depth} levels") from None
    except ValueError:
        raise BadJson("not JSON") from None
    _check_tree(value, max_depth)
    return value


def _check_tree(root: Any, max_depth: int) -> None:
    # Iterative on purpose: the point is to accept no tree a recursive walk would choke on.
    stack: list[tuple[Any, int]] = [(root, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, str):
            check_text(node)
        elif isinstance(node, dict):
            if depth >= max_depth:
                raise BadJson(f"message nested deeper than {max_depth} levels")
            for key, item in node.items():
                check_text(key, where="a key")
                stack.append((item, depth + 1))
        elif isinstance(node, list):
            if depth >= max_depth:
                raise BadJson(f"message nested deeper than {max_depth} levels")
            stack.extend((item, depth + 1) for item in node)
