"""A wrapper that keeps secret values out of reprs, logs, dumps and error messages."""

from __future__ import annotations

import hmac
from typing import Any, Final

from pydantic import GetCoreSchemaHandler
from pydantic_core import PydanticCustomError, core_schema

__all__ = ["MASK", "Secret"]

MASK: Final = "**********"


class Secret:
    """A secret string (SIP password, database password).

    ``str()`` and ``repr()`` give ``'**********'``; only :meth:`reveal` returns the value, so
    that printing a config, logging it or dumping it can never leak it by accident.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """Return the secret value itself, for the one place that must send it."""
        return self._value

    def __repr__(self) -> str:
        return repr(MASK)

    def __str__(self) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        # Constant-time, so that comparing a submitted password reveals nothing by timing.
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source_type: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls._coerce,
            serialization=core_schema.plain_serializer_function_ser_schema(
                lambda _value: MASK, when_used="always"
            ),
        )

    @classmethod
    def _coerce(cls, value: object) -> Secret:
        if isinstance(value, Secret):
            return value
        if not isinstance(value, str):
            raise PydanticCustomError("string_type", "must be a string")
        if not value:
            raise PydanticCustomError("secret_empty", "must not be empty")
        return cls(value)
