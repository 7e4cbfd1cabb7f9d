"""Carries out the commands of the websocket gateway and the MQTT bridge.

The gateway has validated each command against its schema and checked it
against the principal's rights before it arrives here; this module maps it to
the component that acts — the click-to-call service, the store, the agents'
states — and maps their errors to the protocol's stable error codes.

Commands this daemon does not know are refused with ``unavailable``; nothing is
faked.

What a client reads in an error reply is written here, never taken from the
exception: a pjsip ``info()``, a database driver's message (which quotes key
values) or a Python exception's text stays in the log, where the gateway
writes the refused command's id with the cause.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any

import structlog

from bus.agent_states import AgentStates
from bus.presence import InvalidPresence
from config import Config
from crm_store import (
    Call,
    CallDirection,
    ClientKind,
    Conflict,
    InvalidPhone,
    LeadSource,
    NotFound,
    Role,
    Store,
    StoreError,
)
from dialer import (
    Dialer,
    DialerClosed,
    DialerError,
    InvalidState,
    NoSession,
    SessionExists,
    UnknownList,
)
from sip.calls import CallService
from sip.control import CallControl, SupervisionMode
from sip.exceptions import (
    CallForbidden,
    CallNotReady,
    InvalidNumber,
    NoCapacity,
    PoolClosed,
    PoolError,
    UnknownAgent,
    UnknownCall,
    WorkerCommandError,
    WorkerUnavailable,
)
from sip.inbound import InboundService
from ws_gateway import Principal
from ws_gateway import exceptions as gw

__all__ = ["CommandRouter", "check_disposition", "check_pause_reason"]

log = structlog.get_logger(__name__)

Handler = Callable[[Principal, dict[str, Any]], Awaitable[Mapping[str, Any]]]

_REFUSALS: dict[type[Exception], tuple[type[gw.CommandError], str]] = {
    UnknownAgent: (gw.NotFound, "no such agent"),
    UnknownCall: (gw.NotFound, "no such call (it never existed or has ended)"),
    UnknownList: (gw.NotFound, "no such call list"),
    NoSession: (gw.NotFound, "no dialer session for this agent"),
    InvalidNumber: (gw.BadRequest, "not a phone number that can be dialed"),
    NoCapacity: (gw.Conflict, "no free call slot for this agent now"),
    CallNotReady: (gw.Conflict, "the call is not in a state that allows this"),
    SessionExists: (gw.Conflict, "a dialer session is already running for this agent"),
    InvalidState: (gw.Conflict, "the dialer session does not allow this now"),
    WorkerUnavailable: (gw.Unavailable, "the phone line is restarting; retry shortly"),
    PoolClosed: (gw.Unavailable, "the telephony is not running; retry later"),
    DialerClosed: (gw.Unavailable, "the dialer is not running; retry later"),
    PoolError: (gw.Unavailable, "the telephony cannot do this now; retry later"),
    DialerError: (gw.Unavailable, "the dialer cannot do this now; retry later"),
}


def refusal(exc: PoolError | DialerError) -> gw.CommandError:
    """The error reply for a refusal of the SIP pool or the dialer: a stable code,
    a plain message and the refusal's ``error_id`` as ``details["reason"]``."""
    for cls in type(exc).__mro__:
        if cls in _REFUSALS:
            error, message = _REFUSALS[cls]
            return error(message, details={"reason": exc.error_id})
    raise AssertionError("unreachable: PoolError and DialerError are in the table")


def check_pause_reason(config: Config, state: str, reason: str | None) -> None:
    """Raise ``bad_request`` for a pause whose reason is not in ``[widget] pause_reasons``."""
    if state == "paused" and reason not in config.widget.pause_reasons:
        raise gw.BadRequest(
            "not a pause reason of [widget] pause_reasons",
            details={"allowed": list(config.widget.pause_reasons)},
        )


def check_disposition(config: Config, disposition: str) -> None:
    """Raise ``bad_request`` for a disposition not in ``[widget] dispositions``."""
    if disposition not in config.widget.dispositions:
        raise gw.BadRequest(
            "not a disposition of [widget] dispositions",
            details={"allowed": list(config.widget.dispositions)},
        )


class CommandRouter:
    """The gateway's :class:`ws_gateway.server.CommandHandler` for the daemon."""

    def __init__(
        self,
        *,
        config: Config,
        store: Store,
        calls: CallService,
        agents: AgentStates,
        dialer: Dialer,
        control: CallControl,
        inbound: InboundService,
    ) -> None:
        self._config = config
        self._store = store
        self._calls = calls
        self._agents = agents
        self._dialer = dialer
        self._control = control
        self._inbound = inbound
        self._handlers: dict[str, Handler] = {
            "call.originate": self._originate,
            "call.answer": self._answer,
            "call.hangup": self._hangup,
            "call.hold": partial(self._hold, held=True),
            "call.resume": partial(self._hold, held=False),
            "call.dtmf": self._dtmf,
            "call.transfer": self._transfer,
            "call.transfer.complete": self._transfer_complete,
            "call.transfer.cancel": self._transfer_cancel,
            "supervisor.listen": partial(self._supervise, mode="listen"),
            "supervisor.whisper": partial(self._supervise, mode="whisper"),
            "supervisor.barge": partial(self._supervise, mode="barge"),
            "call.note": self._note,
            "call.disposition": self._disposition,
            "call.create_lead": self._create_lead,
            "call.create_client": self._create_client,
            "agent.state.set": self._agent_state,
            "dialer.start": self._dialer_start,
            "dialer.pause": partial(self._dialer_control, action="pause"),
            "dialer.resume": partial(self._dialer_control, action="resume"),
            "dialer.stop": partial(self._dialer_control, action="stop"),
            "dialer.skip": partial(self._dialer_control, action="skip"),
            "admin.users.list": self._users_list,
            "admin.users.add": self._users_add,
            "admin.users.token": self._users_token,
            "admin.users.revoke": self._users_revoke,
        }

    async def handle(
        self, principal: Principal, name: str, args: dict[str, Any]
    ) -> Mapping[str, Any]:
        """Carry out ``name``; raise a ``ws_gateway`` command error to refuse it.

        Cancellation (the client went away) propagates; a click-to-call already
        placed keeps going and is followed on the bus.
        """
        handler = self._handlers.get(name)
        if handler is None:
            raise gw.Unavailable(f"{name} is not supported by this daemon yet")
        try:
            return await handler(principal, args)
        except NotFound as exc:
            raise gw.NotFound(f"no such {exc.entity.replace('_', ' ')}") from exc
        except InvalidPhone as exc:
            # The number is the client's own; the reason is the store's own words.
            raise gw.BadRequest(f"invalid phone number: {exc.reason}") from exc
        except Conflict as exc:
            # Its text may carry the driver's message, with the clashing values.
            raise gw.Conflict("the change conflicts with the stored data") from exc
        except CallForbidden as exc:
            # The message is the policy's own: it names the [outbound] rule, and the
            # number is the caller's own.
            raise gw.Forbidden(str(exc)) from exc
        except (PoolError, DialerError) as exc:
            raise refusal(exc) from exc
        except WorkerCommandError as exc:
            # The worker refused (its message is pjsip's); its code is stable.
            raise gw.Conflict(
                "the call is not in a state that allows this", details={"reason": exc.code}
            ) from exc
        except TimeoutError as exc:
            raise gw.Unavailable("the telephony did not answer in time") from exc

    # --- calls ------------------------------------------------------------

    async def _originate(self, principal: Principal, args: dict[str, Any]) -> Mapping[str, Any]:
        call_id = await self._calls.click_to_call(agent=args["agent"], number=args["to"])
        return {"call_id": str(call_id)}

    async def _answer(self, principal: Principal, args: dict[str, Any]) -> Mapping[str, Any]:
        # An inbound call ringing at the user's phone: the phone is asked to answer.
        agent = await self._inbound.answer(uuid.UUID(args["call_id"]), principal.agents)
        return {"agent": agent}

    async def _hangup(self, principal: Principal, args: dict[str, Any]) -> Mapping[str, Any]:
        call_id = uuid.UUID(args["call_id"])
        try:
            await self._calls.hangup(call_id)
        except UnknownCall:
            await self._inbound.hangup(call_id)
        return {}

    async def _hold(
        self, principal: Principal, args: dict[str, Any], *, held: bool
    ) -> Mapping[str, Any]:
        call_id = uuid.UUID(args["call_id"])
        await (self._control.hold(call_id) if held else self._control.resume(call_id))
        return {}

    async def _dtmf(self, principal: Principal, args: dict[str, Any]) -> Mapping[str, Any]:
        await self._control.dtmf(uuid.UUID(args["call_id"]), args["digits"])
        return {}

    async def _transfer(self, principal: Principal, args: dict[str, Any]) -> Mapping[str, Any]:
        call_id = uuid.UUID(args["call_id"])
        if args.get("mode", "blind") == "attended":
            # Returns once the colleague answered and talks with the agent.
            await self._control.transfer_attended(call_id, args["to"])
        else:
            await self._control.transfer_blind(call_id, args["to"])
        return {}

    async def _transfer_complete(
        self, principal: Principal, args: dict[str, Any]
    ) -> Mapping[str, Any]:
        await self._control.transfer_complete(uuid.UUID(args["call_id"]))
        return {}

    async def _transfer_cancel(
        self, principal: Principal, args: dict[str, Any]
    ) -> Mapping[str, Any]:
        await self._control.transfer_cancel(uuid.UUID(args["call_id"]))
        return {}

    async def _supervise(
        self, principal: Principal, args: dict[str, Any], *, mode: SupervisionMode
    ) -> Mapping[str, Any]:
        phones = [a for a in self._config.agents if a.key in principal.agents]
        if not phones:
            raise gw.Conflict("you have no phone configured ([[agents]] with your user)")
        supervisor = next((a for a in phones if a.supervisor), phones[0])
        await self._control.supervise(uuid.UUID(args["call_id"]), supervisor, mode)
        return {}

    async def _note(self, principal: Principal, args: dict[str, Any]) -> Mapping[str, Any]:
        call_id = uuid.UUID(args["call_id"])
        await self._inbound.record_ready(call_id)
        await self._store.calls.set_note(call_id, args["text"], actor=principal.user_id)
        return {}

    async def _disposition(self, principal: Principal, args: dict[str, Any]) -> Mapping[str, Any]:
        check_disposition(self._config, args["disposition"])
        call_id = uuid.UUID(args["call_id"])
        await self._inbound.record_ready(call_id)
        # A dialer call's disposition also ends its wrap-up; any other call's is
        # only stored.
        for agent in sorted(principal.agents):
            try:
                await self._dialer.set_disposition(agent, call_id, args["disposition"])
                break
            except DialerError:
                continue
        else:
            await self._store.calls.set_disposition(
                call_id, args["disposition"], actor=principal.user_id
            )
        if "note" in args:
            await self._store.calls.set_note(call_id, args["note"], actor=principal.user_id)
        return {}

    async def _call_and_customer(self, call_id: str) -> tuple[Call, str]:
        await self._inbound.record_ready(uuid.UUID(call_id))
        call = await self._store.calls.get(uuid.UUID(call_id))
        inbound = call.direction is CallDirection.INBOUND
        return call, call.from_number if inbound else call.to_number

    async def _create_lead(self, principal: Principal, args: dict[str, Any]) -> Mapping[str, Any]:
        call, number = await self._call_and_customer(args["call_id"])
        name, note = args.get("name"), args.get("note")
        if call.lead_id is not None and name:
            # The caller was made a lead from their number already: name that one.
            named = await self._store.leads.name_unnamed(
                call.lead_id,
                first_name=name,
                owner_user_id=principal.user_id,
                note=note,
                actor=principal.user_id,
            )
            if named is not None:
                return {"lead_id": str(named.id)}
        lead = await self._store.leads.create(
            first_name=name,
            phones=[number],
            source=LeadSource.MANUAL,
            owner_user_id=principal.user_id,
            note=note,
            actor=principal.user_id,
        )
        await self._store.calls.link(
            call.id, client_id=call.client_id, lead_id=lead.id, actor=principal.user_id
        )
        return {"lead_id": str(lead.id)}

    async def _create_client(self, principal: Principal, args: dict[str, Any]) -> Mapping[str, Any]:
        call, number = await self._call_and_customer(args["call_id"])
        kind = ClientKind(args.get("kind", "person"))
        name = args["display_name"]
        first, _, last = name.partition(" ")
        client = await self._store.clients.create(
            kind,
            first_name=first if kind is ClientKind.PERSON else None,
            last_name=(last or None) if kind is ClientKind.PERSON else None,
            name=name if kind is ClientKind.COMPANY else None,
            emails=[args["email"]] if "email" in args else [],
            phones=[number],
            responsible_user_id=principal.user_id,
            actor=principal.user_id,
        )
        await self._store.calls.link(
            call.id, client_id=client.id, lead_id=call.lead_id, actor=principal.user_id
        )
        return {"client_id": str(client.id)}

    # --- agents -----------------------------------------------------------

    async def _agent_state(self, principal: Principal, args: dict[str, Any]) -> Mapping[str, Any]:
        check_pause_reason(self._config, args["state"], args.get("reason"))
        try:
            await self._agents.set(args["agent"], args["state"], args.get("reason"))
        except KeyError as exc:
            raise gw.NotFound(f"no agent {args['agent']!r}") from exc
        except InvalidPresence as exc:
            raise gw.Conflict("the agent's state does not allow this now") from exc
        except StoreError as exc:
            raise gw.Unavailable("the agent's state cannot be saved now; retry later") from exc
        return {}

    # --- dialer -----------------------------------------------------------

    async def _dialer_start(self, principal: Principal, args: dict[str, Any]) -> Mapping[str, Any]:
        info = await self._dialer.start_session(args["agent"], uuid.UUID(args["call_list_id"]))
        return {"session_id": str(info.session_id), "phase": info.phase.name.lower()}

    async def _dialer_control(
        self, principal: Principal, args: dict[str, Any], *, action: str
    ) -> Mapping[str, Any]:
        control = {
            "pause": self._dialer.pause,
            "resume": self._dialer.resume,
            "stop": self._dialer.stop,
            "skip": self._dialer.skip,
        }[action]
        await control(args["agent"])
        return {}

    # --- administration ---------------------------------------------------

    async def _users_list(self, principal: Principal, args: dict[str, Any]) -> Mapping[str, Any]:
        users = await self._store.users.list()
        return {
            "users": [
                {
                    "id": str(u.id),
                    "username": u.username,
                    "display_name": u.display_name,
                    "role": str(u.role),
                    "extension": u.extension,
                    "active": u.active,
                }
                for u in users
            ]
        }

    async def _users_add(self, principal: Principal, args: dict[str, Any]) -> Mapping[str, Any]:
        try:
            user = await self._store.users.add(
                username=args["username"],
                display_name=args["display_name"],
                role=Role(args["role"]),
                extension=args.get("extension"),
                actor=principal.user_id,
            )
        except Conflict as exc:
            raise gw.Conflict(f"username {args['username']!r} already exists") from exc
        return {"id": str(user.id)}

    async def _users_token(self, principal: Principal, args: dict[str, Any]) -> Mapping[str, Any]:
        user = await self._store.users.by_username(args["username"])
        if user is None:
            raise gw.NotFound(f"no user named {args['username']!r}")
        token, plaintext = await self._store.users.issue_token(
            user.id, label=args.get("label", "api"), actor=principal.user_id
        )
        # The only time the plaintext leaves the store: the caller asked for it.
        return {"token_id": str(token.id), "token": plaintext}

    async def _users_revoke(self, principal: Principal, args: dict[str, Any]) -> Mapping[str, Any]:
        await self._store.users.revoke_token(uuid.UUID(args["token_id"]), actor=principal.user_id)
        return {}
