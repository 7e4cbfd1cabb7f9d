"""Spreadsheets to import, made the way other CRMs export them."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

_SURNAMES = ("Иванов", "Смирнов", "Кузнецов", "Попов", "Васильев", "Петров", "Соколов")
_NAMES = ("Иван", "Алексей", "Мария", "Ольга", "Дмитрий", "Анна", "Сергей")
_SEPARATORS = (", ", "; ", " / ", "\n")


@dataclass(frozen=True, slots=True)
class Sheet:
    data: bytes
    #: The line (1-based, header included) of each bad row, with a word of its reason.
    bad: dict[int, str]
    #: Rows that make a contact.
    good: int
    #: The phone numbers (E.164) of the contact of row ``i`` (0-based among all rows).
    phones: list[list[str]]


def cyrillic_clients(rows: int = 1000, *, encoding: str = "windows-1251") -> Sheet:
    """``rows`` clients with Cyrillic names, ``;``-separated, one phone cell holding
    one or two numbers (separated by ``,`` ``;`` ``/`` or a line break), and three bad
    rows: a number that is not one, a row without a name, an email that is not one."""
    out = io.StringIO(newline="")
    writer = csv.writer(out, delimiter=";", lineterminator="\r\n")
    writer.writerow(["Фамилия", "Имя", "Телефон", "Эл. почта", "Город"])
    line = 2
    bad: dict[int, str] = {}
    phones: list[list[str]] = []
    wrong = {rows // 4: "phone", rows // 2: "name", (3 * rows) // 4: "email"}
    for i in range(rows):
        first = f"+7 912 {i // 10000:03d}-{(i // 100) % 100:02d}-{i % 100:02d}"
        numbers = [first]
        if i % 3 == 0:
            numbers.append(f"+7 913 {i // 10000:03d} {(i // 100) % 100:02d} {i % 100:02d}")
        cell = _SEPARATORS[i % 4].join(numbers)
        surname = f"{_SURNAMES[i % 7]}-{i}"
        email = f"client{i}@example.ru" if i % 2 else ""
        kind = wrong.get(i)
        if kind == "phone":
            cell = "12-34"
        elif kind == "name":
            surname = ""
        elif kind == "email":
            email = "нет почты"
        row = [surname, "" if kind == "name" else _NAMES[i % 7], cell, email, "Москва"]
        writer.writerow(row)
        if kind is not None:
            bad[line] = kind
        e164 = ["+" + "".join(c for c in n if c.isdigit()) for n in numbers]
        phones.append([] if kind is not None else e164)
        line += 1 + cell.count("\n")
    return Sheet(out.getvalue().encode(encoding), bad, rows - len(bad), phones)
