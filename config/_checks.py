"""Checks that span several entries: duplicates, and agents pointing at their lines.

They run on whatever entries validated, so that one bad line does not hide the other
problems of the file; a reference to an entry that failed validation is not reported
again.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

from config._lines import KeyPath

if TYPE_CHECKING:
    from config._models import (
        AgentConfig,
        HttpConfig,
        InboundConfig,
        LineConfig,
        OutboundConfig,
        SiteConfig,
        WebsocketConfig,
    )

__all__ = ["cross_check"]

_ANY_ADDRESS = frozenset({"0.0.0.0", "::", ""})


def cross_check(
    *,
    lines: Sequence[tuple[int, LineConfig]],
    agents: Sequence[tuple[int, AgentConfig]],
    websocket: WebsocketConfig | None,
    http: HttpConfig | None,
    unchecked_lines: Collection[str] = (),
    site: SiteConfig | None = None,
    outbound: OutboundConfig | None = None,
    inbound: InboundConfig | None = None,
) -> list[tuple[KeyPath, str]]:
    """Return ``(key path, message)`` for every inconsistency between entries.

    ``lines`` and ``agents`` pair each validated entry with its index in the file;
    ``unchecked_lines`` holds extensions of lines that failed validation, which agents may
    name without being reported.
    """
    problems: list[tuple[KeyPath, str]] = []
    by_extension: dict[str, tuple[int, LineConfig]] = {}
    for index, line in lines:
        if line.extension in by_extension:
            first = by_extension[line.extension][0]
            problems.append((("lines", index, "extension"), f"duplicate of lines[{first}]"))
        else:
            by_extension[line.extension] = (index, line)

    names: dict[str, int] = {}
    phones: dict[str, int] = {}
    users: dict[str, int] = {}
    line_owner: dict[str, int] = {}
    for index, agent in agents:
        _note_duplicate(problems, names, agent.name.casefold(), index, "name")
        _note_duplicate(problems, phones, agent.extension, index, "extension")
        if agent.user is not None:
            _note_duplicate(problems, users, agent.user, index, "user")
        if agent.extension in by_extension:
            problems.append(
                (
                    ("agents", index, "extension"),
                    "is a switchboard line; give the agent's own phone extension",
                )
            )
        target = by_extension.get(agent.line)
        path: KeyPath = ("agents", index, "line")
        if target is None:
            if agent.line not in unchecked_lines:
                problems.append((path, f"no line {agent.line} in [[lines]]"))
            continue
        if target[1].role != "agent":
            problems.append((path, f"line {agent.line} has role {target[1].role}, not agent"))
            continue
        if agent.line in line_owner:
            problems.append(
                (path, f"line {agent.line} already used by agents[{line_owner[agent.line]}]")
            )
        else:
            line_owner[agent.line] = index

    if (
        websocket is not None
        and http is not None
        and websocket.port == http.port
        and (websocket.host == http.host or {websocket.host, http.host} & _ANY_ADDRESS)
    ):
        problems.append((("websocket", "port"), "same as http.port"))
    if outbound is not None:
        problems += _check_outbound(outbound, agents, site, inbound)
    return problems


def _check_outbound(
    outbound: OutboundConfig,
    agents: Sequence[tuple[int, AgentConfig]],
    site: SiteConfig | None,
    inbound: InboundConfig | None,
) -> list[tuple[KeyPath, str]]:
    """Overrides name configured agents, each once; the overflow number is callable."""
    # Imported here: the policy reads the models, which run these checks.
    from config.outbound import OutboundPolicy

    problems: list[tuple[KeyPath, str]] = []
    keys = {agent.key for _, agent in agents}
    claimed: dict[str, int] = {}
    for index, override in enumerate(outbound.overrides):
        for position, key in enumerate(override.agents):
            path: KeyPath = ("outbound", "overrides", index, "agents", position)
            if key not in keys:
                problems.append((path, f"no agent {key!r} in [[agents]] (by user, else name)"))
            elif key in claimed:
                problems.append((path, f"{key!r} already has outbound.overrides[{claimed[key]}]"))
            else:
                claimed[key] = index
    if site is None or inbound is None or inbound.overflow_number is None:
        return problems
    policy = OutboundPolicy(
        outbound,
        default_region=site.default_region,
        agent_extensions=[agent.extension for _, agent in agents],
    )
    try:
        refusal = policy.check_target(inbound.overflow_number)
    except ValueError:
        problems.append((("inbound", "overflow_number"), "is not a valid phone number"))
        return problems
    if refusal is not None:
        problems.append((("inbound", "overflow_number"), str(refusal)))
    return problems


def _note_duplicate(
    problems: list[tuple[KeyPath, str]], seen: dict[str, int], key: str, index: int, field: str
) -> None:
    if key in seen:
        problems.append((("agents", index, field), f"duplicate of agents[{seen[key]}]"))
    else:
        seen[key] = index
