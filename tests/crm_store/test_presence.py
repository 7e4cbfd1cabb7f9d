"""Agent presence in the store (SQLite and PostgreSQL), and the service keeping it."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bus import AgentStateChanged, Bus, Subscription
from bus.agent_states import AgentStates
from bus.presence import InvalidPresence, PresenceState
from config import Config, parse_config
from crm_store import AgentPresenceRecord, Store, StoreError, open_store, upgrade

T0 = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
T1 = datetime(2026, 12, 4, 9, 30, tzinfo=UTC)

SITE = "east"

CONFIG = f"""\
[site]
id = "{SITE}"

[pbx]
host = "127.0.0.1"
domain = "switchboard.lab"

[[lines]]
extension = "2001"
secret = "s1"
role = "agent"

[[lines]]
extension = "2002"
secret = "s2"
role = "agent"

[[agents]]
name = "Alice Martin"
extension = "1001"
line = "2001"
user = "alice"

[[agents]]
name = "Bob Durand"
extension = "1002"
line = "2002"
"""


def _config() -> Config:
    return parse_config(CONFIG)


def _watched() -> tuple[Bus, Subscription]:
    bus = Bus("site")
    return bus, bus.subscribe("test", types={AgentStateChanged.TYPE})


def _published(sub: Subscription) -> list[AgentStateChanged]:
    """The ``agent.state`` events published so far (drained)."""
    events = []
    while (envelope := sub.get_nowait()) is not None:
        assert isinstance(envelope.event, AgentStateChanged)
        events.append(envelope.event)
    return events


async def test_presence_is_saved_replaced_and_forgotten(store: Store) -> None:
    assert await store.presence.load("east") == {}
    await store.presence.save("east", "alice", state="available", reason=None, since=T0)
    await store.presence.save("east", "alice", state="paused", reason="lunch", since=T1)
    await store.presence.save("east", "Bob Durand", state="offline", reason=None, since=T0)
    assert await store.presence.load("east") == {
        "alice": AgentPresenceRecord("alice", "paused", "lunch", T1),
        "Bob Durand": AgentPresenceRecord("Bob Durand", "offline", None, T0),
    }
    await store.presence.forget("east", "alice")
    await store.presence.forget("east", "nobody")
    assert set(await store.presence.load("east")) == {"Bob Durand"}


async def test_sites_sharing_a_database_keep_their_agents_apart(store: Store) -> None:
    await store.presence.save("east", "alice", state="available", reason=None, since=T0)
    await store.presence.save("west", "alice", state="paused", reason="away", since=T1)
    await store.presence.forget("west", "alice")
    assert await store.presence.load("east") == {
        "alice": AgentPresenceRecord("alice", "available", None, T0)
    }
    assert await store.presence.load("west") == {}


async def test_declared_states_come_back_in_a_new_service(store: Store) -> None:
    config = _config()
    first = AgentStates(config, Bus("site"), store=store.presence)
    await first.restore()
    await first.set("alice", "available")
    await first.set("Bob Durand", "paused", "training")
    first.presence.call_started("alice")  # calls are not stored: busy is not a state to keep

    bus, sub = _watched()
    second = AgentStates(config, bus, store=store.presence)
    await second.restore()
    assert second.state("alice") == ("available", None)
    assert second.state("Bob Durand") == ("paused", "training")
    assert second.presence.offer_order() == ["alice"]
    second.publish_all()
    assert [(e.agent, e.user, e.state, e.reason) for e in _published(sub)] == [
        ("alice", "alice", "available", None),
        ("Bob Durand", None, "paused", "training"),
    ]


async def test_a_refused_change_is_neither_stored_nor_published(store: Store) -> None:
    bus, sub = _watched()
    agents = AgentStates(_config(), bus, store=store.presence)
    with pytest.raises(InvalidPresence):
        await agents.set("alice", "busy")
    with pytest.raises(InvalidPresence):
        await agents.set("alice", "wrap_up")  # only from available
    with pytest.raises(KeyError):
        await agents.set("carol", "available")
    assert await store.presence.load(SITE) == {}
    assert _published(sub) == []
    assert agents.presence.state("alice") is PresenceState.OFFLINE


async def test_a_store_that_cannot_write_changes_nothing(tmp_path: Path) -> None:
    db = tmp_path / "crm.sqlite3"
    url = f"sqlite+aiosqlite:///{db}"
    await upgrade(url)
    async with open_store(url, default_region="FR") as store:
        bus, sub = _watched()
        agents = AgentStates(_config(), bus, store=store.presence)
        await agents.set("alice", "available")
        with sqlite3.connect(db) as other:
            other.execute("ALTER TABLE agent_presence RENAME TO agent_presence_elsewhere")
        with pytest.raises(StoreError):
            await agents.set("alice", "offline")
        assert agents.state("alice") == ("available", None)
        assert agents.presence.offer_order() == ["alice"]
        assert [e.state for e in _published(sub)] == ["available"]
        # The next change goes through once the table is back.
        with sqlite3.connect(db) as other:
            other.execute("ALTER TABLE agent_presence_elsewhere RENAME TO agent_presence")
        await agents.set("alice", "offline")
        assert (await store.presence.load(SITE))["alice"].state == "offline"


async def test_reload_removing_an_agent_forgets_its_stored_presence(store: Store) -> None:
    config = _config()
    bus, sub = _watched()
    agents = AgentStates(config, bus, store=store.presence)
    await agents.set("alice", "available")
    await agents.set("Bob Durand", "available")
    only_alice = config.model_copy(update={"agents": config.agents[:1]})
    await agents.reconfigure(only_alice)
    assert set(await store.presence.load(SITE)) == {"alice"}
    assert [(e.agent, e.state) for e in _published(sub)][-1] == ("Bob Durand", "offline")
    with pytest.raises(KeyError):
        agents.state("Bob Durand")


async def test_a_stored_state_the_model_does_not_know_leaves_the_agent_offline(
    store: Store,
) -> None:
    await store.presence.save(SITE, "alice", state="on_holiday", reason=None, since=T0)
    await store.presence.save(SITE, "Bob Durand", state="wrap_up", reason=None, since=T1)
    agents = AgentStates(_config(), Bus("site"), store=store.presence)
    await agents.restore()
    assert agents.state("alice") == ("offline", None)
    assert agents.state("Bob Durand") == ("wrap_up", None)
    assert agents.presence.status("Bob Durand").since == T1
