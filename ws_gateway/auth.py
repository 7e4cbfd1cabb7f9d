"""Who is connected: principals and the token check.

A :class:`Principal` is what the gateway knows about an authenticated
connection: the store user, their role, and the configured agents they *are*
(``[[agents]] user = "<username>"``). Rights (:mod:`ws_gateway.rights`) are
decided from it alone.

The gateway takes any :data:`Authenticator`; :func:`store_authenticator` builds
the one the daemon uses, over ``store.users.authenticate`` and the agents of the
current configuration.

The credential of the ``auth`` message is an API token (``sbt_...``) or a web
page's single-use ticket (``sbk_...``, from ``POST /api/auth/ticket``). The gateway
does not tell them apart: the store redeems a ticket in ``authenticate`` and, in
``token_users``, answers for it as long as the browser session it was issued to
lives, so logout closes the page's socket like a revoked token does.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

import structlog

from crm_store import Role, User

__all__ = [
    "AgentBinding",
    "Authenticator",
    "Principal",
    "SessionCheck",
    "TokenChecker",
    "TokenStore",
    "principal_from_user",
    "same_rights",
    "store_authenticator",
    "store_session_check",
]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated user as the gateway sees them.

    ``agents`` are the names of the configured agents bound to this user;
    ``role`` is the effective role (see :func:`principal_from_user`).
    """

    user_id: uuid.UUID
    username: str
    display_name: str
    role: Role
    agents: frozenset[str]

    @property
    def sees_all(self) -> bool:
        """Supervisors and admins see (and may command) every call and agent."""
        return self.role in (Role.SUPERVISOR, Role.ADMIN)

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


Authenticator = Callable[[str], Awaitable[Principal | None]]
"""``await authenticate(token)``: the principal owning ``token``, or ``None``.

It must not raise for a bad token (``None`` says it); any exception it raises is
treated as "cannot check now" and the client is closed with 1011.
"""


SessionCheck = Callable[[Collection[str]], Awaitable[Mapping[str, Principal]]]
"""``await check(tokens)``: the current principal of each token that still
authenticates; tokens revoked, unknown or of a disabled user are absent.

The gateway calls it every ``session_check_interval`` seconds with the tokens
of its open sessions, and closes (4401) each session whose token is absent or
whose principal no longer has the :func:`same_rights`. An exception means
"cannot check now": sessions are kept until the next check.
"""


class TokenChecker(Protocol):
    """What :func:`store_authenticator` needs: ``crm_store``'s ``store.users``."""

    async def authenticate(self, token: str) -> User | None: ...


class TokenStore(TokenChecker, Protocol):
    """What :func:`store_session_check` needs: ``crm_store``'s ``store.users``."""

    async def token_users(self, tokens: Collection[str]) -> Mapping[str, User]: ...

    async def flush_last_used(self) -> int: ...


class AgentBinding(Protocol):
    """The fields of ``config.AgentConfig`` the gateway reads."""

    @property
    def name(self) -> str: ...

    @property
    def user(self) -> str | None: ...

    @property
    def supervisor(self) -> bool: ...

    @property
    def key(self) -> str:
        """How events name the agent (``config.AgentConfig.key``)."""
        ...


def principal_from_user(user: User, agents: Iterable[AgentBinding]) -> Principal:
    """The principal of ``user``, bound to the agents whose ``user`` is theirs.

    The effective role is the store's role, raised to supervisor when one of the
    user's configured agents has ``supervisor = true`` (the configuration is
    written by the PBX admin, so it may grant that right; it never lowers one).
    """
    mine = [a for a in agents if a.user is not None and a.user == user.username]
    role = Role(user.role)
    if role is Role.AGENT and any(a.supervisor for a in mine):
        role = Role.SUPERVISOR
    return Principal(
        user_id=user.id,
        username=user.username,
        display_name=user.display_name,
        role=role,
        agents=frozenset(a.key for a in mine),
    )


def store_authenticator(
    users: TokenChecker, agents: Callable[[], Iterable[AgentBinding]]
) -> Authenticator:
    """An :data:`Authenticator` over the store's users and the configured agents.

    ``agents`` is called at each authentication, so a configuration reload
    (``[[agents]]`` is reloadable) applies to the next connections.
    """

    async def authenticate(token: str) -> Principal | None:
        user = await users.authenticate(token)
        if user is None:
            return None
        return principal_from_user(user, agents())

    return authenticate


def same_rights(before: Principal, now: Principal) -> bool:
    """Whether a session opened as ``before`` may go on as ``now``: same user,
    same role, same agents. Any difference closes it, so that the client comes
    back with a session built from the current rights."""
    return (before.user_id, before.role, before.agents) == (now.user_id, now.role, now.agents)


def store_session_check(
    users: TokenStore, agents: Callable[[], Iterable[AgentBinding]]
) -> SessionCheck:
    """A :data:`SessionCheck` over the store's users and the configured agents.

    One read per check (whoever changed the store: this process, the CLI, another
    daemon), then the ``last_used_at`` noted by authentications since the last
    check are written, in one transaction.
    """

    async def check(tokens: Collection[str]) -> Mapping[str, Principal]:
        found = await users.token_users(tokens) if tokens else {}
        bindings = list(agents())
        current = {token: principal_from_user(user, bindings) for token, user in found.items()}
        try:
            await users.flush_last_used()
        except Exception:
            # Bookkeeping only, and kept for the next check: a busy or failing
            # store must not cost the revocation check its answer.
            log.warning("ws.last_used_not_written", exc_info=True)
        return current

    return check
