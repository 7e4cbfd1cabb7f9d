"""Who is connected: principals and the token check.

A :class:`Principal` is what the gateway knows about an authenticated
connection: the store user, their role, and the configured agents they *are*
(``[[agents]] user = "<username>"``). Rights (:mod:`ws_gateway.rights`) are
decided from it alone.

The gateway takes any :data:`Authenticator`; :func:`store_authenticator` builds
the one the daemon uses, over ``store.users.authenticate`` and the agents of the
current configuration.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from crm_store import Role, User

__all__ = [
    "AgentBinding",
    "Authenticator",
    "Principal",
    "TokenChecker",
    "principal_from_user",
    "store_authenticator",
]


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


class TokenChecker(Protocol):
    """What :func:`store_authenticator` needs: ``crm_store``'s ``store.users``."""

    async def authenticate(self, token: str) -> User | None: ...


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
