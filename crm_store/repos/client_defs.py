"""The client fields and tags admins define: what the card shows and the list filters."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from .. import _models as m
from .._base import Actor, Database, audit, conflict_from
from .._types import utcnow
from ..enums import CustomFieldType
from ..exceptions import NotFound

__all__ = ["CustomFieldDef", "DefinitionRepository", "FieldValueError", "check_field_values"]

_KEY = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
#: Longest text value of a custom field.
TEXT_MAX = 1000


class FieldValueError(ValueError):
    """A custom field value that does not fit its definition; ``key`` names it."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True, slots=True)
class CustomFieldDef:
    key: str
    label: str
    type: CustomFieldType
    choices: tuple[str, ...]
    position: int


def check_field_values(defs: Iterable[CustomFieldDef], values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` checked against the definitions and converted to what is stored
    (numbers as numbers, days as ``YYYY-MM-DD``); an empty value removes the field.
    Raises :class:`FieldValueError` on an unknown key or a value of the wrong kind."""
    by_key = {d.key: d for d in defs}
    out: dict[str, Any] = {}
    for key, raw in values.items():
        found = by_key.get(key)
        if found is None:
            raise FieldValueError(key, f"no custom field {key!r} is defined")
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            continue
        if found.type is CustomFieldType.NUMBER:
            try:
                number = float(raw) if not isinstance(raw, bool) else None
            except (TypeError, ValueError):
                number = None
            if number is None or number != number or number in (float("inf"), float("-inf")):
                raise FieldValueError(key, f"{found.label}: not a number")
            out[key] = int(number) if number.is_integer() and abs(number) < 2**53 else number
        elif found.type is CustomFieldType.DATE:
            try:
                out[key] = date.fromisoformat(str(raw)).isoformat()
            except ValueError:
                raise FieldValueError(key, f"{found.label}: not a day (YYYY-MM-DD)") from None
        elif found.type is CustomFieldType.CHOICE:
            if str(raw) not in found.choices:
                raise FieldValueError(key, f"{found.label}: not one of the choices")
            out[key] = str(raw)
        else:
            text = str(raw).strip()
            if len(text) > TEXT_MAX:
                raise FieldValueError(key, f"{found.label}: over {TEXT_MAX} characters")
            out[key] = text
    return out


class DefinitionRepository:
    """Custom client fields (text, number, date, choice) and defined tags."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def fields(self) -> list[CustomFieldDef]:
        f = m.custom_field_defs
        async with self._db.read() as conn:
            rows = (await conn.execute(select(f).order_by(f.c.position, f.c.key))).mappings()
            return [
                CustomFieldDef(
                    r["key"], r["label"], r["type"], tuple(r["choices"] or ()), r["position"]
                )
                for r in rows
            ]

    async def define_field(
        self,
        key: str,
        label: str,
        type: CustomFieldType,
        *,
        choices: Iterable[str] = (),
        actor: Actor = None,
    ) -> CustomFieldDef:
        """Define a field; ``key`` is lower-case letters, digits and ``_``. A choice
        field needs its choices; :class:`Conflict` if ``key`` is taken."""
        kind = CustomFieldType(type)
        if not _KEY.match(key):
            raise ValueError("key: lower-case letters, digits and _, starting with a letter")
        if not label.strip():
            raise ValueError("label: must not be blank")
        options = list(dict.fromkeys(c.strip() for c in choices if c.strip()))
        if kind is CustomFieldType.CHOICE and not options:
            raise ValueError("choices: a choice field needs at least one choice")
        if kind is not CustomFieldType.CHOICE:
            options = []
        f = m.custom_field_defs
        try:
            async with self._db.write() as conn:
                position = int(await conn.scalar(select(func.count()).select_from(f)) or 0)
                await conn.execute(
                    f.insert().values(
                        key=key,
                        label=label.strip(),
                        type=kind,
                        choices=options,
                        position=position,
                        created_at=utcnow(),
                    )
                )
                await audit(
                    conn,
                    actor=actor,
                    entity_type="custom_field",
                    entity_id=key,
                    action="create",
                    changes={"label": label.strip(), "type": kind, "choices": options},
                )
        except IntegrityError as exc:
            raise conflict_from(exc, f"a field {key!r} exists") from None
        return CustomFieldDef(key, label.strip(), kind, tuple(options), position)

    async def remove_field(self, key: str, *, actor: Actor = None) -> None:
        """Remove a field's definition; the values stay in the clients' rows, unseen."""
        f = m.custom_field_defs
        async with self._db.write() as conn:
            result = await conn.execute(delete(f).where(f.c.key == key))
            if result.rowcount == 0:
                raise NotFound("custom field", key)
            await audit(
                conn, actor=actor, entity_type="custom_field", entity_id=key, action="delete"
            )

    async def tags(self) -> list[str]:
        t = m.tag_defs
        async with self._db.read() as conn:
            return list((await conn.execute(select(t.c.name).order_by(t.c.name))).scalars())

    async def define_tag(self, name: str, *, actor: Actor = None) -> str:
        """Define a tag (1 to 64 characters, trimmed); defining it again does nothing."""
        tag = name.strip()
        if not 1 <= len(tag) <= 64:
            raise ValueError("name: 1 to 64 characters")
        t = m.tag_defs
        async with self._db.write() as conn:
            if await conn.scalar(select(func.count()).select_from(t).where(t.c.name == tag)):
                return tag
            await conn.execute(t.insert().values(name=tag, created_at=utcnow()))
            await audit(conn, actor=actor, entity_type="tag", entity_id=tag, action="create")
        return tag

    async def remove_tag(self, name: str, *, actor: Actor = None) -> None:
        """Remove a tag's definition; clients keep the tag until it is taken off."""
        t = m.tag_defs
        async with self._db.write() as conn:
            result = await conn.execute(delete(t).where(t.c.name == name))
            if result.rowcount == 0:
                raise NotFound("tag", name)
            await audit(conn, actor=actor, entity_type="tag", entity_id=name, action="delete")
