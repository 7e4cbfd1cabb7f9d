"""Hostile client input: refused with bad_request, and nothing else changes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bus import AgentStateChanged, Bus
from ws_gateway import Gateway

from .conftest import DRIVER_TEXT, Client, Telephony

LONE_SURROGATE_REASON = (
    '{"type":"command","id":"s1","name":"agent.state.set",'
    '"args":{"agent":"alice","state":"paused","reason":"lunch \\ud800"}}'
)


async def test_surrogate_reason_gets_bad_request_and_a_supervisor_connecting_after_gets_snapshot(
    open_client: Any, tokens: dict[str, str], telephony: Telephony
) -> None:
    alice: Client = await open_client(tokens["alice"])
    await alice.expect("snapshot")
    await alice.ws.send(LONE_SURROGATE_REASON)
    reply = await alice.expect("error")
    # A message that cannot be read whole is not half-read for its id.
    assert (reply["id"], reply["code"]) == (None, "bad_request")
    assert reply["message"] == "a string is not valid Unicode"
    assert telephony.handled == []

    sue: Client = await open_client(tokens["sue"])
    snapshot = await sue.expect("snapshot")
    assert snapshot["agents"] == []
    # Alice's connection goes on.
    done = await alice.command("agent.state.set", {"state": "paused", "reason": "lunch"})
    assert done["type"] == "result"


async def test_an_event_holding_a_lone_surrogate_reaches_everyone_replaced_not_closing_them(
    open_client: Any, tokens: dict[str, str], bus: Bus
) -> None:
    # Defence in depth: a value that slipped past every input check (a peer's
    # text published by some other path) is sent as U+FFFD, to old and new clients.
    sue: Client = await open_client(tokens["sue"])
    await sue.expect("snapshot")
    seq = bus.publish(
        AgentStateChanged(agent="alice", user="alice", state="paused", reason="x\ud800y")
    ).seq
    [event] = await sue.events_until(seq)
    assert event["event"]["data"]["reason"] == "x\ufffdy"

    ada: Client = await open_client(tokens["ada"])
    snapshot = await ada.expect("snapshot")
    assert [a["reason"] for a in snapshot["agents"]] == ["x\ufffdy"]


BAD_MESSAGES = {
    "deep": "[" * 60000,
    "deep_args": '{"type":"command","id":"d1","name":"call.hangup","args":'
    + '{"a":' * 40
    + "1"
    + "}" * 40
    + "}",
    "nan": '{"type":"command","id":"n1","name":"agent.state.set",'
    '"args":{"state":"paused","reason":NaN}}',
    "infinity": '{"type":"command","id":"i1","name":"call.hangup","args":{"x":Infinity}}',
    "float_overflow": '{"type":"command","id":"f1","name":"call.hangup","args":{"x":1e400}}',
    "huge_int": '{"type":"command","id":"h1","name":"call.hangup","args":{"x":' + "9" * 400 + "}}",
    "surrogate_key": '{"type":"command","id":"k1","name":"call.hangup","args":{"\\udc00":1}}',
    "not_utf8_escape": '{"type":"command","id":"u1","name":"\\udfff"}',
}


@pytest.mark.parametrize("raw", BAD_MESSAGES.values(), ids=BAD_MESSAGES.keys())
async def test_malformed_command_gets_bad_request_and_the_connection_goes_on(
    open_client: Any, tokens: dict[str, str], telephony: Telephony, raw: str
) -> None:
    alice: Client = await open_client(tokens["alice"])
    await alice.expect("snapshot")
    await alice.ws.send(raw)
    reply = await alice.expect("error")
    assert reply["code"] == "bad_request"
    assert len(reply["message"]) < 300
    assert telephony.handled == []
    done = await alice.command("agent.state.set", {"state": "available"})
    assert done["type"] == "result"


async def test_deep_message_while_rate_limited_gets_rate_limited_and_the_connection_goes_on(
    make_gateway: Any, open_client: Any, tokens: dict[str, str]
) -> None:
    gw: Gateway = await make_gateway(commands_per_second=1)
    alice: Client = await open_client(tokens["alice"], gw=gw)
    await alice.expect("snapshot")
    await alice.ws.send(json.dumps({"type": "command", "id": "a", "name": "call.hangup"}))
    await alice.expect("error")
    await alice.ws.send("[" * 60000)
    reply = await alice.expect("error")
    assert (reply["id"], reply["code"]) == (None, "rate_limited")
    await alice.ws.send(json.dumps({"type": "command", "id": "b", "name": "call.hangup"}))
    assert (await alice.expect("error"))["code"] in ("rate_limited", "bad_request")


async def test_a_handler_failure_gets_internal_without_its_text_and_the_connection_goes_on(
    open_client: Any, tokens: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    alice: Client = await open_client(tokens["alice"])
    await alice.expect("snapshot")
    reply = await alice.command("dialer.skip")
    assert (reply["code"], reply["message"], reply["details"]) == ("internal", "internal error", {})
    assert "sqlite" not in json.dumps(reply).lower()
    done = await alice.command("agent.state.set", {"state": "available"})
    assert done["type"] == "result"
    # The text is in the log, with the command's id.
    out = capsys.readouterr().out
    logged = [line for line in out.splitlines() if "ws.command_failed" in line]
    assert len(logged) == 1
    assert f"command_id={reply['id']}" in logged[0]
    assert DRIVER_TEXT in out
