"""The import part of ``bench/crm.py``: 100,000 CSV rows into clients, next to a bare
``executemany`` of the same rows in the same run.

A UTF-8 CSV of ``rows`` clients (a name, one or two phone numbers in one cell, an
email for every other row, a city) is generated in memory, then imported the way
the API does it: :func:`crm_store.importing.read_table` (decode, delimiter, limits),
:func:`crm_store.contact_import.read_drafts` (mapping, phone normalisation, checks),
and :meth:`crm_store.repos.imports.ImportRepository.run` (duplicates looked up, one
transaction writing clients, phones, search terms and the import's history). Each
phase is timed. The baseline writes the same client and phone rows (already
normalised: no parsing, no search terms, no history) with the standard ``sqlite3``
module's ``executemany`` into another migrated database, in one transaction. Both
databases are SQLite files with the store's own settings (WAL).
"""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from crm_store import Store, upgrade
from crm_store.contact_import import read_drafts, suggest_mapping
from crm_store.importing import ImportLimits, read_table

_FIRST = ("Léa", "Hugo", "Chloé", "Louis", "Inès", "Jules", "Manon", "Gabriel")
_LAST = ("Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand")


def make_csv(rows: int) -> bytes:
    """``rows`` clients as a UTF-8 CSV, every number distinct and valid in France."""
    lines = ["nom;prénom;téléphone;email;ville"]
    for i in range(rows):
        tail = f"{(i // 10_000) % 100:02d} {(i // 100) % 100:02d} {i % 100:02d}"
        phones = f"06 {12 + i // 1_000_000:02d} {tail}"
        if i % 2:
            phones += f", 07 {56 + i // 1_000_000:02d} {tail}"
        email = f"client{i}@example.fr" if i % 2 == 0 else ""
        lines.append(f'{_LAST[i % 8]}-{i};{_FIRST[i % 8]};"{phones}";{email};Lyon')
    return ("\n".join(lines) + "\n").encode()


@dataclass
class ImportFigures:
    rows: int
    file_bytes: int
    read_s: float
    check_s: float
    write_s: float
    total_s: float
    bare_s: float
    created: int


async def bench_import(rows: int = 100_000) -> ImportFigures:
    data = make_csv(rows)
    with tempfile.TemporaryDirectory(prefix="sb-bench-import-") as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'import.sqlite3'}"
        await upgrade(url)
        store = await Store.open(url)
        try:
            started = time.perf_counter()
            # The header is a row too: the limit is the rows of the file.
            table = read_table(data, limits=ImportLimits(max_rows=rows + 1))
            read_done = time.perf_counter()
            mapping = suggest_mapping(table.rows[0][1])
            drafts, errors = read_drafts(table, mapping, region=store.region)
            assert not errors, errors[:3]
            check_done = time.perf_counter()
            outcome = await store.imports.run("clients", drafts, "skip", rows=rows)
            done = time.perf_counter()
        finally:
            await store.aclose()
        bare = Path(tmp) / "bare.sqlite3"
        await upgrade(f"sqlite+aiosqlite:///{bare}")
        bare_s = await asyncio.to_thread(_bare, bare, drafts)
    return ImportFigures(
        rows=rows,
        file_bytes=len(data),
        read_s=read_done - started,
        check_s=check_done - read_done,
        write_s=done - check_done,
        total_s=done - started,
        bare_s=bare_s,
        created=outcome.record.created,
    )


def _bare(path: Path, drafts: list[Any]) -> float:
    """The same clients and phones with ``executemany``, in one transaction."""
    now = datetime.now(UTC).replace(tzinfo=None).isoformat(sep=" ")
    clients: list[tuple[Any, ...]] = []
    phones: list[tuple[Any, ...]] = []
    for d in drafts:
        cid = uuid.uuid4().hex
        clients.append(
            (cid, "person", d.first_name, d.last_name, d.display_name, "[]", "{}", "shared",
             now, now)
        )  # fmt: skip
        phones.extend((uuid.uuid4().hex, n, k.value, cid) for n, k in d.phones)
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        started = time.perf_counter()
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO clients (id, kind, first_name, last_name, display_name, emails,"
            " custom_fields, visibility, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            clients,
        )
        db.executemany(
            "INSERT INTO phones (id, number_e164, kind, client_id) VALUES (?, ?, ?, ?)", phones
        )
        db.execute("COMMIT")
        return time.perf_counter() - started
    finally:
        db.close()
