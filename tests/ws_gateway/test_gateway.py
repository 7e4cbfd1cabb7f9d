"""The gateway end to end: real server, real clients, real SQLite tokens."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from bus import (
    AgentStateChanged,
    Bus,
    CallAnswered,
    CallBridged,
    CallCreated,
    CallDialing,
    CallEnded,
    CallRinging,
    RecordingReady,
    RegistrationChanged,
    WorkerCrashed,
)
from ws_gateway import CloseCode, Gateway

from .conftest import Client, Telephony, until, validate_server_message


def publish_call(bus: Bus, agent: str | None) -> tuple[uuid.UUID, list[int]]:
    """Publish a whole call's events for ``agent``; returns its id and bus seqs."""
    call_id = uuid.uuid4()
    events = [
        CallCreated(
            call_id=call_id,
            direction="inbound",
            from_number="+33612345678",
            to_number="2001",
            line="2001",
            agent=agent,
            worker_id="w1",
        ),
        CallDialing(call_id=call_id, leg="agent", agent=agent, dialed_at=datetime.now(UTC)),
        CallRinging(call_id=call_id, leg="agent", agent=agent),
        CallAnswered(call_id=call_id, leg="agent", agent=agent),
        CallBridged(call_id=call_id, agent=agent, recording=True),
        # A publisher that does not know the agent any more: the gateway does.
        CallEnded(call_id=call_id, reason="completed", sip_code=200, agent=None, talk_seconds=3.5),
        RecordingReady(call_id=call_id, path="/rec/x.wav", duration_seconds=3.5),
    ]
    return call_id, [bus.publish(e).seq for e in events]


def call_ids(messages: list[dict[str, Any]]) -> set[str]:
    return {m["event"]["data"]["call_id"] for m in messages if "call_id" in m["event"]["data"]}


# --- authentication ------------------------------------------------------------


async def test_bad_token_is_closed_with_4401(open_client: Any, tokens: dict[str, str]) -> None:
    client: Client = await open_client()
    await client.ws.send(json.dumps({"type": "auth", "token": "sbt_not-a-real-token"}))
    closed = await client.closed()
    assert closed.rcvd is not None
    assert closed.rcvd.code == 4401
    assert client.received == []


async def test_a_first_message_other_than_auth_is_closed_with_4401(
    open_client: Any, tokens: dict[str, str]
) -> None:
    client: Client = await open_client()
    await client.ws.send(json.dumps({"type": "command", "id": "1", "name": "call.hangup"}))
    closed = await client.closed()
    assert closed.rcvd is not None
    assert closed.rcvd.code == 4401


async def test_no_auth_message_is_closed_with_4401_after_the_timeout(
    make_gateway: Any, open_client: Any
) -> None:
    gw: Gateway = await make_gateway(auth_timeout=0.3)
    client: Client = await open_client(gw=gw)
    closed = await client.closed(timeout=2.0)
    assert closed.rcvd is not None
    assert (closed.rcvd.code, closed.rcvd.reason) == (4401, "authentication timeout")


async def test_token_in_the_url_is_ignored(
    make_gateway: Any, open_client: Any, tokens: dict[str, str]
) -> None:
    gw: Gateway = await make_gateway(auth_timeout=0.3)
    scheme_less = f"ws://127.0.0.1:{gw.port}/?token={tokens['sue']}"
    async with connect(scheme_less, origin="http://crm.test:8080") as ws:
        client = Client(ws)
        closed = await client.closed(timeout=2.0)
    assert closed.rcvd is not None
    assert closed.rcvd.code == 4401
    assert client.received == []


async def test_foreign_origin_is_refused_at_the_upgrade_with_403(gateway: Gateway) -> None:
    with pytest.raises(InvalidStatus) as refused:
        await connect(f"ws://127.0.0.1:{gateway.port}/", origin="http://evil.test")
    assert refused.value.response.status_code == 403


async def test_allowed_origin_and_token_get_auth_ok_then_snapshot(
    open_client: Any, tokens: dict[str, str]
) -> None:
    client: Client = await open_client()
    ok = await client.auth(tokens["alice"])
    assert (ok["user"], ok["role"], ok["agents"]) == ("alice", "agent", ["alice"])
    snapshot = await client.expect("snapshot")
    assert snapshot["seq"] == ok["seq"]
    assert "resumed" not in snapshot


# --- who sees what ---------------------------------------------------------------


async def test_agent_receives_only_own_call_events_and_supervisor_receives_all(
    open_client: Any, tokens: dict[str, str], bus: Bus
) -> None:
    alice: Client = await open_client(tokens["alice"])
    sue: Client = await open_client(tokens["sue"])
    await alice.expect("snapshot")
    await sue.expect("snapshot")

    bob_call, _ = publish_call(bus, "bob")
    alice_call, _ = publish_call(bus, "alice")
    bus.publish(WorkerCrashed("w9", -11, 1, (), 1.0))
    bus.publish(AgentStateChanged(agent="bob", user="bob", state="paused", reason="lunch"))
    last = bus.publish(AgentStateChanged(agent="alice", user="alice", state="available")).seq

    seen_by_sue = await sue.events_until(last)
    assert call_ids(seen_by_sue) == {str(bob_call), str(alice_call)}
    assert {m["event"]["type"] for m in seen_by_sue} >= {"worker.crashed", "recording.ready"}

    seen_by_alice = await alice.events_until(last)
    assert call_ids(seen_by_alice) == {str(alice_call)}
    assert [m["event"]["type"] for m in seen_by_alice] == [
        "call.created",
        "call.dialing",
        "call.ringing",
        "call.answered",
        "call.bridged",
        "call.ended",
        "recording.ready",
        "agent.state",
    ]
    assert all(m["event"]["data"].get("agent") in (None, "alice") for m in seen_by_alice)
    seqs = [m["seq"] for m in seen_by_sue]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == len(seqs)


async def test_snapshot_shows_each_role_what_it_may_see(
    open_client: Any, tokens: dict[str, str], bus: Bus, gateway: Gateway
) -> None:
    a_call = uuid.uuid4()
    b_call = uuid.uuid4()
    for call_id, agent in ((a_call, "alice"), (b_call, "bob")):
        bus.publish(CallCreated(call_id, "inbound", "+33612345678", "2001", "2001", agent, "w1"))
        bus.publish(CallRinging(call_id=call_id, leg="agent", agent=agent))
        bus.publish(AgentStateChanged(agent=agent, user=None, state="busy"))
    await until(lambda: gateway.stats.seq == 6)

    alice: Client = await open_client(tokens["alice"])
    snap = await alice.expect("snapshot")
    assert [c["call_id"] for c in snap["calls"]] == [str(a_call)]
    assert snap["calls"][0]["state"] == "ringing"
    assert [a["agent"] for a in snap["agents"]] == ["alice"]

    sue: Client = await open_client(tokens["sue"])
    snap = await sue.expect("snapshot")
    assert {c["call_id"] for c in snap["calls"]} == {str(a_call), str(b_call)}
    assert [a["agent"] for a in snap["agents"]] == ["alice", "bob"]
    assert snap["seq"] == 6


# --- commands ----------------------------------------------------------------------


async def test_agent_command_on_another_agents_call_is_forbidden_and_nothing_is_handled(
    open_client: Any, tokens: dict[str, str], bus: Bus, telephony: Telephony, gateway: Gateway
) -> None:
    call_id = uuid.uuid4()
    bus.publish(CallCreated(call_id, "inbound", "+33612345678", "2002", "2002", "bob", "w2"))
    await until(lambda: gateway.projection.knows_call(call_id))
    alice: Client = await open_client(tokens["alice"])
    for name, args in (
        ("call.hangup", {"call_id": str(call_id)}),
        ("call.transfer", {"call_id": str(call_id), "to": "3000", "mode": "blind"}),
        ("agent.state.set", {"agent": "bob", "state": "offline"}),
        ("supervisor.listen", {"call_id": str(call_id)}),
        ("admin.users.list", {}),
    ):
        reply = await alice.command(name, args)
        assert (reply["type"], reply["code"]) == ("error", "forbidden"), name
    assert telephony.handled == []


async def test_agent_commands_own_call_and_the_result_comes_back(
    open_client: Any, tokens: dict[str, str], telephony: Telephony
) -> None:
    alice: Client = await open_client(tokens["alice"])
    await alice.expect("snapshot")
    reply = await alice.command("call.originate", {"to": "+33612345678"})
    assert reply["type"] == "result"
    call_id = reply["data"]["call_id"]
    reply = await alice.command("call.hangup", {"call_id": call_id})
    assert reply["type"] == "result"
    # Notes after the hang-up still pass: the call is remembered as Alice's.
    reply = await alice.command("call.note", {"call_id": call_id, "text": "called back"})
    assert reply["type"] == "result"
    assert [(u, n, a.get("agent")) for u, n, a in telephony.handled] == [
        ("alice", "call.originate", "alice"),
        ("alice", "call.hangup", None),
        ("alice", "call.note", None),
    ]
    # The events the handler published reach her too.
    while not any(
        m["type"] == "event" and m["event"]["type"] == "call.ended" for m in alice.received
    ):
        await alice.recv()
    types = [m["event"]["type"] for m in alice.received if m["type"] == "event"]
    assert types == ["call.created", "call.ended"]


async def test_unknown_call_is_not_found_and_bad_args_are_bad_request(
    open_client: Any, tokens: dict[str, str], telephony: Telephony
) -> None:
    sue: Client = await open_client(tokens["sue"])
    reply = await sue.command("call.hangup", {"call_id": str(uuid.uuid4())})
    assert reply["code"] == "not_found"
    reply = await sue.command("call.dtmf", {"call_id": "nope", "digits": "12"})
    assert reply["code"] == "bad_request"
    assert reply["details"]["path"] == "/args/call_id"
    reply = await sue.command("agent.state.set", {"agent": "bob", "state": "paused"})
    assert reply["code"] == "bad_request"  # paused needs a reason
    await sue.ws.send("not json")
    reply = await sue.expect("error")
    assert (reply["id"], reply["code"]) == (None, "bad_request")
    assert telephony.handled == []


async def test_supervisor_commands_any_agent_and_handler_errors_keep_their_code(
    open_client: Any, tokens: dict[str, str], telephony: Telephony
) -> None:
    sue: Client = await open_client(tokens["sue"])
    reply = await sue.command("agent.state.set", {"agent": "bob", "state": "paused", "reason": "x"})
    assert reply == {**reply, "type": "result", "data": {"state": "paused"}}
    reply = await sue.command("admin.users.revoke", {"token_id": str(uuid.uuid4())})
    assert reply["code"] == "forbidden"
    assert [n for _, n, _ in telephony.handled] == ["agent.state.set"]


async def test_admin_command_reaches_the_handler_and_its_error_code_is_kept(
    open_client: Any, tokens: dict[str, str], telephony: Telephony
) -> None:
    ada: Client = await open_client(tokens["ada"])
    token_id = str(uuid.uuid4())
    reply = await ada.command("admin.users.revoke", {"token_id": token_id})
    assert (reply["code"], reply["details"]) == ("not_found", {"token_id": token_id})


# --- resume --------------------------------------------------------------------------


async def test_reconnect_with_last_seq_gets_exactly_the_missed_events(
    open_client: Any, tokens: dict[str, str], bus: Bus, gateway: Gateway
) -> None:
    alice: Client = await open_client(tokens["alice"])
    snap = await alice.expect("snapshot")
    first_call, _ = publish_call(bus, "alice")
    seen = await alice.events_until(gateway.stats.seq or 7)
    last_seen = seen[-1]["seq"]
    await alice.ws.close()

    publish_call(bus, "bob")  # not hers: must not be replayed
    missed_call, _ = publish_call(bus, "alice")
    await until(lambda: gateway.stats.seq == last_seen + 14)

    again: Client = await open_client()
    ok = await again.auth(tokens["alice"], resume_from=last_seen, stream=snap["stream"])
    assert ok["resumed"] is True
    replayed = await again.events_until(ok["seq"])
    assert call_ids(replayed) == {str(missed_call)}
    assert [m["seq"] for m in replayed] == list(range(last_seen + 8, last_seen + 15))
    assert str(first_call) not in call_ids(replayed)

    # And live events follow the replay without a gap.
    live = bus.publish(AgentStateChanged(agent="alice", user="alice", state="available")).seq
    (event,) = await again.events_until(ok["seq"] + 1)
    assert event["event"]["seq"] == live


async def test_too_old_resume_gets_a_fresh_snapshot_saying_so(
    make_gateway: Any, open_client: Any, tokens: dict[str, str], bus: Bus
) -> None:
    gw: Gateway = await make_gateway(replay_buffer=5)
    for n in range(20):
        bus.publish(RegistrationChanged(str(n), "registered", 200, "OK", "w1"))
    await until(lambda: gw.stats.seq == 20)
    sue: Client = await open_client(gw=gw)
    ok = await sue.auth(tokens["sue"], resume_from=3, stream=gw.stream)
    assert ok["resumed"] is False
    snap = await sue.expect("snapshot")
    assert (snap["resumed"], snap["reason"], snap["seq"]) == (False, "too_old", 20)

    within: Client = await open_client(gw=gw)
    ok = await within.auth(tokens["sue"], resume_from=16, stream=gw.stream)
    assert ok["resumed"] is True
    assert [m["seq"] for m in await within.events_until(20)] == [17, 18, 19, 20]


async def test_resume_from_another_stream_gets_a_fresh_snapshot(
    open_client: Any, tokens: dict[str, str]
) -> None:
    sue: Client = await open_client()
    ok = await sue.auth(tokens["sue"], resume_from=0, stream="an-earlier-run")
    assert ok["resumed"] is False
    snap = await sue.expect("snapshot")
    assert snap["reason"] == "unknown_seq"


# --- slow clients, limits, TLS ------------------------------------------------------


async def test_a_client_that_stops_reading_is_closed_while_others_keep_up_within_50ms(
    make_gateway: Any, open_client: Any, tokens: dict[str, str], bus: Bus
) -> None:
    gw: Gateway = await make_gateway(client_queue=20, send_timeout=30.0)
    # The slow client's socket has a small receive buffer so that the flood
    # needed to fill everything between the gateway and it stays small.
    # (Set before connecting: the TCP window is agreed in the handshake.)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", gw.port))
    slow: Client = await open_client(gw=gw, sock=sock, max_queue=4)
    await slow.auth(tokens["sue"])
    fast = [await open_client(tokens[name], gw=gw) for name in ("sue", "ada")]
    for client in fast:
        await client.expect("snapshot")

    arrivals: list[list[tuple[float, str]]] = [[] for _ in fast]
    loop = asyncio.get_running_loop()

    async def read(ws: Any, into: list[tuple[float, str]]) -> None:
        async for raw in ws:
            into.append((loop.time(), raw))

    delays: list[float] = []
    reason = "x" * 2000
    async with asyncio.TaskGroup() as tg:
        readers = [
            tg.create_task(read(c.ws, into), name="reader")
            for c, into in zip(fast, arrivals, strict=True)
        ]
        batches = 0
        while gw.stats.closed_too_slow == 0:
            batches += 1
            assert batches < 400, "the slow client was never closed"
            for n in range(20):
                bus.publish(RegistrationChanged(str(n), "registered", 200, reason, "w1"))
            sent_at = loop.time()
            target = gw.stats.seq + 20
            for into in arrivals:
                await until(
                    lambda into=into, target=target: bool(into) and _seq(into[-1][1]) >= target
                )
                delays.append(into[-1][0] - sent_at)
        # After the slow client is gone, the others still get events promptly.
        sent_at = loop.time()
        last = bus.publish(RegistrationChanged("x", "failed", 408, "timeout", "w1")).seq
        for into in arrivals:
            await until(lambda into=into: bool(into) and _seq(into[-1][1]) >= last)
            delays.append(into[-1][0] - sent_at)
        for reader in readers:
            reader.cancel()

    assert max(delays) < 0.050, f"others were delayed: max {max(delays) * 1000:.1f} ms"
    closed = await slow.closed(timeout=10.0)
    assert closed.rcvd is not None
    assert closed.rcvd.code == 4008
    for into in arrivals:
        for _, raw in into:
            validate_server_message(json.loads(raw))


def _seq(raw: str) -> int:
    seq: int = json.loads(raw)["seq"]
    return seq


async def test_commands_over_the_rate_get_rate_limited_and_persistent_abuse_closes(
    make_gateway: Any, open_client: Any, tokens: dict[str, str]
) -> None:
    gw: Gateway = await make_gateway(commands_per_second=2)
    sue: Client = await open_client(tokens["sue"], gw=gw)
    await sue.expect("snapshot")
    burst = [
        {"type": "command", "id": f"r{n}", "name": "dialer.pause", "args": {"agent": "bob"}}
        for n in range(40)
    ]
    for message in burst:
        await sue.ws.send(json.dumps(message))
    closed = await sue.closed()
    replies = [m for m in sue.received if m["type"] in ("result", "error")]
    assert [m["type"] for m in replies[:2]] == ["result", "result"]
    assert replies[2]["code"] == "rate_limited"
    assert replies[2]["id"] == "r2"
    assert closed.rcvd is not None
    assert closed.rcvd.code == 4029
    assert len(replies) < 40


async def test_a_message_over_max_size_closes_with_1009(
    make_gateway: Any, open_client: Any, tokens: dict[str, str]
) -> None:
    gw: Gateway = await make_gateway(max_message_bytes=1024)
    sue: Client = await open_client(tokens["sue"], gw=gw)
    await sue.expect("snapshot")
    await sue.ws.send(
        json.dumps(
            {
                "type": "command",
                "id": "big",
                "name": "call.note",
                "args": {"call_id": str(uuid.uuid4()), "text": "x" * 2000},
            }
        )
    )
    closed = await sue.closed()
    assert closed.rcvd is not None
    assert closed.rcvd.code == 1009


async def test_gateway_close_sends_1001_and_is_idempotent(
    make_gateway: Any, open_client: Any, tokens: dict[str, str]
) -> None:
    gw: Gateway = await make_gateway()
    sue: Client = await open_client(tokens["sue"], gw=gw)
    await sue.expect("snapshot")
    await gw.aclose()
    await gw.aclose()
    closed = await sue.closed()
    assert closed.rcvd is not None
    assert closed.rcvd.code == CloseCode.GOING_AWAY
