"""The leads pool, the kanban and the calendar in Chromium against the real app and
store (the widget's harness of test_pages_browser): two agents taking one lead at
once, a reminder shown in the widget and mailed to a real SMTP server on loopback
with the clock moved forward, and a task dragged to another day of the week."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiosmtpd.controller import Controller
from playwright.async_api import BrowserContext, Page, expect

from config import Config, MailConfig, TasksConfig
from crm_store import ClientKind, LeadSource, Store, TaskKind
from switchboard.reminders import ReminderService
from tests.web import test_pages_browser as harness
from tests.web.test_pages_browser import PASSWORD, Live, _live
from tests.web.test_reminders import Clock, Inbox

from ._auth_fixtures import store

__all__ = ["store"]

pytestmark = pytest.mark.browser

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
PARIS = ZoneInfo("Europe/Paris")


@pytest.fixture
async def live(
    store: Store,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Live]:
    """The app with the widget asking for reminders every 0.3 s."""
    plain = harness._config

    def quick(*args: Any) -> Config:
        return plain(*args).model_copy(update={"tasks": TasksConfig(reminder_interval=0.3)})

    monkeypatch.setattr(harness, "_config", quick)
    async for found in _live(store, tmp_path, "optional"):
        yield found


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


async def _logged_in(live: Live, username: str) -> tuple[BrowserContext, Page]:
    context = await live.browser.new_context(
        locale="en-GB", timezone_id="Europe/Paris", viewport={"width": 1280, "height": 800}
    )
    live.watch(context)
    page = await context.new_page()
    await page.goto(f"{live.url}/login?next=/leads")
    await page.fill("#username", username)
    await page.fill("#password", PASSWORD)
    await page.click("[data-testid=login-submit]")
    await page.wait_for_url(f"{live.url}/leads")
    return context, page


async def test_two_agents_take_the_same_lead_at_once(live: Live) -> None:
    store = live.store
    await store.leads.create(
        first_name="Marta",
        last_name="Kowalska",
        phones=["+48 22 123 45 67"],
        source=LeadSource.IMPORT,
    )
    lead = await store.leads.create(
        first_name="Léa",
        last_name="Moreau",
        company_name="Boulangerie Moreau",
        phones=["04 91 23 45 67"],
        source=LeadSource.INCOMING_CALL,
    )
    _, alice = await _logged_in(live, "alice")
    _, bob = await _logged_in(live, "bob")
    for page in (alice, bob):
        await expect(page.locator("[data-testid=lead-row]").first).to_contain_text("Léa Moreau")
    await alice.screenshot(path=str(SCREENSHOTS / "crm-leads-pool.png"), full_page=True)

    take = f"tr[data-lead='{lead.id}'] [data-testid=take]"
    await asyncio.gather(alice.click(take), bob.click(take))

    # Both answers are in once neither page shows the button any more.
    for page in (alice, bob):
        await expect(page.locator(take)).to_have_count(0)
    owner = (await store.leads.get(lead.id)).owner_user_id
    assert owner in (live.users["alice"].id, live.users["bob"].id)
    winner_page, loser_page = (alice, bob) if owner == live.users["alice"].id else (bob, alice)
    winner = "Alice Agent" if owner == live.users["alice"].id else "Bob Agent"
    await expect(loser_page.locator("[data-testid=taken-by]")).to_have_text(
        f"{winner} took this lead first."
    )
    await expect(winner_page.locator(f"tr[data-lead='{lead.id}']")).to_have_count(0)
    await winner_page.goto(f"{live.url}/leads?view=mine")
    await expect(winner_page.locator("[data-testid=lead-row]")).to_contain_text("Léa Moreau")


async def test_reminder_in_the_widget_and_by_mail_then_drag_in_the_week(
    live: Live, smtp: tuple[Inbox, int]
) -> None:
    inbox, port = smtp
    store = live.store
    alice = live.users["alice"]
    await store.users.set_email(alice.id, "alice@example.test")
    client = await store.clients.create(
        ClientKind.PERSON, first_name="Zoé", last_name="Roux", phones=["06 12 34 56 78"]
    )
    clock = Clock(datetime.now(UTC).replace(microsecond=0))
    task = await store.tasks.create(
        "Call Zoé back",
        due_at=clock.now + timedelta(minutes=10),
        remind_minutes=5,
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
    service = ReminderService(store, interval=0.3, mail=mail, timezone="Europe/Paris", clock=clock)
    widget = await live.page()
    assert await service.tick() == []
    clock.now += timedelta(minutes=5)
    assert [t.id for t in await service.tick()] == [task.id]
    await expect(widget.locator("[data-testid=reminder]")).to_contain_text("Call Zoé back")
    await expect(widget.locator("[data-testid=reminder]")).to_contain_text("Zoé Roux")
    [(envelope, message)] = inbox.messages
    assert envelope.rcpt_tos == ["alice@example.test"]
    assert message["Subject"].startswith("Reminder: Call Zoé back at ")
    await widget.locator("[data-testid=reminder] button").click()
    await expect(widget.locator("[data-testid=reminder]")).to_have_count(0)
    assert await store.tasks.reminders_for(alice.id) == []

    # The week of a fixed Wednesday: the meeting moves to Friday, at the same time.
    wednesday = datetime(2027, 3, 10, 14, 30, tzinfo=PARIS)
    meeting = await store.tasks.create(
        "Quote meeting",
        kind=TaskKind.MEETING,
        due_at=wednesday,
        duration_minutes=60,
        assignee_user_id=alice.id,
        client_id=client.id,
    )
    await store.tasks.create(
        "Send the quote",
        kind=TaskKind.EMAIL,
        due_at=wednesday + timedelta(days=1),
        assignee_user_id=alice.id,
    )
    page = widget
    await page.goto(f"{live.url}/calendar?view=week&date=2027-03-10")
    item = page.locator(f"[data-task='{meeting.id}']")
    await expect(page.locator("[data-testid=day-2027-03-10]")).to_contain_text("Quote meeting")
    await page.screenshot(path=str(SCREENSHOTS / "crm-calendar-week.png"), full_page=True)
    await item.drag_to(page.locator("[data-testid=day-2027-03-12]"))
    await expect(page.locator("[data-testid=day-2027-03-12]")).to_contain_text("Quote meeting")
    moved = await store.tasks.get(meeting.id)
    assert moved.due_at == wednesday + timedelta(days=2)

    await page.goto(f"{live.url}/tasks")
    card = page.locator("[data-testid=task-card]", has_text="Quote meeting")
    await expect(page.locator("[data-testid=column-todo]")).to_contain_text("Quote meeting")
    await card.drag_to(page.locator("[data-testid=column-in_progress]"))
    await expect(page.locator("[data-testid=column-in_progress]")).to_contain_text("Quote meeting")
    assert (await store.tasks.get(meeting.id)).status == "in_progress"
    await page.screenshot(path=str(SCREENSHOTS / "crm-kanban.png"), full_page=True)
