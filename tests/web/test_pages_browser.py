"""The widget in a real browser (Debian's Chromium through Playwright) against the
real app, a real websocket gateway and a real SQLite store, all in the test's loop.

The telephony is the one peer replaced: :class:`Phones` carries out the commands
the widget sends the way the SIP side would, by publishing the call events on the
daemon's bus; the tests publish the events of calls coming in the same way.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
import uuid
import wave
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Error,
    Page,
    Response,
    async_playwright,
    expect,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from bus import (
    Bus,
    CallAnswered,
    CallBridged,
    CallCreated,
    CallEnded,
    CallHeld,
    CallRinging,
    CallTransferred,
)
from bus.agent_states import AgentStates
from bus.events import (
    DialerDialing,
    DialerResult,
    DialerSessionPaused,
    DialerSessionStarted,
    Event,
)
from config import Config
from crm_store import (
    CallDirection,
    CallEndReason,
    CallListEntry,
    ClientKind,
    LeadSource,
    Role,
    Store,
    User,
)
from switchboard.daemon import command_runner
from web._services import Services
from web.app import create_app
from web.server import HttpServer
from ws_gateway import (
    Gateway,
    GatewaySettings,
    Principal,
    store_authenticator,
    store_session_check,
)

from ._auth_fixtures import store

__all__ = ["store"]  # the fixture: a migrated SQLite store

pytestmark = pytest.mark.browser

PASSWORD = "correct horse battery"
CHROMIUM = "/usr/bin/chromium"
CUSTOMER = "+33612345678"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _config(http_port: int, ws_port: int, crm_port: int, recordings: Path, wrap_up: str) -> Config:
    return Config.model_validate(
        {
            "site": {"id": "browser-test", "default_region": "FR"},
            "pbx": {"host": "127.0.0.1", "domain": "switchboard.lab"},
            "lines": [
                {"extension": "2001", "secret": "s1", "role": "agent"},
                {"extension": "2002", "secret": "s2", "role": "agent"},
            ],
            "agents": [
                {"name": "Alice Martin", "extension": "101", "line": "2001", "user": "alice"},
                {"name": "Bob Durand", "extension": "102", "line": "2002", "user": "bob"},
            ],
            "recording": {"directory": str(recordings)},
            "websocket": {
                "host": "127.0.0.1",
                "port": ws_port,
                "allowed_origins": [
                    f"http://127.0.0.1:{http_port}",
                    f"http://127.0.0.1:{crm_port}",
                ],
            },
            "widget": {"wrap_up": wrap_up},
        }
    )


@dataclass
class Phones:
    """The telephony side: carries out call commands by publishing what they cause."""

    bus: Bus
    store: Store
    agents: AgentStates
    handled: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def publish(self, event: Event) -> None:
        self.bus.publish(event)

    async def handle(
        self, principal: Principal, name: str, args: dict[str, Any]
    ) -> Mapping[str, Any]:
        self.handled.append((name, args))
        call_id = uuid.UUID(args["call_id"]) if "call_id" in args else None
        agent = next(iter(sorted(principal.agents)), None)
        if name == "agent.state.set":
            await self.agents.set(args["agent"], args["state"], args.get("reason"))
            return {}
        if name == "call.answer":
            assert call_id is not None
            self.publish(CallAnswered(call_id=call_id, leg="agent", agent=agent))
            self.publish(CallBridged(call_id=call_id, agent=agent, recording=False))
            return {"agent": agent}
        if name in ("call.hold", "call.resume"):
            assert call_id is not None
            self.publish(CallHeld(call_id=call_id, agent=agent, held=name == "call.hold"))
            return {}
        if name == "call.hangup":
            assert call_id is not None
            self.publish(
                CallEnded(
                    call_id=call_id, reason="completed", sip_code=200, agent=agent, talk_seconds=5
                )
            )
            return {}
        if name == "call.transfer":
            assert call_id is not None
            kind, to = args["mode"], args["to"]
            self.publish(
                CallTransferred(call_id=call_id, agent=agent, kind=kind, target=to, state="started")
            )
            if kind == "attended":
                self.publish(
                    CallTransferred(
                        call_id=call_id, agent=agent, kind=kind, target=to, state="consulting"
                    )
                )
            return {}
        if name == "call.transfer.complete":
            assert call_id is not None
            self.publish(
                CallTransferred(
                    call_id=call_id, agent=agent, kind="attended", target="102", state="completed"
                )
            )
            return {}
        if name == "call.note":
            assert call_id is not None
            await self.store.calls.set_note(call_id, args["text"] or None)
            return {}
        if name == "call.disposition":
            assert call_id is not None
            await self.store.calls.set_disposition(call_id, args["disposition"])
            return {}
        if name == "call.create_lead":
            assert call_id is not None
            call = await self.store.calls.get(call_id)
            lead = await self.store.leads.create(
                first_name=args["name"],
                phones=[call.from_number],
                source=LeadSource.INCOMING_CALL,
                owner_user_id=principal.user_id,
            )
            return {"lead_id": str(lead.id)}
        if name == "dialer.start":
            self.publish(
                DialerSessionStarted(
                    session_id=uuid.uuid4(),
                    agent=agent or "",
                    list_id=uuid.UUID(args["call_list_id"]),
                    dialed=0,
                    answered=0,
                    remaining=3,
                    agent_leg="per_call",
                )
            )
            return {}
        return {}


class LateCalls:
    """The current gateway's view of the calls (a restarted gateway has a new one)."""

    def __init__(self) -> None:
        self.gateway: Gateway | None = None

    def knows_call(self, call_id: uuid.UUID) -> bool:
        assert self.gateway is not None
        return self.gateway.projection.knows_call(call_id)

    def call_agent(self, call_id: uuid.UUID) -> str | None:
        assert self.gateway is not None
        return self.gateway.projection.call_agent(call_id)


@dataclass
class Live:
    config: Config
    store: Store
    bus: Bus
    phones: Phones
    calls: LateCalls
    url: str
    users: dict[str, User]
    browser: Browser
    gateway: Gateway
    contexts: list[BrowserContext] = field(default_factory=list)
    crm_url: str = ""
    #: What no page should meet: server errors, partials refused, script errors,
    #: content security policy violations.
    bad_responses: list[str] = field(default_factory=list)

    def watch(self, context: BrowserContext) -> None:
        def seen(response: Response) -> None:
            path = urlsplit(response.url).path
            if response.status >= 500 or (
                response.status >= 400 and path.startswith(("/partials/", "/static/"))
            ):
                self.bad_responses.append(f"{response.status} {response.url}")

        def console(message: ConsoleMessage) -> None:
            text = message.text
            if message.type == "error" and "Failed to load resource" not in text:
                self.bad_responses.append(f"console: {text}")

        def page_error(error: Error) -> None:
            self.bad_responses.append(f"page error: {error}")

        def opened(page: Page) -> None:
            page.on("console", console)
            page.on("pageerror", page_error)

        context.on("response", seen)
        context.on("page", opened)
        self.contexts.append(context)

    def publish(self, event: Event) -> None:
        self.bus.publish(event)

    async def start_gateway(self) -> None:
        cfg = self.config
        gateway = Gateway(
            self.bus,
            authenticate=store_authenticator(self.store.users, lambda: cfg.agents),
            handler=self.phones,
            settings=GatewaySettings.from_config(cfg.websocket),
            session_check=store_session_check(self.store.users, lambda: cfg.agents),
        )
        await gateway.start()
        self.gateway = gateway
        self.calls.gateway = gateway

    async def page(self, *, context: BrowserContext | None = None) -> Page:
        """A page of the widget, logged in as alice, once its snapshot is applied."""
        if context is None:
            context = await self.browser.new_context(locale="en-GB", timezone_id="Europe/Paris")
            self.watch(context)
            page = await context.new_page()
            await page.goto(f"{self.url}/login")
            await page.fill("#username", "alice")
            await page.fill("#password", PASSWORD)
            await page.click("[data-testid=login-submit]")
            await page.wait_for_url(f"{self.url}/widget")
        else:
            page = await context.new_page()
            await page.goto(f"{self.url}/widget")
        await expect(page.locator("body")).to_have_attribute("data-ready", "true")
        return page

    async def stored_call(self, *, direction: CallDirection = CallDirection.INBOUND) -> uuid.UUID:
        call = await self.store.calls.create(
            direction, CUSTOMER, "2001", agent_user_id=self.users["alice"].id
        )
        return call.id


def _crm_page(widget_url: str) -> Starlette:
    """A CRM's page (another origin of the same site) that embeds the panel."""
    html = (
        "<!doctype html><title>CRM</title><h1>Deals</h1>"
        f'<script src="{widget_url}/embed.js" data-corner="bottom-left" async></script>'
    )

    async def page(request: Request) -> HTMLResponse:
        return HTMLResponse(html)

    return Starlette(routes=[Route("/crm.html", page)])


async def _live(store: Store, tmp_path: Path, wrap_up: str) -> AsyncIterator[Live]:
    http_port, ws_port, crm_port = _free_port(), _free_port(), _free_port()
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    config = _config(http_port, ws_port, crm_port, recordings, wrap_up)
    bus = Bus(config.site.id)
    agents = AgentStates(config, bus, store=store.presence)
    await agents.restore()
    phones = Phones(bus, store, agents)
    calls = LateCalls()
    users = {}
    for name, role in (("alice", Role.AGENT), ("bob", Role.AGENT)):
        user = await store.users.add(name, f"{name.title()} Agent", role)
        await store.users.set_password(user.id, PASSWORD)
        users[name] = user
    services = Services(
        store=store,
        config=lambda: config,
        agents=agents,
        commands=command_runner(phones, calls),
        calls=calls,
        ready=lambda: True,
        recordings=recordings,
    )
    app = create_app(services)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM)
        try:
            async with (
                HttpServer(app, host="127.0.0.1", port=http_port) as server,
                HttpServer(_crm_page(server.url), host="127.0.0.1", port=crm_port) as crm,
            ):
                live = Live(
                    config,
                    store,
                    bus,
                    phones,
                    calls,
                    server.url,
                    users,
                    browser,
                    None,  # type: ignore[arg-type]
                    crm_url=crm.url,
                )
                await live.start_gateway()
                try:
                    yield live
                    assert live.bad_responses == []
                finally:
                    for context in live.contexts:
                        await context.close()
                    await live.gateway.aclose()
        finally:
            await browser.close()
    bus.close()


@pytest.fixture
async def live(store: Store, tmp_path: Path) -> AsyncIterator[Live]:
    async for found in _live(store, tmp_path, "required"):
        yield found


@pytest.fixture
async def live_optional(store: Store, tmp_path: Path) -> AsyncIterator[Live]:
    """The widget with ``[widget] wrap_up = "optional"``."""
    async for found in _live(store, tmp_path, "optional"):
        yield found


def _inbound(live: Live, call_id: uuid.UUID, card: dict[str, Any] | None) -> None:
    live.publish(
        CallCreated(
            call_id=call_id,
            direction="inbound",
            from_number=CUSTOMER,
            to_number="100",
            line="2001",
            agent="alice",
            worker_id="w1",
        )
    )
    live.publish(
        CallRinging(
            call_id=call_id,
            leg="agent",
            agent="alice",
            direction="inbound",
            from_number=CUSTOMER,
            to_number="100",
            card=card,
        )
    )


# --- tests ---------------------------------------------------------------------


async def test_login_flow_refuses_a_wrong_password_then_opens_the_widget(live: Live) -> None:
    context = await live.browser.new_context()
    live.watch(context)
    page = await context.new_page()
    await page.goto(f"{live.url}/widget/panel")
    await page.wait_for_url("**/login?next=%2Fwidget%2Fpanel")
    await page.fill("#username", "alice")
    await page.fill("#password", "wrong")
    await expect(page.get_by_test_id("login-submit")).to_be_enabled()
    await page.press("#password", "Enter")
    await expect(page.get_by_test_id("login-error")).to_be_visible()
    await expect(page.get_by_test_id("login-error")).to_have_text("Wrong user name or password.")
    await page.fill("#password", PASSWORD)
    await page.click("[data-testid=login-submit]")
    await page.wait_for_url(f"{live.url}/widget/panel")
    assert "wrong" not in page.url
    await expect(page.locator("body")).to_have_attribute("data-ready", "true")
    await expect(page.get_by_test_id("conn-status")).to_have_attribute("data-state", "online")
    await expect(page.get_by_test_id("conn-status")).to_have_text("Connected")
    await page.get_by_test_id("logout").click()
    await page.wait_for_url(f"{live.url}/login")
    await page.goto(f"{live.url}/widget")
    await page.wait_for_url("**/login?next=%2Fwidget")


async def test_popup_shows_the_callers_card(live: Live) -> None:
    client = await live.store.clients.create(
        ClientKind.PERSON,
        first_name="Claire",
        last_name="Dupont",
        phones=[CUSTOMER],
        tags=["vip"],
        responsible_user_id=live.users["bob"].id,
    )
    page = await live.page()
    call_id = await live.stored_call()
    card = {
        "kind": "client",
        "id": str(client.id),
        "display_name": "Claire Dupont",
        "phone": CUSTOMER,
        "created": False,
        "client_kind": "person",
        "company": None,
        "tags": ["vip"],
        "responsible_user_id": str(live.users["bob"].id),
    }
    published = time.time() * 1000
    _inbound(live, call_id, card)
    popup = page.locator(f"[data-testid=popup][data-call-id='{call_id}']")
    await expect(popup).to_be_visible()
    await expect(popup.get_by_test_id("card-name")).to_have_text("Claire Dupont")
    await expect(popup.get_by_test_id("card-responsible")).to_have_text("Responsible: Bob Agent")
    await expect(popup.get_by_test_id("card-tags")).to_have_text("vip")
    await expect(popup.get_by_test_id("popup-number")).to_have_text("+33 6 12 34 56 78")
    await expect(popup.get_by_test_id("popup-unknown")).to_be_hidden()
    # Nothing called or to do yet: no headings over empty lists.
    await expect(popup.get_by_test_id("card-last-calls-heading")).to_be_hidden()
    await expect(popup.get_by_test_id("card-tasks-heading")).to_be_hidden()
    shown = await page.evaluate(f"window.sbPopupShownAt['{call_id}']")
    assert isinstance(shown, float | int)
    # Published on the bus to shown in the page: well under a second here.
    assert 0 < shown - published < 1000


async def test_popup_card_lists_last_calls_and_tasks_under_headings(live: Live) -> None:
    client = await live.store.clients.create(
        ClientKind.PERSON, first_name="Luc", last_name="Moreau", phones=[CUSTOMER]
    )
    earlier = await live.store.calls.create(
        CallDirection.INBOUND,
        CUSTOMER,
        "2001",
        agent_user_id=live.users["alice"].id,
        client_id=client.id,
    )
    await live.store.calls.end(earlier.id, CallEndReason.NO_ANSWER)
    await live.store.tasks.create(
        "Send the brochure", client_id=client.id, due_at=datetime(2030, 1, 15, 9, 30, tzinfo=UTC)
    )
    page = await live.page()
    call_id = await live.stored_call()
    card = {
        "kind": "client",
        "id": str(client.id),
        "display_name": "Luc Moreau",
        "phone": CUSTOMER,
        "created": False,
        "client_kind": "person",
        "company": None,
        "tags": [],
    }
    _inbound(live, call_id, card)
    popup = page.locator(f"[data-testid=popup][data-call-id='{call_id}']")
    await expect(popup.get_by_test_id("card-last-calls-heading")).to_have_text("Last calls")
    await expect(popup.get_by_test_id("card-tasks-heading")).to_have_text("Open tasks")
    calls = popup.get_by_test_id("card-last-calls").locator("li")
    await expect(calls).to_have_count(1)
    await expect(calls).to_contain_text(re.compile(r"\d.* · Inbound · Missed$"))
    tasks = popup.get_by_test_id("card-tasks").locator("li")
    await expect(tasks).to_have_count(1)
    await expect(tasks).to_contain_text(re.compile(r"^Send the brochure · due .*2030"))


async def test_unknown_caller_becomes_a_lead_from_the_popup(live: Live) -> None:
    page = await live.page()
    call_id = await live.stored_call()
    lead = await live.store.leads.create(
        first_name=CUSTOMER, phones=[CUSTOMER], source=LeadSource.INCOMING_CALL
    )
    card = {
        "kind": "lead",
        "id": str(lead.id),
        "display_name": "+33 6 12 34 56 78",
        "phone": CUSTOMER,
        "created": True,
        "status": "unprocessed",
        "source": "incoming_call",
        "owner_user_id": None,
        "tags": [],
    }
    _inbound(live, call_id, card)
    popup = page.get_by_test_id("popup")
    await expect(popup.get_by_test_id("popup-unknown")).to_be_visible()
    await expect(popup.get_by_test_id("popup-card")).to_be_hidden()
    await popup.get_by_test_id("popup-create-lead").click()
    await popup.get_by_test_id("popup-contact-name").fill("Marc <b>Lenoir</b>")
    await popup.get_by_test_id("popup-contact-save").click()
    await expect(popup.get_by_test_id("popup-card")).to_be_visible()
    await expect(popup.get_by_test_id("card-name")).to_have_text("Marc <b>Lenoir</b>")
    await expect(popup.get_by_test_id("popup-unknown")).to_be_hidden()
    assert await popup.locator("b").count() == 0
    assert ("call.create_lead", {"call_id": str(call_id), "name": "Marc <b>Lenoir</b>"}) in (
        live.phones.handled
    )


async def test_two_tabs_only_one_rings_and_answering_closes_both(live: Live) -> None:
    first = await live.page()
    second = await live.page(context=first.context)
    call_id = await live.stored_call()
    _inbound(live, call_id, None)
    popups = [p.get_by_test_id("popup") for p in (first, second)]
    for popup in popups:
        await expect(popup).to_be_visible()
        await expect(popup.get_by_test_id("popup-unknown")).to_be_visible()
    ringing = [await p.get_attribute("data-ringing") for p in popups]
    assert sorted(ringing) == ["false", "true"]
    silent = popups[ringing.index("false")]
    await silent.get_by_test_id("popup-answer").click()
    for popup in popups:
        await expect(popup).to_have_count(0)
    assert ("call.answer", {"call_id": str(call_id)}) in live.phones.handled
    for page in (first, second):
        await expect(page.get_by_test_id("call-panel")).to_have_attribute("data-state", "bridged")


async def test_call_panel_never_goes_back_and_wrap_up_is_required(live: Live) -> None:
    page = await live.page()
    panel = page.get_by_test_id("call-panel")
    call_id = await live.stored_call(direction=CallDirection.OUTBOUND)
    live.publish(
        CallCreated(
            call_id=call_id,
            direction="outbound",
            from_number="2001",
            to_number=CUSTOMER,
            line="2001",
            agent="alice",
            worker_id="w1",
        )
    )
    await expect(panel).to_have_attribute("data-state", "dialing")
    await expect(panel).to_have_attribute("data-call-id", str(call_id))
    live.publish(CallRinging(call_id=call_id, leg="customer", agent="alice", to_number=CUSTOMER))
    await expect(panel).to_have_attribute("data-state", "ringing")
    live.publish(CallBridged(call_id=call_id, agent="alice", recording=True))
    await expect(panel).to_have_attribute("data-state", "bridged")
    # A late answer after the bridge, then a held: the panel keeps order.
    live.publish(CallAnswered(call_id=call_id, leg="customer", agent="alice"))
    live.publish(CallHeld(call_id=call_id, agent="alice", held=False))
    await expect(panel).to_have_attribute("data-state", "bridged")
    await expect(page.get_by_test_id("call-number")).to_have_text("+33 6 12 34 56 78")

    await page.get_by_test_id("call-hold").click()
    await expect(panel).to_have_attribute("data-state", "held")
    await expect(page.get_by_test_id("call-hold")).to_have_text("Resume")
    await page.get_by_test_id("call-hold").click()
    await expect(panel).to_have_attribute("data-state", "bridged")

    await page.get_by_test_id("dtmf-1").click()
    await page.get_by_test_id("dtmf-hash").click()
    await expect(page.get_by_test_id("dtmf-sent")).to_have_text("1#")

    await page.get_by_test_id("call-transfer").click()
    colleague = page.locator("[data-testid=transfer-colleague][data-agent=bob]")
    await expect(colleague).to_have_attribute("data-extension", "102")
    await expect(colleague).to_have_attribute("data-state", "offline")
    await colleague.click()
    await expect(page.get_by_test_id("transfer-to")).to_have_value("102")
    await page.get_by_test_id("transfer-attended").click()
    await expect(page.get_by_test_id("transfer-status")).to_have_attribute(
        "data-state", "consulting"
    )
    await expect(panel).to_have_attribute("data-state", "consulting")
    await page.get_by_test_id("transfer-complete").click()
    await expect(page.get_by_test_id("transfer-status")).to_have_attribute(
        "data-state", "completed"
    )

    await page.get_by_test_id("call-note").fill("wants a quote")
    await expect(page.get_by_test_id("call-note-status")).to_have_attribute("data-state", "saved")
    assert (await live.store.calls.get(call_id)).note == "wants a quote"

    row = page.locator(f"[data-testid=history-row][data-call-id='{call_id}']")
    await expect(row).to_have_count(0)
    await page.get_by_test_id("call-hangup").click()
    await expect(panel).to_have_attribute("data-state", "ended")
    # The history is refreshed once the call ends.
    await expect(row).to_have_count(1)
    wrapup = page.get_by_test_id("wrapup")
    await expect(wrapup).to_be_visible()
    await expect(wrapup).to_have_attribute("data-call-id", str(call_id))
    await expect(page.get_by_test_id("wrapup-skip")).to_have_count(0)
    await page.get_by_test_id("wrapup-save").click()
    await expect(page.get_by_test_id("wrapup-error")).to_have_text("Choose the call's outcome.")
    await page.get_by_test_id("wrapup-disposition").select_option("callback")
    await page.get_by_test_id("wrapup-followup").check()
    await page.get_by_test_id("wrapup-followup-title").fill("Send the quote")
    await page.get_by_test_id("wrapup-followup-due").fill("2030-01-15T10:30")
    await page.get_by_test_id("wrapup-save").click()
    await expect(wrapup).to_be_hidden()
    await expect(row).to_have_attribute("data-disposition", "callback")
    stored = await live.store.calls.get(call_id)
    assert stored.disposition == "callback"
    due = datetime(2031, 1, 1, tzinfo=UTC)
    tasks = await live.store.tasks.due_for(live.users["alice"].id, due)
    assert [(t.title, t.due_at) for t in tasks] == [
        ("Send the quote", datetime(2030, 1, 15, 9, 30, tzinfo=UTC))
    ]


async def test_widget_reconnects_after_the_gateway_restarts(live: Live) -> None:
    page = await live.page()
    status = page.get_by_test_id("conn-status")
    await page.get_by_test_id("state-paused").click()
    await page.get_by_test_id("pause-reason").select_option("lunch")
    await page.get_by_test_id("pause-confirm").click()
    await expect(page.get_by_test_id("agent-state")).to_have_attribute("data-state", "paused")
    # A call the restarted gateway no longer knows: its fresh snapshot replaces it.
    gone = uuid.uuid4()
    live.publish(
        CallCreated(
            call_id=gone,
            direction="outbound",
            from_number="2001",
            to_number=CUSTOMER,
            line="2001",
            agent="alice",
            worker_id="w1",
        )
    )
    panel = page.get_by_test_id("call-panel")
    await expect(panel).to_have_attribute("data-call-id", str(gone))
    await expect(panel).to_be_visible()
    await live.gateway.aclose()
    await expect(status).to_have_attribute("data-state", "reconnecting")
    await expect(status).to_have_text("Reconnecting…")
    await expect(page.locator("body")).to_have_attribute("data-ready", "false")
    await live.start_gateway()
    await expect(status).to_have_attribute("data-state", "online", timeout=20_000)
    await expect(page.locator("body")).to_have_attribute("data-ready", "true")
    await expect(page.get_by_test_id("agent-state")).to_have_attribute("data-state", "paused")
    await expect(page.get_by_test_id("agent-state")).to_contain_text("lunch")
    await expect(panel).to_be_hidden()
    # Live again: a call after the restart pops up.
    call_id = await live.stored_call()
    _inbound(live, call_id, None)
    await expect(page.get_by_test_id("popup")).to_be_visible()


async def test_dialer_panel_follows_the_dialer_events(live: Live) -> None:
    entries = [CallListEntry(n) for n in ("0612345678", "0698765432", "0611223344")]
    created, _ = await live.store.call_lists.create_list("Spring campaign", None, entries)
    page = await live.page()
    await expect(page.get_by_test_id("dialer-list")).to_contain_text("Spring campaign")
    await page.get_by_test_id("dialer-start").click()
    state = page.get_by_test_id("dialer-state")
    await expect(state).to_have_attribute("data-state", "running")
    session = next(
        uuid.UUID(str(a["call_list_id"])) for n, a in live.phones.handled if n == "dialer.start"
    )
    assert session == created.id
    call_id = await live.stored_call(direction=CallDirection.OUTBOUND)
    common = {"session_id": uuid.uuid4(), "agent": "alice", "list_id": created.id}
    live.publish(
        DialerDialing(
            **common,
            dialed=1,
            answered=0,
            remaining=2,
            item_id=uuid.uuid4(),
            call_id=call_id,
            number=CUSTOMER,
            attempt=1,
        )
    )
    card = page.get_by_test_id("dialer-card")
    await expect(card).to_be_visible()
    await expect(card).to_have_attribute("data-number", CUSTOMER)
    # No contact has the number: shown once, in display form, and said unknown.
    await expect(card.get_by_test_id("dialer-card-unknown")).to_have_text("Unknown number")
    await expect(card.get_by_test_id("dialer-card-number")).to_have_text("+33 6 12 34 56 78")
    text = await card.inner_text()
    assert text.count("+33 6 12 34 56 78") == 1
    assert CUSTOMER not in text
    live.publish(
        CallCreated(
            call_id=call_id,
            direction="outbound",
            from_number="2001",
            to_number=CUSTOMER,
            line="2001",
            agent="alice",
            worker_id="w1",
        )
    )
    live.publish(CallBridged(call_id=call_id, agent="alice", recording=False))
    live.publish(
        DialerResult(
            **common,
            dialed=1,
            answered=1,
            remaining=2,
            item_id=uuid.uuid4(),
            call_id=call_id,
            number=CUSTOMER,
            result="answered",
        )
    )
    progress = page.get_by_test_id("dialer-progress")
    await expect(progress).to_have_attribute("data-answered", "1")
    await expect(progress).to_have_attribute("data-done", "1")
    await expect(progress).to_have_attribute("data-left", "2")
    live.publish(
        CallEnded(call_id=call_id, reason="completed", sip_code=200, agent="alice", talk_seconds=9)
    )
    await expect(page.get_by_test_id("wrapup")).to_have_attribute("data-call-id", str(call_id))
    await expect(card).to_be_hidden()
    live.publish(DialerSessionPaused(**common, dialed=1, answered=1, remaining=2, reason="agent"))
    await expect(state).to_have_attribute("data-state", "paused")
    await expect(page.get_by_test_id("dialer-resume")).to_be_visible()


async def test_bad_input_gets_a_clear_error_and_changes_nothing(live: Live) -> None:
    await live.store.clients.create(
        ClientKind.COMPANY, name="<script>window.pwned=1</script>", phones=["+33698765432"]
    )
    page = await live.page()
    await page.get_by_test_id("dial-input").fill("12ab-not-a-number")
    await page.get_by_test_id("dial-call").click()
    await expect(page.get_by_test_id("dial-error")).to_be_visible()
    await expect(page.get_by_test_id("dial-error")).to_contain_text("not a phone number")
    assert not [h for h in live.phones.handled if h[0] == "call.originate"]

    await page.get_by_test_id("dial-input").fill("102")
    await expect(page.get_by_test_id("dial-preview")).to_have_text("extension 102 — Bob Durand")
    await expect(page.get_by_test_id("dial-error")).to_be_hidden()

    await page.get_by_test_id("search-input").fill("' OR 1=1 --")
    await expect(page.get_by_test_id("search-results")).to_contain_text("No contact found.")
    await page.get_by_test_id("search-input").fill("<script>")
    hit = page.get_by_test_id("search-hit")
    await expect(hit).to_have_count(1)
    await expect(hit).to_contain_text("<script>window.pwned=1</script>")
    assert await page.evaluate("window.pwned === undefined")
    assert await page.locator("#search-results script").count() == 0
    await expect(page.locator("[data-testid=toast][data-kind=error]")).to_have_count(0)

    # A 10 MB note: refused in the page with an error, nothing stored.
    call_id = await live.stored_call(direction=CallDirection.OUTBOUND)
    live.publish(
        CallCreated(
            call_id=call_id,
            direction="outbound",
            from_number="2001",
            to_number=CUSTOMER,
            line="2001",
            agent="alice",
            worker_id="w1",
        )
    )
    live.publish(CallBridged(call_id=call_id, agent="alice", recording=False))
    await expect(page.get_by_test_id("call-panel")).to_have_attribute("data-state", "bridged")
    await page.get_by_test_id("call-note").evaluate(
        "(el) => { el.value = 'x'.repeat(10 * 1024 * 1024);"
        " el.dispatchEvent(new Event('input', {bubbles: true})); }"
    )
    toast = page.locator("[data-testid=toast][data-kind=error]")
    await expect(toast).to_be_visible()
    await expect(toast).to_have_attribute("role", "alert")
    await expect(page.get_by_test_id("call-note-status")).to_have_attribute("data-state", "error")
    assert (await live.store.calls.get(call_id)).note is None
    assert not [h for h in live.phones.handled if h[0] == "call.note"]
    await expect(page.get_by_test_id("conn-status")).to_have_attribute("data-state", "online")


async def _ended_call(
    live: Live, *, minutes: int, answered: bool = True, recording: bool = False
) -> uuid.UUID:
    at = datetime(2026, 12, 1, 9, 0, tzinfo=UTC) + timedelta(minutes=minutes)
    call = await live.store.calls.create(
        CallDirection.INBOUND, CUSTOMER, "2001", agent_user_id=live.users["alice"].id, at=at
    )
    if answered:
        await live.store.calls.mark_answered(call.id, at + timedelta(seconds=2))
    reason = CallEndReason.COMPLETED if answered else CallEndReason.NO_ANSWER
    await live.store.calls.end(call.id, reason, at + timedelta(seconds=62))
    if recording:
        path = live.config.recording.directory / f"{call.id}.wav"
        with wave.open(str(path), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(8000)
            out.writeframes(b"\0\0" * 8000)
        await live.store.calls.attach_recording(call.id, str(path), 1.0)
    return call.id


async def test_history_filters_pages_and_opens_a_call_with_its_recording(live: Live) -> None:
    recorded = await _ended_call(live, minutes=0, recording=True)
    await live.store.calls.set_disposition(recorded, "sale")
    missed = await _ended_call(live, minutes=1, answered=False)
    for i in range(2, 25):
        await _ended_call(live, minutes=i)
    page = await live.page()
    rows = page.get_by_test_id("history-row")
    await expect(rows).to_have_count(20)
    await page.get_by_test_id("history-next").click()
    await expect(rows).to_have_count(25)
    await expect(page.get_by_test_id("history-next")).to_have_count(0)

    await page.get_by_test_id("history-missed").check()
    await expect(rows).to_have_count(1)
    await expect(rows).to_have_attribute("data-call-id", str(missed))
    await expect(rows).to_have_attribute("data-missed", "true")
    await rows.get_by_test_id("history-callback").click()
    assert await _handled(live, "call.originate") == {"to": CUSTOMER, "agent": "alice"}
    await page.get_by_test_id("history-missed").uncheck()
    await page.get_by_test_id("history-direction").select_option("outbound")
    await expect(rows).to_have_count(0)
    await page.get_by_test_id("history-direction").select_option("all")
    await page.get_by_test_id("history-date").fill("2026-12-02")
    await expect(rows).to_have_count(0)
    await page.get_by_test_id("history-date").fill("2026-12-01")
    await expect(rows).to_have_count(20)

    await page.get_by_test_id("history-next").click()
    row = page.locator(f"[data-testid=history-row][data-call-id='{recorded}']")
    await expect(row).to_have_attribute("data-disposition", "sale")
    await row.click()
    detail = page.get_by_test_id("call-detail")
    await expect(detail).to_have_attribute("data-call-id", str(recorded))
    await expect(detail.get_by_test_id("call-detail-disposition")).to_have_text("sale")
    audio = detail.get_by_test_id("recording-audio")
    await expect(audio).to_have_attribute("src", f"/api/calls/{recorded}/recording")
    duration = await audio.evaluate(
        "(el) => new Promise((ok) => { if (el.readyState > 0) ok(el.duration);"
        " el.addEventListener('loadedmetadata', () => ok(el.duration)); el.load(); })"
    )
    assert duration == pytest.approx(1.0, abs=0.05)
    # Local time (the context is in Paris): 09:00 UTC is 10:00.
    await expect(detail.locator("time")).to_contain_text("10:00")
    await detail.get_by_test_id("call-detail-note").fill("paid by card")
    async with page.expect_response(f"**/partials/calls/{recorded}/note") as saved:
        await detail.get_by_test_id("call-detail-note-save").click()
    assert (await saved.value).status == 200
    await expect(page.get_by_test_id("call-detail-note")).to_have_value("paid by card")
    assert (await live.store.calls.get(recorded)).note == "paid by card"


async def _handled(live: Live, name: str) -> dict[str, Any]:
    """The arguments of the last ``name`` command the telephony got (waits for it)."""
    async with asyncio.timeout(5):
        while True:
            found = [a for n, a in live.phones.handled if n == name]
            if found:
                return found[-1]
            await asyncio.sleep(0.02)


async def test_search_calls_a_contact_and_the_dialpad_works_with_the_keyboard(
    live: Live,
) -> None:
    client = await live.store.clients.create(
        ClientKind.COMPANY, name="Boulangerie Dupain", phones=["+33145678901"]
    )
    page = await live.page()
    await page.get_by_test_id("search-input").fill("boulang")
    hit = page.get_by_test_id("search-hit")
    await expect(hit).to_have_attribute("data-id", str(client.id))
    await expect(hit).to_have_attribute("data-kind", "client")
    await hit.get_by_test_id("search-open").click()
    card = page.get_by_test_id("contact-card")
    await expect(card).to_have_attribute("data-id", str(client.id))
    await expect(card.get_by_test_id("card-name")).to_have_text("Boulangerie Dupain")
    await expect(card.get_by_test_id("card-phones")).to_contain_text("+33 1 45 67 89 01")
    await hit.get_by_test_id("search-call").click()
    assert await _handled(live, "call.originate") == {
        "to": "+33145678901",
        "client_id": str(client.id),
        "agent": "alice",
    }
    live.phones.handled.clear()
    await page.get_by_test_id("dial-input").fill("01 45 67 89 02")
    await expect(page.get_by_test_id("dial-preview")).to_have_text("+33 1 45 67 89 02")
    await page.get_by_test_id("dial-input").press("Enter")
    assert await _handled(live, "call.originate") == {"to": "+33145678902", "agent": "alice"}

    await page.get_by_test_id("state-paused").click()
    await expect(page.get_by_test_id("pause-reason")).to_be_focused()
    await page.keyboard.press("Escape")
    await expect(page.get_by_test_id("pause-reason")).to_be_hidden()
    await expect(page.get_by_test_id("state-paused")).to_be_focused()


async def test_optional_wrap_up_may_be_skipped(live_optional: Live) -> None:
    live = live_optional
    page = await live.page()
    call_id = await live.stored_call()
    _inbound(live, call_id, None)
    await page.get_by_test_id("popup-answer").click()
    await expect(page.get_by_test_id("call-panel")).to_have_attribute("data-state", "bridged")
    live.publish(
        CallEnded(call_id=call_id, reason="completed", sip_code=200, agent="alice", talk_seconds=3)
    )
    await expect(page.get_by_test_id("wrapup")).to_be_visible()
    await page.get_by_test_id("wrapup-skip").click()
    await expect(page.get_by_test_id("wrapup")).to_be_hidden()
    assert (await live.store.calls.get(call_id)).disposition is None


async def test_language_switcher_shows_the_widget_in_french(live: Live) -> None:
    page = await live.page()
    await page.get_by_test_id("lang-fr").click()
    await page.wait_for_url(f"{live.url}/widget")
    await expect(page.locator("body")).to_have_attribute("data-ready", "true")
    await expect(page.locator("html")).to_have_attribute("lang", "fr")
    await expect(page.get_by_test_id("conn-status")).to_have_text("Connecté")
    await expect(page.get_by_test_id("dial-call")).to_have_text("Appeler")
    call_id = await live.stored_call()
    _inbound(live, call_id, None)
    await expect(page.get_by_test_id("popup-unknown")).to_have_text("Numéro inconnu")
    await expect(page.get_by_test_id("popup-answer")).to_have_text("Répondre")


async def test_embed_script_opens_the_panel_from_a_crm_page(live: Live) -> None:
    page = await live.page()
    await page.goto(f"{live.crm_url}/crm.html")
    button = page.locator("[data-switchboard=toggle]")
    await expect(button).to_be_visible()
    box = await button.bounding_box()
    assert box is not None
    assert box["x"] < 100
    await button.click()
    frame = page.frame_locator("[data-switchboard=panel]")
    await expect(frame.locator("body")).to_have_attribute("data-ready", "true")
    await expect(frame.locator("body")).to_have_class(re.compile("layout-panel"))
    await expect(button).to_have_attribute("aria-expanded", "true")
    await button.click()
    await expect(page.locator("[data-switchboard=panel]")).to_be_hidden()


async def test_api_docs_run_from_vendored_files(live: Live) -> None:
    context = await live.browser.new_context()
    live.contexts.append(context)
    page = await context.new_page()
    elsewhere: list[str] = []
    page.on(
        "request",
        lambda r: elsewhere.append(r.url) if not r.url.startswith(live.url) else None,
    )
    await page.goto(f"{live.url}/api/docs")
    await expect(page.locator(".swagger-ui .info .title")).to_contain_text("Switchboard")
    assert elsewhere == []
