"""Search terms: what makes contact search an indexed prefix match.

Each client and lead has rows in ``search_terms``: the words of its names and
company, its emails (whole, their parts and their words), all folded (lower
case, accents removed); and, for each phone number, every suffix of its digits
of at least three digits, marked with ``#`` so that only a query of three or
more digits reaches them. "Any part of a phone number" is then a prefix of one
of its suffixes, and "a word of the name" a prefix of a term: both are range
scans of one index, on SQLite and PostgreSQL alike (the column compares bytes).

The rows are rewritten by :func:`reindex_sync` in the transaction of every write
that changes what is searched (the client and lead repositories call it), and
deleted with their owner (foreign keys ``ON DELETE CASCADE``).
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from collections.abc import Iterable

from sqlalchemy import delete, select
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from . import _models as m
from .ids import new_id

__all__ = [
    "MIN_PHONE_DIGITS",
    "PHONE_MARK",
    "TERM_MAX",
    "fold",
    "phone_terms",
    "prefix_range",
    "query_words",
    "reindex",
    "reindex_sync",
    "text_terms",
]

#: Fewest digits a phone search needs (fewer would match almost every number).
MIN_PHONE_DIGITS = 3
#: Longest stored term; longer words are cut (a prefix of the cut still matches).
TERM_MAX = 100
#: Marks the phone-digit terms apart from words.
PHONE_MARK = "#"
_WORD = re.compile(r"\w+")
# Above every character's UTF-8 encoding: the end of a prefix range.
_TOP = "\U0010ffff"


def fold(text: str) -> str:
    """``text`` lower-cased with its accents removed ("Léa" -> "lea")."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def query_words(text: str) -> list[str]:
    """The folded words of a search, each cut to :data:`TERM_MAX`."""
    return [w[:TERM_MAX] for w in _WORD.findall(fold(text))]


def prefix_range(prefix: str) -> tuple[str, str]:
    """``(low, high)`` such that ``low <= term < high`` iff ``term`` starts with ``prefix``."""
    return prefix, prefix + _TOP


def text_terms(names: Iterable[str | None], emails: Iterable[str]) -> set[str]:
    """The terms of names and emails (see the module)."""
    terms: set[str] = set()
    for name in names:
        if name:
            terms.update(_WORD.findall(fold(name)))
    for email in emails:
        folded = fold(email.strip())
        if not folded:
            continue
        local, _, domain = folded.partition("@")
        terms.update(t for t in (folded, local, domain) if t)
        terms.update(_WORD.findall(folded))
    return {t[:TERM_MAX] for t in terms}


def phone_terms(numbers: Iterable[str]) -> set[str]:
    """Every suffix of at least :data:`MIN_PHONE_DIGITS` digits of each number, marked."""
    terms: set[str] = set()
    for number in numbers:
        digits = "".join(c for c in number if c.isdigit())
        for start in range(len(digits) - MIN_PHONE_DIGITS + 1):
            terms.add(PHONE_MARK + digits[start:])
    return terms


def reindex_sync(
    conn: Connection, *, client_id: uuid.UUID | None = None, lead_id: uuid.UUID | None = None
) -> None:
    """Rewrite the terms of one client or lead from its stored row and phones,
    inside the caller's transaction. An owner that no longer exists gets none."""
    if (client_id is None) == (lead_id is None):
        raise ValueError("pass exactly one of client_id and lead_id")
    t, p = m.search_terms, m.phones
    if client_id is not None:
        owner_col, owner_id, table = t.c.client_id, client_id, m.clients
        phone_owner = p.c.client_id
    else:
        assert lead_id is not None
        owner_col, owner_id, table = t.c.lead_id, lead_id, m.leads
        phone_owner = p.c.lead_id
    conn.execute(delete(t).where(owner_col == owner_id))
    row = (
        conn.execute(
            select(table.c.display_name, table.c.company_name, table.c.emails).where(
                table.c.id == owner_id
            )
        )
        .mappings()
        .one_or_none()
    )
    if row is None:
        return
    numbers = conn.execute(select(p.c.number_e164).where(phone_owner == owner_id)).scalars()
    terms = text_terms((row["display_name"], row["company_name"]), row["emails"] or ())
    terms |= phone_terms(numbers)
    if terms:
        conn.execute(
            t.insert(),
            [
                {"id": new_id(), "term": term, "client_id": client_id, "lead_id": lead_id}
                for term in sorted(terms)
            ],
        )


async def reindex(
    conn: AsyncConnection,
    *,
    client_id: uuid.UUID | None = None,
    lead_id: uuid.UUID | None = None,
) -> None:
    """:func:`reindex_sync` on an async connection."""

    def run(sync: Connection) -> None:
        reindex_sync(sync, client_id=client_id, lead_id=lead_id)

    await conn.run_sync(run)
