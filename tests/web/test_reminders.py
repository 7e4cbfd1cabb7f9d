"""Task reminders: claimed once when their time comes (a clock the test moves),
listed for the widget, and mailed through a real SMTP server on loopback."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from config import MailConfig
from crm_store import ClientKind, Role, Store
from switchboard.reminders import ReminderService
from tests.crm_store.conftest import (  # noqa: F401 - fixtures
    migrated_pg_url,
    postgres_server,
    store,
    store_url,
)


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[Envelope, EmailMessage]] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        parsed = message_from_bytes(envelope.content, _class=EmailMessage, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append((envelope, parsed))
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = _free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def test_a_reminder_is_claimed_once_listed_and_mailed(
    store: Store,  # noqa: F811
    smtp: tuple[Inbox, int],
) -> None:
    inbox, port = smtp
    alice = await store.users.add("alice", "Alice Martin", Role.AGENT)
    await store.users.set_email(alice.id, "alice@example.test")
    client = await store.clients.create(ClientKind.PERSON, first_name="Zoé", last_name="Roux")
    clock = Clock(datetime(2026, 12, 7, 9, 0, tzinfo=UTC))
    task = await store.tasks.create(
        "Call Zoé back",
        note="About the quote",
        due_at=clock.now + timedelta(minutes=10),
        remind_minutes=5,
        duration_minutes=15,
        assignee_user_id=alice.id,
        client_id=client.id,
    )
    mail = MailConfig.model_validate(
        {
            "host": "127.0.0.1",
            "port": port,
            "security": "none",
            "from_address": "switchboard@example.test",
        }
    )
    service = ReminderService(store, interval=0.1, mail=mail, timezone="Europe/Paris", clock=clock)
    assert await service.tick() == []
    assert await store.tasks.reminders_for(alice.id) == []

    clock.now += timedelta(minutes=5)
    delivered = await service.tick()
    assert [t.id for t in delivered] == [task.id]
    assert [t.id for t in await store.tasks.reminders_for(alice.id)] == [task.id]
    assert await service.tick() == []  # claimed once
    assert service.sent == 1
    [(envelope, message)] = inbox.messages
    assert envelope.rcpt_tos == ["alice@example.test"]
    assert message["From"] == "switchboard@example.test"
    assert message["Subject"] == "Reminder: Call Zoé back at 2026-12-07 10:10 CET"
    text = message.get_content()
    assert "With: Zoé Roux" in text
    assert "About the quote" in text
    assert "Duration: 15 min" in text

    await store.tasks.dismiss_reminder(task.id)
    assert await store.tasks.reminders_for(alice.id) == []


async def test_starttls_is_required_when_asked_and_a_failed_mail_is_logged(
    store: Store,  # noqa: F811
    smtp: tuple[Inbox, int],
) -> None:
    inbox, port = smtp
    bob = await store.users.add("bob", "Bob", Role.AGENT)
    await store.users.set_email(bob.id, "bob@example.test")
    clock = Clock(datetime(2026, 12, 7, 9, 0, tzinfo=UTC))
    await store.tasks.create(
        "t", due_at=clock.now + timedelta(minutes=5), remind_minutes=5, assignee_user_id=bob.id
    )
    mail = MailConfig.model_validate(
        {"host": "127.0.0.1", "port": port, "from_address": "sb@example.test"}
    )
    service = ReminderService(store, interval=0.1, mail=mail, clock=clock)
    # The server offers no STARTTLS: nothing goes out in clear; the widget still has it.
    assert len(await service.tick()) == 1
    assert (service.sent, service.failed) == (0, 1)
    assert inbox.messages == []
    assert len(await store.tasks.reminders_for(bob.id)) == 1


def test_mail_config_is_checked() -> None:
    with pytest.raises(ValueError, match="from_address is required"):
        MailConfig.model_validate({"host": "smtp.example.test"})
    with pytest.raises(ValueError, match="go together"):
        MailConfig.model_validate(
            {"host": "smtp.example.test", "from_address": "a@b.cd", "user": "u"}
        )
    with pytest.raises(ValueError, match="unencrypted"):
        MailConfig.model_validate(
            {
                "host": "smtp.example.test",
                "from_address": "a@b.cd",
                "user": "u",
                "password": "p",
                "security": "none",
            }
        )
    assert MailConfig.model_validate({"security": "tls"}).effective_port == 465
