"""The demo data set: what it holds, and that seeding twice changes nothing."""

from __future__ import annotations

import stat
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from crm_store import LoginOutcome, Role, Store, Visibility, upgrade
from crm_store._models import metadata
from lab.seed import (
    CALL_LIST_NAME,
    call_list_numbers,
    demo_users,
    known_numbers,
    load_or_create_passwords,
    seed,
)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'seed.sqlite3'}"
    await upgrade(url)
    async with await Store.open(url) as opened:
        yield opened


async def _dump(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in a stable order."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    async with store.engine.connect() as conn:
        for table in metadata.sorted_tables:
            rows = (await conn.execute(select(table))).all()
            out[table.name] = sorted((tuple(map(repr, r)) for r in rows), key=repr)
    return out


def _passwords(tmp_path: Path) -> dict[str, str]:
    return load_or_create_passwords(tmp_path / "passwords", [u.user for u in demo_users()])


async def test_seed_writes_a_believable_data_set(store: Store, tmp_path: Path) -> None:
    passwords = _passwords(tmp_path)
    report = await seed(store, passwords=passwords, recordings=tmp_path / "rec")
    assert report.created == {
        "users": 5,
        "tags": 8,
        "custom_fields": 3,
        "clients": 8,
        "leads": 3,
        "tasks": 4,
        "call_lists": 1,
        "calls": 10,
    }
    users = {u.username: u for u in await store.users.list()}
    assert {n: (u.role, u.extension) for n, u in users.items()} == {
        "alice": (Role.AGENT, "1001"),
        "bob": (Role.AGENT, "1002"),
        "chloe": (Role.AGENT, "1003"),
        "samira": (Role.SUPERVISOR, None),
        "admin": (Role.ADMIN, None),
    }
    # Every user logs in with the generated password.
    for name, password in passwords.items():
        login = await store.sessions.login(name, password, address=None)
        assert login.outcome is LoginOutcome.OK, name

    # Known numbers are recognised; one client is private to bob; leads are unowned.
    numbers = known_numbers()
    lea = await store.lookup_caller(numbers["Léa Fontaine"])
    assert lea is not None
    assert lea.client is not None
    assert lea.client.visibility is Visibility.PRIVATE
    assert lea.client.responsible_user_id == users["bob"].id
    camille = await store.lookup_caller(numbers["Camille Petitjean"])
    assert camille is not None
    assert camille.client is not None
    assert camille.client.company_id is not None
    assert "vip" in camille.client.tags
    pool = await store.leads.pool()
    assert {lead.display_name for lead in pool} == {"Théo Garnier", "Inès Roussel", "Marco Bianchi"}
    assert all(lead.owner_user_id is None for lead in pool)
    # Search finds people by company and by the phone's last digits; bob's private
    # client only for bob.
    hits = await store.contacts.search("kessler", viewer=users["alice"].id, sees_all=False)
    assert {h.display_name for h in hits} >= {"Kessler Logistik GmbH", "Jonas Kessler"}
    tail = numbers["Léa Fontaine"][-4:]
    assert not await store.contacts.search(tail, viewer=users["alice"].id, sees_all=False)
    assert await store.contacts.search(tail, viewer=users["bob"].id, sees_all=False)

    # The call list, pending.
    [(list_id, name, total, done)] = await store.contacts.call_list_progress()
    assert (name, total, done) == (CALL_LIST_NAME, 5, 0)
    items = await store.call_lists.items(list_id)
    assert [i.number_e164 for i in items] == call_list_numbers()

    # History: missed calls, dispositions, recordings that are real WAV files.
    calls = await store.calls.list_recent(limit=50)
    assert len(calls) == 10
    missed = [c for c in calls if c.direction == "inbound" and c.answered_at is None]
    assert len(missed) == 3
    assert sum(1 for c in calls if c.disposition) == 6
    recorded = [c for c in calls if c.recording_status == "ok"]
    assert len(recorded) == 4
    for call in recorded:
        assert call.recording_path is not None
        path = Path(call.recording_path)
        assert path == tmp_path / "rec" / f"{call.id}.wav"
        with wave.open(str(path)) as wav:
            assert wav.getnframes() / wav.getframerate() == pytest.approx(
                call.recording_duration, abs=0.01
            )
    assert all(c.ended_at is not None for c in calls)
    assert all(c.created_at < c.ended_at for c in calls if c.ended_at is not None)


async def test_seeding_twice_changes_nothing(store: Store, tmp_path: Path) -> None:
    passwords = _passwords(tmp_path)
    await seed(store, passwords=passwords, recordings=tmp_path / "rec")
    before = await _dump(store)
    files = {p: p.stat().st_mtime_ns for p in (tmp_path / "rec").iterdir()}
    # Even with other passwords: existing users keep theirs.
    report = await seed(store, passwords={"alice": "another-password"}, recordings=tmp_path / "rec")
    assert report.total == 0
    assert await _dump(store) == before
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "rec").iterdir()} == files
    login = await store.sessions.login("alice", passwords["alice"], address=None)
    assert login.outcome is LoginOutcome.OK


def test_passwords_file_is_private_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "passwords"
    first = load_or_create_passwords(path, ["alice", "bob"])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert set(first) == {"alice", "bob"}
    assert all(len(p) >= 12 for p in first.values())
    again = load_or_create_passwords(path, ["alice", "bob", "chloe"])
    assert (again["alice"], again["bob"]) == (first["alice"], first["bob"])
    assert "chloe" in again
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
