"""Users and their API tokens."""

from __future__ import annotations

import builtins
import hashlib
import secrets
import uuid
from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from .. import _models as m
from .. import _passwords as passwords
from .._base import Actor, Database, audit, conflict_from, token_from, user_from
from .._types import utcnow
from ..dto import ApiToken, User
from ..enums import Role
from ..exceptions import NotFound
from ..ids import new_id
from .sessions import SessionRepository, is_ticket, revoke_user_sessions

__all__ = ["LAST_USED_RESOLUTION", "TOKEN_PREFIX", "UserRepository"]

log = structlog.get_logger(__name__)

TOKEN_PREFIX = "sbt_"
"""Prefix of every API token, so a leaked token is recognisable by secret scanners."""


LAST_USED_RESOLUTION = timedelta(minutes=1)
"""How stale a token's ``last_used_at`` may be: it is written at most this often."""

# SQLite allows 32766 bound parameters per statement; stay far below it.
_IN_CHUNK = 500


def _hash_token(token: str) -> str:
    # A plain SHA-256 is the right tool here, unlike for passwords: the token is 32
    # random bytes, so there is nothing to brute-force or look up in a dictionary, and
    # a slow KDF would only add latency to every websocket authentication. The hash
    # makes a stolen database useless for logging in.
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _well_formed(token: str) -> bool:
    """Whether ``token`` could be one of ours at all (checked before any query)."""
    return token.startswith(TOKEN_PREFIX) and token.isascii()


# What else a token row joined to its user needs to authenticate.
_AUTHENTICATES = (m.api_tokens.c.revoked_at.is_(None), m.users.c.active.is_(True))


class UserRepository:
    """Users (agents, supervisors, admins), their passwords and their API tokens.

    :meth:`authenticate` and :meth:`token_users` also take the websocket tickets
    (``sbk_...``) of ``sessions``, so that a gateway built on them accepts a
    browser's ticket in place of a token without knowing the difference.
    """

    def __init__(self, db: Database, *, sessions: SessionRepository) -> None:
        self._db = db
        self._sessions = sessions
        # Token id -> when it was last used, not yet written (see flush_last_used).
        self._used: dict[uuid.UUID, datetime] = {}

    async def add(
        self,
        username: str,
        display_name: str,
        role: Role = Role.AGENT,
        extension: str | None = None,
        *,
        actor: Actor = None,
    ) -> User:
        """Create an active user. Raises :class:`Conflict` if the username is taken."""
        values = {
            "id": new_id(),
            "username": username,
            "display_name": display_name,
            "role": Role(role),
            "extension": extension,
            "active": True,
            "created_at": utcnow(),
        }
        try:
            async with self._db.write() as conn:
                row = (
                    (await conn.execute(m.users.insert().values(values).returning(m.users)))
                    .mappings()
                    .one()
                )
                await audit(
                    conn,
                    actor=actor,
                    entity_type="user",
                    entity_id=row["id"],
                    action="create",
                    changes={k: v for k, v in values.items() if k != "id"},
                )
        except IntegrityError as exc:
            raise conflict_from(exc, f"username {username!r} already exists") from None
        log.info("user_created", user_id=str(row["id"]), username=username, role=str(role))
        return user_from(row)

    async def get(self, user_id: uuid.UUID) -> User:
        """Return the user or raise :class:`NotFound`."""
        async with self._db.read() as conn:
            row = (
                (await conn.execute(select(m.users).where(m.users.c.id == user_id)))
                .mappings()
                .one_or_none()
            )
        if row is None:
            raise NotFound("user", user_id)
        return user_from(row)

    async def by_username(self, username: str) -> User | None:
        async with self._db.read() as conn:
            row = (
                (await conn.execute(select(m.users).where(m.users.c.username == username)))
                .mappings()
                .one_or_none()
            )
        return None if row is None else user_from(row)

    async def list(self, *, active_only: bool = False) -> list[User]:
        """All users ordered by username."""
        stmt = select(m.users).order_by(m.users.c.username)
        if active_only:
            stmt = stmt.where(m.users.c.active.is_(True))
        async with self._db.read() as conn:
            rows = (await conn.execute(stmt)).mappings().all()
        return [user_from(r) for r in rows]

    async def set_active(self, user_id: uuid.UUID, active: bool, *, actor: Actor = None) -> User:
        """Enable or disable a user. A disabled user's tokens stop authenticating."""
        action = "activate" if active else "deactivate"
        return await self._change(user_id, {"active": active}, action=action, actor=actor)

    async def set_password(self, user_id: uuid.UUID, password: str, *, actor: Actor = None) -> User:
        """Set the user's password (stored as an argon2id hash), clear their
        lock-out, and end their browser sessions (so a password changed because it
        leaked shuts the door at once). The audit entry records the change, never
        the hash.

        Raises :class:`InvalidPassword` for a password shorter than
        ``MIN_PASSWORD_LENGTH`` (8) or absurdly long, :class:`NotFound` for no such
        user. Cancellation during the hash (in a thread) leaves everything as it was.
        """
        passwords.check_policy(password)
        digest = await passwords.hash_password(password)
        changes = {"password_hash": digest, "failed_logins": 0, "locked_until": None}
        async with self._db.write() as conn:
            row = (
                (
                    await conn.execute(
                        update(m.users)
                        .where(m.users.c.id == user_id)
                        .values(**changes)
                        .returning(m.users)
                    )
                )
                .mappings()
                .one_or_none()
            )
            if row is None:
                raise NotFound("user", user_id)
            ended = await revoke_user_sessions(conn, user_id)
            await audit(
                conn,
                actor=actor,
                entity_type="user",
                entity_id=user_id,
                action="set_password",
                changes={"sessions_ended": ended},
            )
        log.info("user_password_set", user_id=str(user_id), sessions_ended=ended)
        return user_from(row)

    async def set_role(self, user_id: uuid.UUID, role: Role, *, actor: Actor = None) -> User:
        """Give the user ``role``. Open websocket sessions of the user are re-checked
        by the gateway and closed when their rights changed."""
        user = await self._change(user_id, {"role": Role(role)}, action="set_role", actor=actor)
        log.info("user_role_set", user_id=str(user_id), role=str(role))
        return user

    async def set_email(
        self, user_id: uuid.UUID, email: str | None, *, actor: Actor = None
    ) -> User:
        """Set (``None``: clear) the address the user's task reminders are mailed to."""
        return await self._change(user_id, {"email": email}, action="set_email", actor=actor)

    async def email_of(self, user_id: uuid.UUID) -> str | None:
        """The user's reminder address, ``None`` if they gave none; :class:`NotFound`
        if there is no such user."""
        async with self._db.read() as conn:
            row = (
                await conn.execute(select(m.users.c.email).where(m.users.c.id == user_id))
            ).one_or_none()
        if row is None:
            raise NotFound("user", user_id)
        email: str | None = row[0]
        return email

    async def _change(
        self, user_id: uuid.UUID, changes: dict[str, Any], *, action: str, actor: Actor
    ) -> User:
        """Set ``changes`` (column: value) on the user and audit them as ``action``, in
        one transaction; raise :class:`NotFound` if there is no such user."""
        async with self._db.write() as conn:
            row = (
                (
                    await conn.execute(
                        update(m.users)
                        .where(m.users.c.id == user_id)
                        .values(**changes)
                        .returning(m.users)
                    )
                )
                .mappings()
                .one_or_none()
            )
            if row is None:
                raise NotFound("user", user_id)
            await audit(
                conn,
                actor=actor,
                entity_type="user",
                entity_id=user_id,
                action=action,
                changes=changes,
            )
        return user_from(row)

    async def issue_token(
        self, user_id: uuid.UUID, label: str, *, actor: Actor = None
    ) -> tuple[ApiToken, str]:
        """Create an API token for the user.

        Returns the token's metadata and its plaintext. The plaintext is shown this
        once: only its SHA-256 is stored, so it cannot be recovered later.
        """
        plaintext = TOKEN_PREFIX + secrets.token_urlsafe(32)
        values = {
            "id": new_id(),
            "user_id": user_id,
            "label": label,
            "token_hash": _hash_token(plaintext),
            "created_at": utcnow(),
        }
        async with self._db.write() as conn:
            exists = await conn.scalar(select(m.users.c.id).where(m.users.c.id == user_id))
            if exists is None:
                raise NotFound("user", user_id)
            row = (
                (await conn.execute(m.api_tokens.insert().values(values).returning(m.api_tokens)))
                .mappings()
                .one()
            )
            await audit(
                conn,
                actor=actor,
                entity_type="api_token",
                entity_id=row["id"],
                action="issue",
                changes={"user_id": user_id, "label": label},
            )
        log.info("token_issued", user_id=str(user_id), token_id=str(row["id"]))
        return token_from(row), plaintext

    async def authenticate(self, token: str) -> User | None:
        """Return the active user owning ``token``, or ``None``.

        A websocket ticket (``sbk_...``) is redeemed instead: see
        :meth:`SessionRepository.redeem_ticket` (it works once, and is a write).

        For API tokens: unknown, malformed and revoked tokens and tokens of disabled users all give
        ``None``, indistinguishably. The check is a read: it never takes the
        database's write lock, so a flood of guesses cannot hold up writers (on
        SQLite, ``BEGIN IMMEDIATE`` for each guess would). A success is noted in
        memory and written to ``last_used_at`` by :meth:`flush_last_used`, at most
        once per :data:`LAST_USED_RESOLUTION`; that touch is bookkeeping, not a
        change of state, and is not written to the audit log.
        """
        if is_ticket(token):
            return await self._sessions.redeem_ticket(token)
        if not _well_formed(token):
            return None
        async with self._db.read() as conn:
            row = (
                (
                    await conn.execute(
                        select(
                            m.users,
                            m.api_tokens.c.id.label("token_id"),
                            m.api_tokens.c.last_used_at.label("token_last_used_at"),
                        )
                        .join(m.api_tokens, m.api_tokens.c.user_id == m.users.c.id)
                        .where(m.api_tokens.c.token_hash == _hash_token(token), *_AUTHENTICATES)
                    )
                )
                .mappings()
                .one_or_none()
            )
        if row is None:
            return None
        now = utcnow()
        last = row["token_last_used_at"]
        if last is None or now - last >= LAST_USED_RESOLUTION:
            self._used[row["token_id"]] = now
        return user_from(row)

    async def flush_last_used(self) -> int:
        """Write the ``last_used_at`` noted by :meth:`authenticate` since the last
        flush, in one transaction; returns how many tokens were touched.

        Call it now and then (the websocket gateway does, with its session
        check). If it fails or is cancelled, the notes are kept for the next call.
        """
        if not self._used:
            return 0
        batch = dict(self._used)
        async with self._db.write() as conn:
            for token_id, at in batch.items():
                await conn.execute(
                    update(m.api_tokens)
                    .where(m.api_tokens.c.id == token_id)
                    .values(last_used_at=at)
                )
        for token_id, at in batch.items():
            if self._used.get(token_id) == at:
                del self._used[token_id]
        return len(batch)

    async def token_users(self, tokens: Collection[str]) -> dict[str, User]:
        """The active users owning each of ``tokens`` that still authenticates.

        A read, for re-checking open sessions in one query (per 500 tokens):
        tokens revoked, unknown or of a disabled user are absent from the result.
        Nothing is noted as used. A websocket ticket among them stands for its
        browser session (or API token): present while that is alive, used or not
        (see :meth:`SessionRepository.ticket_users`).
        """
        tickets = [t for t in tokens if is_ticket(t)]
        found: dict[str, User] = await self._sessions.ticket_users(tickets) if tickets else {}
        digests = {_hash_token(t): t for t in tokens if _well_formed(t)}
        keys = list(digests)
        chunks = [keys[i : i + _IN_CHUNK] for i in range(0, len(keys), _IN_CHUNK)]
        async with self._db.read() as conn:
            for chunk in chunks:
                rows = (
                    (
                        await conn.execute(
                            select(m.users, m.api_tokens.c.token_hash)
                            .join(m.api_tokens, m.api_tokens.c.user_id == m.users.c.id)
                            .where(m.api_tokens.c.token_hash.in_(chunk), *_AUTHENTICATES)
                        )
                    )
                    .mappings()
                    .all()
                )
                for row in rows:
                    found[digests[row["token_hash"]]] = user_from(row)
        return found

    async def revoke_token(self, token_id: uuid.UUID, *, actor: Actor = None) -> ApiToken:
        """Revoke a token; revoking twice keeps the first revocation time."""
        async with self._db.write() as conn:
            row = (
                (await conn.execute(select(m.api_tokens).where(m.api_tokens.c.id == token_id)))
                .mappings()
                .one_or_none()
            )
            if row is None:
                raise NotFound("api_token", token_id)
            if row["revoked_at"] is not None:
                return token_from(row)
            row = (
                (
                    await conn.execute(
                        update(m.api_tokens)
                        .where(m.api_tokens.c.id == token_id)
                        .values(revoked_at=utcnow())
                        .returning(m.api_tokens)
                    )
                )
                .mappings()
                .one()
            )
            await audit(
                conn, actor=actor, entity_type="api_token", entity_id=token_id, action="revoke"
            )
        log.info("token_revoked", token_id=str(token_id))
        return token_from(row)

    async def list_tokens(self, user_id: uuid.UUID) -> builtins.list[ApiToken]:
        """The user's tokens, revoked ones included, oldest first."""
        async with self._db.read() as conn:
            rows = (
                (
                    await conn.execute(
                        select(m.api_tokens)
                        .where(m.api_tokens.c.user_id == user_id)
                        .order_by(m.api_tokens.c.created_at, m.api_tokens.c.id)
                    )
                )
                .mappings()
                .all()
            )
        return [token_from(r) for r in rows]
