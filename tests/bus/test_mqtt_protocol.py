"""The bridge's rules without a broker: topics, command parsing, replies, backoff."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bus import Bus
from bus._mqtt_protocol import (
    MAX_COMMAND_BYTES,
    BadAssertion,
    BadCommand,
    Topics,
    error_reply,
    parse_command,
    sign_assertion,
    topic_level,
    verify_assertion,
)
from bus.mqtt import MqttBridge

T = Topics(prefix="acme/sb", site="paris")


def test_topics_of_a_site() -> None:
    assert T.event("call.ended") == "acme/sb/paris/events/call.ended"
    assert T.events == "acme/sb/paris/events/#"
    assert T.agent_state("alice") == "acme/sb/paris/agents/alice/state"
    assert T.status == "acme/sb/paris/status"
    assert T.commands == "acme/sb/paris/commands"
    assert T.reply("c1") == "acme/sb/paris/replies/c1"


def test_names_with_topic_characters_stay_one_level_and_can_be_decoded() -> None:
    assert topic_level("a/b+c#d%e\0") == "a%2Fb%2Bc%23d%25e%00"
    assert topic_level("José 2") == "José 2"


@pytest.mark.parametrize(
    ("topic", "allowed"),
    [
        ("crm/inbox/ada", False),
        ("acme/sb/paris/replies/ada/1", True),
        ("acme/sb/paris/replies", False),
        ("acme/sb/paris/replies/", False),
        ("acme/sb/paris/replies/+", False),
        ("acme/sb/paris/events/call.ended", False),
        ("acme/sb/lyon/replies/x", False),
        ("acme/sb", False),
        ("crm/+/x", False),
        ("crm/#", False),
        ("$SYS/x", False),
        ("", False),
    ],
)
def test_reply_topics_only_under_the_sites_own_replies(topic: str, allowed: bool) -> None:
    assert T.reply_allowed(topic) is allowed


def _refused(message: Any) -> BadCommand:
    payload = message if isinstance(message, bytes) else json.dumps(message).encode()
    with pytest.raises(BadCommand) as info:
        parse_command(payload, T)
    return info.value


def test_a_well_formed_command_defaults_its_reply_topic_and_args() -> None:
    command = parse_command(json.dumps({"id": "c1", "token": "sbt_x", "name": "n"}).encode(), T)
    assert (command.reply_to, command.args) == (T.reply("c1"), {})
    assert "sbt_x" not in repr(command)


def test_refusals_carry_a_stable_code_and_where_to_answer() -> None:
    assert (_refused(b"nope").code, _refused(b"nope").reply_to) == ("bad_request", T.replies)
    assert _refused(b"x" * (MAX_COMMAND_BYTES + 1)).reply_to is None
    inbox = T.reply("crm/in")
    no_id = _refused({"token": "t", "name": "n", "reply_to": inbox})
    assert (no_id.code, no_id.reply_to, no_id.id) == ("bad_request", inbox, None)
    assert _refused({"id": "a/b", "token": "t", "name": "n"}).reply_to == T.replies
    no_token = _refused({"id": "c", "name": "n"})
    assert (no_token.code, no_token.reply_to) == ("unauthorized", T.reply("c"))
    assert _refused({"id": "c", "token": "", "name": "n"}).code == "unauthorized"
    assert _refused({"id": "c", "token": "t"}).code == "bad_request"


def test_error_reply_survives_unwritable_details() -> None:
    reply = json.loads(error_reply("c", "forbidden", "no", {"x": object()}))
    assert reply == {"id": "c", "type": "error", "error": {"code": "forbidden", "message": "no"}}


async def _none(token: str) -> None:
    return None


async def _handler(principal: object, name: str, args: Any) -> None:
    return None


def test_backoff_grows_exponentially_with_jitter_up_to_the_cap() -> None:
    bridge: MqttBridge[object] = MqttBridge(
        Bus("paris"),
        url="mqtt://broker.invalid",
        site="paris",
        authenticate=_none,
        handler=_handler,
        reconnect_min=1.0,
        reconnect_max=8.0,
    )
    for failures, ceiling in [(0, 1.0), (1, 2.0), (3, 8.0), (10, 8.0), (1000, 8.0)]:
        bridge._connection.failures = failures
        delays = [bridge._connection.backoff() for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1


def test_a_password_in_the_url_is_refused() -> None:
    with pytest.raises(ValueError, match="password"):
        MqttBridge(
            Bus("paris"),
            url="mqtt://u:secret@broker",
            site="paris",
            authenticate=_none,
            handler=_handler,
        )


SECRET = b"k" * 32


def _signed(**changes: Any) -> str:
    claims: dict[str, Any] = {"user_id": "u1", "site": "paris", "command_id": "c1"}
    claims["expires"] = 1_000_030
    claims.update(changes)
    return sign_assertion(SECRET, **claims)


def test_a_gateway_assertion_names_one_user_for_one_command_of_one_site() -> None:
    assert verify_assertion(SECRET, _signed(), site="paris", command_id="c1", now=1_000_000) == (
        "u1",
        1_000_030,
    )


@pytest.mark.parametrize(
    ("assertion", "site", "command_id", "now", "reason"),
    [
        (
            sign_assertion(
                b"x" * 32, user_id="u1", site="paris", command_id="c1", expires=1_000_030
            ),
            "paris",
            "c1",
            1_000_000,
            "bad signature",
        ),
        (_signed(), "lyon", "c1", 1_000_000, "another site"),
        (_signed(), "paris", "c2", 1_000_000, "another command"),
        (_signed(), "paris", "c1", 1_000_031, "expired"),
        (_signed(expires=1_000_000 + 3600), "paris", "c1", 1_000_000, "too long"),
        (_signed().replace(".", "x.", 1), "paris", "c1", 1_000_000, "bad signature"),
        ("not.an.assertion", "paris", "c1", 1_000_000, "malformed"),
    ],
)
def test_assertions_that_do_not_hold_are_refused(
    assertion: str, site: str, command_id: str, now: int, reason: str
) -> None:
    with pytest.raises(BadAssertion, match=reason):
        verify_assertion(SECRET, assertion, site=site, command_id=command_id, now=now)


def test_a_command_carries_a_token_or_an_assertion_never_both() -> None:
    command = parse_command(json.dumps({"id": "c1", "assertion": "a.b", "name": "n"}).encode(), T)
    assert (command.token, command.assertion) == (None, "a.b")
    assert "a.b" not in repr(command)
    both = _refused({"id": "c", "token": "t", "assertion": "a.b", "name": "n"})
    assert both.code == "bad_request"
