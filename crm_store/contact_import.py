"""Clients and leads out of a spreadsheet: the columns mapped to fields, every row
checked, before anything is written.

:func:`read_drafts` turns a :class:`~crm_store.importing.Table` and a column mapping
into :class:`ContactDraft` values, one per non-empty row, and the bad rows as
:class:`~crm_store.importing.RowError` (line and reason). A row is bad when it has
no name, when one of its phone numbers does not normalise with the store's region
(the number and the reason are named), when an email is not an address, or when a
cell is longer than its field. A cell mapped to phones, emails or tags may hold
several values separated by ``,`` ``;`` ``/`` or line breaks.

What is written is decided by :class:`~crm_store.repos.imports.ImportRepository`,
which finds the duplicates (by phone and email) and writes in one transaction.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from .enums import PhoneKind
from .exceptions import InvalidPhone
from .importing import RowError, Table, printable
from .phones import normalize_phone

__all__ = [
    "FIELDS",
    "ContactDraft",
    "Duplicates",
    "Target",
    "check_mapping",
    "read_drafts",
    "suggest_mapping",
]

Target = Literal["clients", "leads"]
Duplicates = Literal["skip", "update", "create"]

#: The fields a column may be mapped to (and ``custom:<name>`` for a client's
#: custom field); the value is the longest text the field holds.
FIELDS: Final[Mapping[str, int]] = {
    "full_name": 200,
    "first_name": 100,
    "last_name": 100,
    "company": 200,
    "phone": 64 * 8,
    "phone_mobile": 64 * 8,
    "phone_work": 64 * 8,
    "phone_home": 64 * 8,
    "email": 254 * 8,
    "street": 300,
    "postcode": 20,
    "city": 100,
    "region": 100,
    "country": 2,
    "tags": 64 * 16,
    "note": 10_000,
}
_CLIENT_ONLY = frozenset({"tags", "street", "postcode", "city", "region", "country"})
_LEAD_ONLY = frozenset({"note"})
_CUSTOM = "custom:"
_CUSTOM_MAX = 1000
_PHONE_KINDS = {
    "phone": PhoneKind.MOBILE,
    "phone_mobile": PhoneKind.MOBILE,
    "phone_work": PhoneKind.WORK,
    "phone_home": PhoneKind.HOME,
}
_SPLIT = re.compile(r"[,;/\n\r]+")
_TAG_SPLIT = re.compile(r"[,;\n\r]+")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

# Header words (folded) that name each field, in the seeds' languages.
_SYNONYMS: Final[Mapping[str, tuple[str, ...]]] = {
    "full_name": (
        "name",
        "full name",
        "nom complet",
        "imię i nazwisko",
        "фио",
        "имя и фамилия",
        "contact",
        "контакт",
    ),
    "first_name": (
        "first name",
        "firstname",
        "given name",
        "prénom",
        "prenom",
        "imię",
        "imie",
        "имя",
    ),
    "last_name": (
        "last name",
        "lastname",
        "surname",
        "family name",
        "nom",
        "nom de famille",
        "nazwisko",
        "фамилия",
    ),
    "company": (
        "company",
        "organisation",
        "organization",
        "société",
        "societe",
        "entreprise",
        "firma",
        "компания",
        "организация",
    ),
    "phone": (
        "phone",
        "phones",
        "telephone",
        "téléphone",
        "telephones",
        "téléphones",
        "tel",
        "tél",
        "numéro",
        "numer",
        "telefon",
        "телефон",
        "телефоны",
        "номер",
    ),
    "phone_mobile": ("mobile", "cell", "portable", "komórka", "komorka", "мобильный"),
    "phone_work": (
        "work phone",
        "office phone",
        "téléphone pro",
        "telefon służbowy",
        "рабочий телефон",
    ),
    "phone_home": ("home phone", "téléphone domicile", "telefon domowy", "домашний телефон"),
    "email": (
        "email",
        "e-mail",
        "emails",
        "mail",
        "courriel",
        "adres e-mail",
        "почта",
        "эл. почта",
        "электронная почта",
    ),
    "street": ("street", "address", "adresse", "rue", "ulica", "adres", "адрес", "улица"),
    "postcode": ("postcode", "zip", "postal code", "code postal", "kod pocztowy", "индекс"),
    "city": ("city", "town", "ville", "miasto", "город"),
    "region": ("region", "state", "région", "województwo", "регион", "область"),
    "country": ("country", "pays", "kraj", "страна"),
    "tags": ("tags", "tag", "étiquettes", "etiquettes", "tagi", "теги", "метки"),
    "note": (
        "note",
        "notes",
        "comment",
        "commentaire",
        "notatka",
        "uwagi",
        "комментарий",
        "примечание",
    ),
}


@dataclass(frozen=True, slots=True)
class ContactDraft:
    """One row, checked: what a client or lead made of it would hold."""

    line: int
    first_name: str | None = None
    last_name: str | None = None
    company: str | None = None
    phones: tuple[tuple[str, PhoneKind], ...] = ()
    emails: tuple[str, ...] = ()
    address: Mapping[str, str] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    note: str | None = None
    custom: Mapping[str, str] = field(default_factory=dict)

    @property
    def display_name(self) -> str:
        full = " ".join(p for p in (self.first_name, self.last_name) if p)
        return full or self.company or ""


def _fold(text: str) -> str:
    return " ".join(text.replace("_", " ").casefold().split())


def suggest_mapping(header: Sequence[str], target: Target = "clients") -> dict[int, str]:
    """The field each header cell most likely names (columns not recognised are left out,
    and no field is given to two columns)."""
    out: dict[int, str] = {}
    taken: set[str] = set()
    for index, cell in enumerate(header):
        name = _fold(cell)
        for key, words in _SYNONYMS.items():
            if key in taken or not _allowed(key, target):
                continue
            if name == key.replace("_", " ") or name in words:
                out[index] = key
                taken.add(key)
                break
    return out


def _allowed(key: str, target: Target) -> bool:
    if key.startswith(_CUSTOM):
        return target == "clients"
    if target == "leads":
        return key not in _CLIENT_ONLY
    return key not in _LEAD_ONLY


def check_mapping(mapping: Mapping[int, str], width: int, target: Target) -> list[str]:
    """What is wrong with ``mapping`` for a table ``width`` columns wide, as
    ``"<column>: <reason>"`` texts (empty: nothing)."""
    problems: list[str] = []
    seen: dict[str, int] = {}
    for column, key in sorted(mapping.items()):
        where = f"{column}"
        if column < 0 or column >= max(width, 1):
            problems.append(f"{where}: the file has no column {column + 1}")
            continue
        if key.startswith(_CUSTOM):
            if not key[len(_CUSTOM) :].strip() or len(key) > 64 + len(_CUSTOM):
                problems.append(f"{where}: a custom field needs a name of 1 to 64 characters")
                continue
        elif key not in FIELDS:
            problems.append(f"{where}: unknown field {printable(key)!r}")
            continue
        if not _allowed(key, target):
            problems.append(f"{where}: {target} have no field {key!r}")
            continue
        repeatable = key in _PHONE_KINDS or key in ("email", "tags")
        if key in seen and not repeatable:
            problems.append(f"{where}: {key!r} is already column {seen[key] + 1}")
            continue
        seen[key] = column
    if not any(k in seen for k in ("full_name", "first_name", "last_name", "company")):
        problems.append(
            "mapping: map a column to a name (full name, first or last name) or a company"
        )
    return problems


def read_drafts(
    table: Table,
    mapping: Mapping[int, str],
    *,
    region: str,
    header: bool = True,
) -> tuple[list[ContactDraft], list[RowError]]:
    """The drafts of every non-empty row of ``table`` (after the header if
    ``header``), and every bad row with its reason. ``mapping`` must have passed
    :func:`check_mapping`."""
    drafts: list[ContactDraft] = []
    errors: list[RowError] = []
    rows = table.rows[1:] if header else table.rows
    items = sorted(mapping.items())
    cache: dict[str, str | InvalidPhone] = {}
    for line, cells in rows:
        if not any(c.strip() for c in cells):
            continue
        try:
            drafts.append(_draft(line, cells, items, region, cache))
        except _Bad as bad:
            errors.append(RowError(line, str(bad)))
    return drafts, errors


class _Bad(Exception):
    pass


def _draft(
    line: int,
    cells: list[str],
    items: list[tuple[int, str]],
    region: str,
    cache: dict[str, str | InvalidPhone],
) -> ContactDraft:
    values: dict[str, Any] = {}
    phones: dict[str, PhoneKind] = {}
    emails: dict[str, None] = {}
    tags: dict[str, None] = {}
    address: dict[str, str] = {}
    custom: dict[str, str] = {}
    for column, key in items:
        cell = cells[column].strip() if column < len(cells) else ""
        if not cell:
            continue
        if key.startswith(_CUSTOM):
            if len(cell) > _CUSTOM_MAX:
                raise _Bad(f"column {column + 1}: longer than {_CUSTOM_MAX} characters")
            custom[key[len(_CUSTOM) :].strip()] = cell
            continue
        limit = FIELDS[key]
        if len(cell) > limit:
            raise _Bad(f"column {column + 1} ({key}): longer than {limit} characters")
        if key in _PHONE_KINDS:
            for raw in _SPLIT.split(cell):
                raw = raw.strip()
                if not raw:
                    continue
                found = cache.get(raw)
                if found is None:
                    try:
                        found = normalize_phone(raw, region)
                    except InvalidPhone as exc:
                        found = exc
                    cache[raw] = found
                if isinstance(found, InvalidPhone):
                    raise _Bad(f"phone {printable(raw)!r}: {found.reason}")
                phones.setdefault(found, _PHONE_KINDS[key])
        elif key == "email":
            for raw in _SPLIT.split(cell):
                address_text = raw.strip()
                if not address_text:
                    continue
                if len(address_text) > 254 or not _EMAIL.match(address_text):
                    raise _Bad(f"email {printable(address_text)!r}: not an email address")
                emails.setdefault(address_text.lower(), None)
        elif key == "tags":
            for raw in _TAG_SPLIT.split(cell):
                tag = raw.strip()
                if len(tag) > 64:
                    raise _Bad(f"tag {printable(tag[:20])!r}…: longer than 64 characters")
                if tag:
                    tags.setdefault(tag, None)
        elif key == "country":
            if not re.fullmatch(r"[A-Za-z]{2}", cell):
                raise _Bad(f"country {printable(cell)!r}: not a two-letter country code")
            address[key] = cell.upper()
        elif key in ("street", "postcode", "city", "region"):
            address[key] = cell
        elif key == "full_name":
            first, _, last = cell.partition(" ")
            values.setdefault("first_name", first)
            if last.strip():
                values.setdefault("last_name", last.strip())
        else:
            values[key] = cell
    draft = ContactDraft(
        line=line,
        first_name=values.get("first_name"),
        last_name=values.get("last_name"),
        company=values.get("company"),
        phones=tuple(phones.items()),
        emails=tuple(emails),
        address=address,
        tags=tuple(tags),
        note=values.get("note"),
        custom=custom,
    )
    if not draft.display_name:
        raise _Bad("no name: the name and company cells are empty")
    return draft
