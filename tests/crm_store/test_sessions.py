"""Passwords, browser sessions, lock-out and websocket tickets, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from crm_store import InvalidPassword, LoginOutcome, NotFound, Role, Store, User, new_id
from crm_store import _models as m
from crm_store._types import utcnow
from crm_store.repos.sessions import (
    ABSOLUTE_TIMEOUT,
    IDLE_TIMEOUT,
    LOCKOUT,
    MAX_FAILED_LOGINS,
)

PASSWORD = "correct horse battery"


async def _user(store: Store, username: str = "alice", *, password: str | None = PASSWORD) -> User:
    user = await store.users.add(username, username.title(), Role.AGENT)
    if password is not None:
        await store.users.set_password(user.id, password)
    return user


async def _row(store: Store, table: str, **where: object) -> dict[str, object]:
    t = m.metadata.tables[table]
    async with store.engine.connect() as conn:
        found = (
            (await conn.execute(select(t).where(*(t.c[k] == v for k, v in where.items()))))
            .mappings()
            .one()
        )
    return dict(found)


async def _set(store: Store, table: str, key: object, **values: object) -> None:
    t = m.metadata.tables[table]
    async with store.engine.begin() as conn:
        await conn.execute(update(t).where(t.c.id == key).values(**values))


async def test_password_is_stored_as_argon2_and_audited_without_the_hash(store: Store) -> None:
    user = await _user(store)
    row = await _row(store, "users", id=user.id)
    stored = str(row["password_hash"])
    assert stored.startswith("$argon2id$")
    assert PASSWORD not in stored
    entries = [
        e for e in await store.audit.for_entity("user", user.id) if e.action == "set_password"
    ]
    assert len(entries) == 1
    assert stored not in repr(entries[0].changes)
    assert "password_hash" not in entries[0].changes


async def test_short_password_is_refused_and_nothing_changes(store: Store) -> None:
    user = await _user(store, password=None)
    with pytest.raises(InvalidPassword, match="at least 8"):
        await store.users.set_password(user.id, "short")
    assert (await _row(store, "users", id=user.id))["password_hash"] is None
    with pytest.raises(NotFound):
        await store.users.set_password(new_id(), PASSWORD)


async def test_login_opens_a_session_found_by_its_token(store: Store) -> None:
    user = await _user(store)
    result = await store.sessions.login("alice", PASSWORD, address="192.0.2.7", user_agent="X")
    assert result.outcome is LoginOutcome.OK
    assert result.token is not None
    assert result.token.startswith("sbs_")
    assert result.session is not None
    assert result.session.expires_at - result.session.created_at == ABSOLUTE_TIMEOUT
    found = await store.sessions.get(result.token)
    assert found is not None
    assert found[0].id == user.id
    assert found[1].id == result.session.id
    assert found[1].csrf_token == result.session.csrf_token
    # Only the hash of the token is stored.
    row = await _row(store, "web_sessions", id=result.session.id)
    assert result.token not in row.values()
    assert row["address"] == "192.0.2.7"


async def test_wrong_password_unknown_user_and_no_password_answer_alike(store: Store) -> None:
    await _user(store)
    await _user(store, "bob", password=None)
    answers = [
        await store.sessions.login("alice", "wrong password", address=None),
        await store.sessions.login("nobody", PASSWORD, address=None),
        await store.sessions.login("bob", PASSWORD, address=None),
    ]
    assert {a.outcome for a in answers} == {LoginOutcome.WRONG_CREDENTIALS}
    assert all(a.token is None and a.user is None and a.retry_after is None for a in answers)


async def test_disabled_user_cannot_log_in_and_loses_open_sessions(store: Store) -> None:
    user = await _user(store)
    opened = await store.sessions.login("alice", PASSWORD, address=None)
    assert opened.token is not None
    await store.users.set_active(user.id, False)
    assert await store.sessions.get(opened.token) is None
    refused = await store.sessions.login("alice", PASSWORD, address=None)
    assert refused.outcome is LoginOutcome.WRONG_CREDENTIALS


async def test_five_wrong_passwords_lock_the_name_even_for_the_right_one(store: Store) -> None:
    user = await _user(store)
    for _ in range(MAX_FAILED_LOGINS):
        wrong = await store.sessions.login("alice", "not it at all", address=None)
        assert wrong.outcome is LoginOutcome.WRONG_CREDENTIALS
    locked = await store.sessions.login("alice", PASSWORD, address=None)
    assert locked.outcome is LoginOutcome.LOCKED
    assert locked.retry_after is not None
    assert 0 < locked.retry_after <= LOCKOUT.total_seconds()
    assert locked.token is None
    # The lock is in the store: another store on the same database sees it.
    other = await Store.open(str(store.engine.url.render_as_string(hide_password=False)))
    try:
        again = await other.sessions.login("alice", PASSWORD, address=None)
        assert again.outcome is LoginOutcome.LOCKED
    finally:
        await other.aclose()
    assert [e.action for e in await store.audit.for_entity("user", user.id)][-1] == "lock"
    # Once the lock is over the right password works and the count starts again.
    await _set(store, "users", user.id, locked_until=utcnow() - timedelta(seconds=1))
    assert (await store.sessions.login("alice", PASSWORD, address=None)).ok
    assert (await _row(store, "users", id=user.id))["failed_logins"] == 0


async def test_a_success_resets_the_count_of_wrong_passwords(store: Store) -> None:
    await _user(store)
    for _ in range(MAX_FAILED_LOGINS - 1):
        await store.sessions.login("alice", "nope nope", address=None)
    assert (await store.sessions.login("alice", PASSWORD, address=None)).ok
    for _ in range(MAX_FAILED_LOGINS - 1):
        await store.sessions.login("alice", "nope nope", address=None)
    assert (await store.sessions.login("alice", PASSWORD, address=None)).ok


async def test_unknown_user_is_locked_out_like_a_known_one(store: Store) -> None:
    for _ in range(MAX_FAILED_LOGINS):
        wrong = await store.sessions.login("ghost", "whatever1", address=None)
        assert wrong.outcome is LoginOutcome.WRONG_CREDENTIALS
    assert (await store.sessions.login("ghost", "whatever1", address=None)).outcome is (
        LoginOutcome.LOCKED
    )


async def test_concurrent_wrong_passwords_all_count(store: Store) -> None:
    user = await _user(store)
    await asyncio.gather(
        *(
            store.sessions.login("alice", "wrong guess", address=None)
            for _ in range(MAX_FAILED_LOGINS)
        )
    )
    row = await _row(store, "users", id=user.id)
    assert row["locked_until"] is not None


async def test_logout_revokes_the_session_once(store: Store) -> None:
    await _user(store)
    opened = await store.sessions.login("alice", PASSWORD, address=None)
    assert opened.token is not None
    assert await store.sessions.logout(opened.token) is True
    assert await store.sessions.get(opened.token) is None
    assert await store.sessions.logout(opened.token) is False
    assert await store.sessions.logout("sbs_unknown") is False


async def test_session_ends_when_idle_or_too_old(store: Store) -> None:
    await _user(store)
    idle = await store.sessions.login("alice", PASSWORD, address=None)
    old = await store.sessions.login("alice", PASSWORD, address=None)
    assert idle.token
    assert idle.session
    assert old.token
    assert old.session
    now = utcnow()
    await _set(store, "web_sessions", idle.session.id, last_seen_at=now - IDLE_TIMEOUT)
    await _set(store, "web_sessions", old.session.id, expires_at=now - timedelta(seconds=1))
    assert await store.sessions.get(idle.token) is None
    assert await store.sessions.get(old.token) is None


async def test_last_seen_is_written_at_most_once_a_minute(store: Store) -> None:
    await _user(store)
    opened = await store.sessions.login("alice", PASSWORD, address=None)
    assert opened.token
    assert opened.session
    first = opened.session.last_seen_at
    found = await store.sessions.get(opened.token)
    assert found is not None
    assert (await _row(store, "web_sessions", id=opened.session.id))["last_seen_at"] == first
    earlier = utcnow() - timedelta(minutes=2)
    await _set(store, "web_sessions", opened.session.id, last_seen_at=earlier)
    await store.sessions.get(opened.token)
    seen = (await _row(store, "web_sessions", id=opened.session.id))["last_seen_at"]
    assert isinstance(seen, type(earlier))
    assert seen > earlier + timedelta(minutes=1)


async def test_set_password_ends_sessions_and_clears_the_lock(store: Store) -> None:
    user = await _user(store)
    opened = await store.sessions.login("alice", PASSWORD, address=None)
    assert opened.token
    for _ in range(MAX_FAILED_LOGINS):
        await store.sessions.login("alice", "wrong again", address=None)
    await store.users.set_password(user.id, "a new password")
    assert await store.sessions.get(opened.token) is None
    assert (await store.sessions.login("alice", "a new password", address=None)).ok


async def test_ticket_works_once_and_follows_its_session(store: Store) -> None:
    user = await _user(store)
    opened = await store.sessions.login("alice", PASSWORD, address=None)
    assert opened.token
    assert opened.session
    ticket = await store.sessions.issue_ticket(opened.session)
    assert ticket.startswith("sbk_")
    first = await store.users.authenticate(ticket)
    assert first is not None
    assert first.id == user.id
    assert await store.users.authenticate(ticket) is None
    # The socket it opened lasts while the session does.
    assert set(await store.users.token_users([ticket])) == {ticket}
    await store.sessions.logout(opened.token)
    assert await store.users.token_users([ticket]) == {}


async def test_two_sockets_racing_with_one_ticket_only_one_wins(store: Store) -> None:
    await _user(store)
    opened = await store.sessions.login("alice", PASSWORD, address=None)
    assert opened.session
    ticket = await store.sessions.issue_ticket(opened.session)
    results = await asyncio.gather(*(store.users.authenticate(ticket) for _ in range(4)))
    assert sum(r is not None for r in results) == 1


async def test_expired_ticket_is_refused(store: Store) -> None:
    await _user(store)
    opened = await store.sessions.login("alice", PASSWORD, address=None)
    assert opened.session
    ticket = await store.sessions.issue_ticket(opened.session)
    t = m.ws_tickets
    async with store.engine.begin() as conn:
        await conn.execute(update(t).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert await store.users.authenticate(ticket) is None


async def test_ticket_of_a_disabled_user_stops_authenticating(store: Store) -> None:
    user = await _user(store)
    opened = await store.sessions.login("alice", PASSWORD, address=None)
    assert opened.session
    used = await store.sessions.issue_ticket(opened.session)
    assert await store.users.authenticate(used) is not None
    fresh = await store.sessions.issue_ticket(opened.session)
    await store.users.set_active(user.id, False)
    assert await store.users.token_users([used]) == {}
    assert await store.users.authenticate(fresh) is None


async def test_api_token_ticket_lives_as_long_as_the_token(store: Store) -> None:
    user = await _user(store)
    token, plaintext = await store.users.issue_token(user.id, "crm")
    ticket = await store.sessions.issue_token_ticket(plaintext)
    assert ticket is not None
    assert await store.users.authenticate(ticket) is not None
    assert set(await store.users.token_users([ticket, plaintext])) == {ticket, plaintext}
    await store.users.revoke_token(token.id)
    assert await store.users.token_users([ticket, plaintext]) == {}
    assert await store.sessions.issue_token_ticket(plaintext) is None


async def test_tokens_are_not_tickets_and_the_reverse(store: Store) -> None:
    user = await _user(store)
    _, plaintext = await store.users.issue_token(user.id, "crm")
    opened = await store.sessions.login("alice", PASSWORD, address=None)
    assert opened.token
    assert await store.users.authenticate(opened.token) is None
    assert await store.sessions.get(plaintext) is None
    assert await store.users.authenticate("sbk_" + "x" * 43) is None


async def test_sessions_over_are_deleted_at_a_log_in(store: Store) -> None:
    await _user(store)
    await _user(store, "bob")
    old = await store.sessions.login("bob", PASSWORD, address=None)
    out = await store.sessions.login("alice", PASSWORD, address=None)
    kept = await store.sessions.login("alice", PASSWORD, address=None)
    assert old.session
    assert out.session
    assert out.token
    assert kept.session
    await store.sessions.issue_ticket(old.session)
    await _set(store, "web_sessions", old.session.id, expires_at=utcnow() - timedelta(seconds=1))
    await store.sessions.logout(out.token)
    await store.sessions.login("alice", PASSWORD, address=None)
    t = m.web_sessions
    async with store.engine.connect() as conn:
        left = set((await conn.execute(select(t.c.id))).scalars())
        tickets = (await conn.execute(select(m.ws_tickets.c.id))).all()
    assert old.session.id not in left
    assert out.session.id not in left
    assert kept.session.id in left
    assert tickets == []
