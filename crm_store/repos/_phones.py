"""Phone rows shared by clients and leads."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from .. import _models as m
from ..dto import Phone
from ..enums import PhoneKind
from ..ids import new_id
from ..phones import normalize_phone

PhoneInput = str | tuple[str, PhoneKind]
"""A number as typed, optionally with its kind (default ``mobile``)."""


def normalise_inputs(numbers: Iterable[PhoneInput], region: str) -> list[tuple[str, PhoneKind]]:
    """Normalise every number (raising :class:`InvalidPhone` on the first bad one) and
    drop repeats, keeping the first kind given."""
    seen: dict[str, PhoneKind] = {}
    for item in numbers:
        raw, kind = (item, PhoneKind.MOBILE) if isinstance(item, str) else item
        seen.setdefault(normalize_phone(raw, region), PhoneKind(kind))
    return list(seen.items())


async def insert_phones(
    conn: AsyncConnection,
    numbers: list[tuple[str, PhoneKind]],
    *,
    client_id: uuid.UUID | None = None,
    lead_id: uuid.UUID | None = None,
) -> list[Phone]:
    """Insert the phone rows and return them as DTOs, ordered as a read returns them
    (by id), so that a caller need not read back what it has just written."""
    return await conn.run_sync(insert_phones_sync, numbers, client_id=client_id, lead_id=lead_id)


def insert_phones_sync(
    conn: Connection,
    numbers: list[tuple[str, PhoneKind]],
    *,
    client_id: uuid.UUID | None = None,
    lead_id: uuid.UUID | None = None,
) -> list[Phone]:
    """:func:`insert_phones` inside a synchronous transaction."""
    if not numbers:
        return []
    phones = sorted(
        (
            Phone(
                id=new_id(),
                number_e164=number,
                kind=kind,
                client_id=client_id,
                lead_id=lead_id,
            )
            for number, kind in numbers
        ),
        key=lambda phone: phone.id,
    )
    conn.execute(
        m.phones.insert(),
        [
            {
                "id": phone.id,
                "number_e164": phone.number_e164,
                "kind": phone.kind,
                "client_id": client_id,
                "lead_id": lead_id,
            }
            for phone in phones
        ],
    )
    return phones
