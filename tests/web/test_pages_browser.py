"""The widget in a real browser (Debian's Chromium through Playwright) against the
real app, a real websocket gateway and a real SQLite store, all in the test's loop.

The telephony is the one peer replaced: :class:`Phones` carries out the commands
the widget sends the way the SIP side would, by publishing the call events on the
daemon's bus; the tests publish the events of calls coming in the same way.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.async_api import (
    Browser,
    BrowserContext,
    Page,
    Response,
    async_playwright,
    expect,
)

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
from crm_store import CallDirection, CallListEntry, ClientKind, LeadSource, Role, Store, User
from crm_store import upgrade as upgrade_store
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

pytestmark = pytest.mark.browser

PASSWORD = "correct horse battery"
CHROMIUM = "/usr/bin/chromium"
CUSTOMER = "+33612345678"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _config(http_port: int, ws_port: int, recordings: Path, wrap_up: str) -> Config:
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
                "allowed_origins": [f"http://127.0.0.1:{http_port}"],
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
    #: Responses no page should get: server errors, partials refused.
    bad_responses: list[str] = field(default_factory=list)

    def watch(self, context: BrowserContext) -> None:
        def seen(response: Response) -> None:
            path = urlsplit(response.url).path
            if response.status >= 500 or (
                response.status >= 400 and path.startswith(("/partials/", "/static/"))
            ):
                self.bad_responses.append(f"{response.status} {response.url}")

        context.on("response", seen)
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


async def _live(store: Store, tmp_path: Path, wrap_up: str) -> AsyncIterator[Live]:
    http_port, ws_port = _free_port(), _free_port()
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    config = _config(http_port, ws_port, recordings, wrap_up)
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
            async with HttpServer(app, host="127.0.0.1", port=http_port) as server:
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
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'crm.sqlite3'}"
    await upgrade_store(url)
    opened = await Store.open(url)
    try:
        yield opened
    finally:
        await opened.aclose()


@pytest.fixture
async def live(store: Store, tmp_path: Path) -> AsyncIterator[Live]:
    async for found in _live(store, tmp_path, "required"):
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
    await page.press("#password", "Enter")
    await expect(page.get_by_test_id("login-error")).to_be_visible()
    await expect(page.get_by_test_id("login-error")).to_have_text("Wrong user name or password.")
    await page.fill("#password", PASSWORD)
    await page.click("[data-testid=login-submit]")
    await page.wait_for_url(f"{live.url}/widget/panel")
    await expect(page.locator("body")).to_have_attribute("data-ready", "true")
    await expect(page.get_by_test_id("conn-status")).to_have_attribute("data-state", "online")
    await expect(page.get_by_test_id("conn-status")).to_have_text("Connected")


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
    _inbound(live, call_id, card)
    popup = page.locator(f"[data-testid=popup][data-call-id='{call_id}']")
    await expect(popup).to_be_visible()
    await expect(popup.get_by_test_id("card-name")).to_have_text("Claire Dupont")
    await expect(popup.get_by_test_id("card-responsible")).to_have_text("Responsible: Bob Agent")
    await expect(popup.get_by_test_id("card-tags")).to_have_text("vip")
    await expect(popup.get_by_test_id("popup-number")).to_have_text("+33 6 12 34 56 78")
    await expect(popup.get_by_test_id("popup-unknown")).to_be_hidden()
    shown = await page.evaluate(f"window.sbPopupShownAt['{call_id}']")
    assert isinstance(shown, float | int)
    assert shown > 1.7e12


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
    await expect(page.get_by_test_id("call-number")).to_have_text(CUSTOMER)

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

    await page.get_by_test_id("call-hangup").click()
    await expect(panel).to_have_attribute("data-state", "ended")
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
    stored = await live.store.calls.get(call_id)
    assert stored.disposition == "callback"


async def test_widget_reconnects_after_the_gateway_restarts(live: Live) -> None:
    page = await live.page()
    status = page.get_by_test_id("conn-status")
    await page.get_by_test_id("state-paused").click()
    await page.get_by_test_id("pause-reason").select_option("lunch")
    await page.get_by_test_id("pause-confirm").click()
    await expect(page.get_by_test_id("agent-state")).to_have_attribute("data-state", "paused")
    await live.gateway.aclose()
    await expect(status).to_have_attribute("data-state", "reconnecting")
    await expect(status).to_have_text("Reconnecting…")
    await expect(page.locator("body")).to_have_attribute("data-ready", "false")
    await live.start_gateway()
    await expect(status).to_have_attribute("data-state", "online", timeout=20_000)
    await expect(page.locator("body")).to_have_attribute("data-ready", "true")
    await expect(page.get_by_test_id("agent-state")).to_have_attribute("data-state", "paused")
    await expect(page.get_by_test_id("agent-state")).to_contain_text("lunch")
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
    await expect(card).to_contain_text(CUSTOMER)
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
