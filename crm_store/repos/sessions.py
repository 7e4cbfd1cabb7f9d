"""Browser sessions: password log-in with lock-out, the session cookie's token, and
the single-use websocket tickets.

Tokens and tickets are 32 random bytes; only their SHA-256 is stored (as for API
tokens), so a copy of the database opens no session. Everything is in the store,
so sessions, lock-outs and tickets hold across restarts and across the processes
sharing the database.

Lifetimes (module constants, documented in docs/operations.md):

- a session ends :data:`IDLE_TIMEOUT` after it was last seen, and in any case
  :data:`ABSOLUTE_TIMEOUT` after the log-in; ``last_seen_at`` is written at most
  once per :data:`LAST_SEEN_RESOLUTION`;
- a ticket must be redeemed within :data:`TICKET_LIFETIME`, once; the websocket
  session it opens then lives as long as the browser session (or the API token)
  it was issued to;
- :data:`MAX_FAILED_LOGINS` wrong passwords in a row lock the user name for
  :data:`LOCKOUT`.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import uuid
from collections.abc import Collection, Mapping
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import and_, case, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from .. import _models as m
from .. import _passwords as passwords
from .._base import Database, audit, user_from
from .._types import utcnow
from ..dto import LoginOutcome, LoginResult, User, WebSession
from ..ids import new_id

__all__ = [
    "ABSOLUTE_TIMEOUT",
    "IDLE_TIMEOUT",
    "LAST_SEEN_RESOLUTION",
    "LOCKOUT",
    "MAX_FAILED_LOGINS",
    "SESSION_PREFIX",
    "TICKET_LIFETIME",
    "TICKET_PREFIX",
    "SessionRepository",
    "is_ticket",
]

log = structlog.get_logger(__name__)

SESSION_PREFIX = "sbs_"
"""Prefix of a session token (the cookie's value)."""

TICKET_PREFIX = "sbk_"
"""Prefix of a websocket ticket."""

IDLE_TIMEOUT = timedelta(hours=12)
"""A session not seen for this long is over: longer than a working day."""

ABSOLUTE_TIMEOUT = timedelta(days=7)
"""No session lasts longer than this after its log-in."""

LAST_SEEN_RESOLUTION = timedelta(minutes=1)
"""``last_seen_at`` is written at most this often per session."""

TICKET_LIFETIME = timedelta(seconds=30)
"""How long a ticket may wait for its websocket."""

MAX_FAILED_LOGINS = 5
"""Wrong passwords in a row that lock a user name..."""

LOCKOUT = timedelta(minutes=15)
"""...for this long."""

# Bound on the user names that do not exist but were tried (in memory, see
# SessionRepository._unknown): a flood of random names must not grow it forever.
_UNKNOWN_NAMES = 10_000
_MAX_SECRET = 128
_IN_CHUNK = 500


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _well_formed(secret: str, prefix: str) -> bool:
    return secret.startswith(prefix) and secret.isascii() and len(secret) <= _MAX_SECRET


def is_ticket(credential: str) -> bool:
    """Whether ``credential`` is written like a websocket ticket."""
    return _well_formed(credential, TICKET_PREFIX)


def _retry_after(until: datetime, now: datetime) -> int:
    return max(1, math.ceil((until - now).total_seconds()))


_S = m.web_sessions
_SESSION_COLUMNS = (
    _S.c.id.label("s_id"),
    _S.c.user_id.label("s_user_id"),
    _S.c.csrf_token.label("s_csrf_token"),
    _S.c.created_at.label("s_created_at"),
    _S.c.last_seen_at.label("s_last_seen_at"),
    _S.c.expires_at.label("s_expires_at"),
    _S.c.revoked_at.label("s_revoked_at"),
    _S.c.address.label("s_address"),
    _S.c.user_agent.label("s_user_agent"),
)


def _session_from(row: Mapping[Any, Any], prefix: str = "") -> WebSession:
    return WebSession(
        id=row[f"{prefix}id"],
        user_id=row[f"{prefix}user_id"],
        csrf_token=row[f"{prefix}csrf_token"],
        created_at=row[f"{prefix}created_at"],
        last_seen_at=row[f"{prefix}last_seen_at"],
        expires_at=row[f"{prefix}expires_at"],
        revoked_at=row[f"{prefix}revoked_at"],
        address=row[f"{prefix}address"],
        user_agent=row[f"{prefix}user_agent"],
    )


def _session_alive(now: datetime) -> Any:
    return and_(
        _S.c.revoked_at.is_(None),
        _S.c.expires_at > now,
        _S.c.last_seen_at > now - IDLE_TIMEOUT,
    )


def _ticket_users(hashes: Collection[str], now: datetime) -> Any:
    """Users of the tickets ``hashes`` whose issuer (session or API token) is alive."""
    k, t, u = m.ws_tickets, m.api_tokens, m.users
    issuer_alive = or_(
        and_(k.c.session_id.is_not(None), _session_alive(now)),
        and_(k.c.api_token_id.is_not(None), t.c.revoked_at.is_(None)),
    )
    return (
        select(u, k.c.ticket_hash)
        .select_from(
            k.outerjoin(_S, _S.c.id == k.c.session_id)
            .outerjoin(t, t.c.id == k.c.api_token_id)
            .join(u, u.c.id == func.coalesce(_S.c.user_id, t.c.user_id))
        )
        .where(k.c.ticket_hash.in_(hashes), u.c.active.is_(True), issuer_alive)
    )


async def revoke_user_sessions(conn: AsyncConnection, user_id: uuid.UUID) -> int:
    """Revoke every open session of the user inside the caller's transaction;
    returns how many were open."""
    result = await conn.execute(
        update(_S)
        .where(_S.c.user_id == user_id, _S.c.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    return int(result.rowcount)


class SessionRepository:
    """Log-in, browser sessions and websocket tickets.

    Every method is one transaction (``login`` may be two: the check is a read, so
    that guesses of unknown names never take the write lock). Cancelling a call
    rolls its transaction back; a password check already running in its thread
    completes and its answer is dropped.
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        # User names that do not exist: wrong "passwords" in a row and lock end.
        # Kept in memory only (there is no row to keep them in); it makes an
        # unknown name answer like a known one, lock-out included, in this process.
        self._unknown: dict[str, tuple[int, datetime | None]] = {}

    async def login(
        self,
        username: str,
        password: str,
        *,
        address: str | None,
        user_agent: str | None = None,
    ) -> LoginResult:
        """Check ``password`` for ``username`` and open a session.

        Answers ``OK`` with the session and its token (to put in the cookie; shown
        this once), ``WRONG_CREDENTIALS`` alike for an unknown user, a wrong
        password, a user without a password and a disabled user (each after the
        same argon2 work), or ``LOCKED`` with ``retry_after`` while the name is
        locked (the password is then not even checked). A wrong password counts
        towards the lock-out; a success resets the count.
        """
        now = utcnow()
        async with self._db.read() as conn:
            row = (
                (await conn.execute(select(m.users).where(m.users.c.username == username)))
                .mappings()
                .one_or_none()
            )
        if row is None:
            return await self._unknown_user(username, password, now)
        locked_until = row["locked_until"]
        if locked_until is not None and locked_until > now:
            return LoginResult(LoginOutcome.LOCKED, retry_after=_retry_after(locked_until, now))
        matches, rehash = await passwords.verify(row["password_hash"], password)
        if not matches or not row["active"]:
            await self._failed(row["id"], username, now)
            return LoginResult(LoginOutcome.WRONG_CREDENTIALS)
        new_hash = await passwords.hash_password(password) if rehash else None
        return await self._open(row["id"], now, address, user_agent, new_hash)

    async def _unknown_user(self, username: str, password: str, now: datetime) -> LoginResult:
        count, until = self._unknown.get(username, (0, None))
        if until is not None and until > now:
            return LoginResult(LoginOutcome.LOCKED, retry_after=_retry_after(until, now))
        await passwords.verify(None, password)
        count += 1
        if len(self._unknown) >= _UNKNOWN_NAMES and username not in self._unknown:
            self._unknown.clear()
        locked = count >= MAX_FAILED_LOGINS
        self._unknown[username] = (0, now + LOCKOUT) if locked else (count, None)
        return LoginResult(LoginOutcome.WRONG_CREDENTIALS)

    async def _failed(self, user_id: uuid.UUID, username: str, now: datetime) -> None:
        u = m.users
        # One statement, so that concurrent failures each count: SET expressions
        # read the row as it was before this update, on SQLite and PostgreSQL.
        locks = u.c.failed_logins + 1 >= MAX_FAILED_LOGINS
        async with self._db.write() as conn:
            left = await conn.scalar(
                update(u)
                .where(u.c.id == user_id)
                .values(
                    failed_logins=case((locks, 0), else_=u.c.failed_logins + 1),
                    locked_until=case((locks, now + LOCKOUT), else_=u.c.locked_until),
                )
                .returning(u.c.failed_logins)
            )
            if left == 0:
                await audit(
                    conn,
                    actor=None,
                    entity_type="user",
                    entity_id=user_id,
                    action="lock",
                    changes={"locked_until": now + LOCKOUT},
                )
        if left == 0:
            log.warning("login_locked", user_id=str(user_id), username=username)
        else:
            log.info("login_failed", user_id=str(user_id), failed_logins=left)

    async def _open(
        self,
        user_id: uuid.UUID,
        now: datetime,
        address: str | None,
        user_agent: str | None,
        new_hash: str | None,
    ) -> LoginResult:
        u = m.users
        token = SESSION_PREFIX + secrets.token_urlsafe(32)
        session_id = new_id()
        values: dict[str, Any] = {
            "id": session_id,
            "user_id": user_id,
            "token_hash": _digest(token),
            "csrf_token": secrets.token_urlsafe(32),
            "created_at": now,
            "last_seen_at": now,
            "expires_at": now + ABSOLUTE_TIMEOUT,
            "revoked_at": None,
            "address": address[:64] if address else None,
            "user_agent": user_agent[:200] if user_agent else None,
        }
        reset: dict[str, Any] = {"failed_logins": 0, "locked_until": None}
        if new_hash is not None:
            reset["password_hash"] = new_hash
        async with self._db.write() as conn:
            # Not locked meanwhile by failures running alongside this check.
            user_row = (
                (
                    await conn.execute(
                        update(u)
                        .where(
                            u.c.id == user_id,
                            u.c.active.is_(True),
                            or_(u.c.locked_until.is_(None), u.c.locked_until <= now),
                        )
                        .values(**reset)
                        .returning(u)
                    )
                )
                .mappings()
                .one_or_none()
            )
            if user_row is None:
                return LoginResult(LoginOutcome.WRONG_CREDENTIALS)
            # Sessions over, with their tickets: anyone's past their absolute end
            # (indexed), and this user's revoked or idle ones.
            await conn.execute(
                delete(_S).where(
                    or_(
                        _S.c.expires_at <= now,
                        and_(
                            _S.c.user_id == user_id,
                            or_(
                                _S.c.revoked_at.is_not(None),
                                _S.c.last_seen_at <= now - IDLE_TIMEOUT,
                            ),
                        ),
                    )
                )
            )
            row = (await conn.execute(_S.insert().values(values).returning(_S))).mappings().one()
            await audit(
                conn,
                actor=user_id,
                entity_type="web_session",
                entity_id=session_id,
                action="login",
                changes={"address": values["address"]},
            )
        log.info("login", user_id=str(user_id), session_id=str(session_id))
        return LoginResult(
            LoginOutcome.OK, user=user_from(user_row), session=_session_from(row), token=token
        )

    async def get(self, token: str) -> tuple[User, WebSession] | None:
        """The active user and open session of ``token``, or ``None`` (unknown,
        revoked, expired, or a disabled user, alike).

        A read, except that ``last_seen_at`` is brought forward when it is older
        than :data:`LAST_SEEN_RESOLUTION`.
        """
        if not _well_formed(token, SESSION_PREFIX):
            return None
        now = utcnow()
        async with self._db.read() as conn:
            row = (
                (
                    await conn.execute(
                        select(m.users, *_SESSION_COLUMNS)
                        .join(_S, _S.c.user_id == m.users.c.id)
                        .where(
                            _S.c.token_hash == _digest(token),
                            _session_alive(now),
                            m.users.c.active.is_(True),
                        )
                    )
                )
                .mappings()
                .one_or_none()
            )
        if row is None:
            return None
        session = _session_from(row, "s_")
        if now - session.last_seen_at >= LAST_SEEN_RESOLUTION:
            async with self._db.write() as conn:
                await conn.execute(update(_S).where(_S.c.id == session.id).values(last_seen_at=now))
        return user_from(row), session

    async def logout(self, token: str) -> bool:
        """Revoke the session of ``token``; ``False`` if it was not open. Its
        tickets stop authenticating with it (the gateway closes their sockets)."""
        if not _well_formed(token, SESSION_PREFIX):
            return False
        async with self._db.write() as conn:
            row = (
                await conn.execute(
                    update(_S)
                    .where(_S.c.token_hash == _digest(token), _S.c.revoked_at.is_(None))
                    .values(revoked_at=utcnow())
                    .returning(_S.c.id, _S.c.user_id)
                )
            ).one_or_none()
            if row is None:
                return False
            await audit(
                conn,
                actor=row.user_id,
                entity_type="web_session",
                entity_id=row.id,
                action="logout",
            )
        log.info("logout", user_id=str(row.user_id), session_id=str(row.id))
        return True

    async def issue_ticket(self, session: WebSession) -> str:
        """A websocket ticket for ``session``: ``sbk_...``, valid once within
        :data:`TICKET_LIFETIME`. Tickets of the past never used are purged."""
        return await self._issue(session_id=session.id, api_token_id=None)

    async def issue_token_ticket(self, api_token: str) -> str | None:
        """A websocket ticket for the API token ``api_token`` (its websocket then
        lives as long as the token), or ``None`` if the token does not authenticate."""
        if not api_token.startswith("sbt_") or not api_token.isascii():
            return None
        async with self._db.read() as conn:
            token_id = await conn.scalar(
                select(m.api_tokens.c.id)
                .join(m.users, m.users.c.id == m.api_tokens.c.user_id)
                .where(
                    m.api_tokens.c.token_hash == _digest(api_token),
                    m.api_tokens.c.revoked_at.is_(None),
                    m.users.c.active.is_(True),
                )
            )
        if token_id is None:
            return None
        return await self._issue(session_id=None, api_token_id=token_id)

    async def _issue(self, *, session_id: uuid.UUID | None, api_token_id: uuid.UUID | None) -> str:
        k = m.ws_tickets
        ticket = TICKET_PREFIX + secrets.token_urlsafe(32)
        now = utcnow()
        async with self._db.write() as conn:
            await conn.execute(delete(k).where(k.c.used_at.is_(None), k.c.expires_at <= now))
            await conn.execute(
                k.insert().values(
                    id=new_id(),
                    ticket_hash=_digest(ticket),
                    session_id=session_id,
                    api_token_id=api_token_id,
                    expires_at=now + TICKET_LIFETIME,
                    used_at=None,
                )
            )
        return ticket

    async def redeem_ticket(self, ticket: str) -> User | None:
        """The active user of ``ticket`` if it is unused, within its lifetime and
        its session (or API token) alive; the ticket is used up by this call.

        Unknown, used and expired tickets give ``None`` after one read: guesses
        never take the write lock. The use is one conditional ``UPDATE``, so two
        sockets racing with the same ticket cannot both win.
        """
        if not is_ticket(ticket):
            return None
        k = m.ws_tickets
        digest = _digest(ticket)
        now = utcnow()
        usable = (k.c.ticket_hash == digest, k.c.used_at.is_(None), k.c.expires_at > now)
        async with self._db.read() as conn:
            if await conn.scalar(select(k.c.id).where(*usable)) is None:
                return None
        async with self._db.write() as conn:
            won = await conn.scalar(update(k).where(*usable).values(used_at=now).returning(k.c.id))
            if won is None:
                return None
            row = (await conn.execute(_ticket_users([digest], now))).mappings().one_or_none()
        return None if row is None else user_from(row)

    async def ticket_users(self, tickets: Collection[str]) -> dict[str, User]:
        """The active user of each of ``tickets`` whose session (or API token) is
        alive, used or not: a websocket opened with a ticket lasts as long as that.
        A read; tickets unknown or of a session over are absent."""
        now = utcnow()
        digests = {_digest(t): t for t in tickets if is_ticket(t)}
        keys = list(digests)
        found: dict[str, User] = {}
        async with self._db.read() as conn:
            for i in range(0, len(keys), _IN_CHUNK):
                rows = (
                    (await conn.execute(_ticket_users(keys[i : i + _IN_CHUNK], now)))
                    .mappings()
                    .all()
                )
                for row in rows:
                    found[digests[row["ticket_hash"]]] = user_from(row)
        return found
