"""The agent's widget in a real browser, against a real daemon on the lab.

Each scenario drives the pages through the hooks of the widget's page contract
(``data-testid`` attributes) the way an agent would, while the lab's customers call
and its phones answer; what the telephony did is checked on the lab's side (who
answered, who heard whom). The module shares one lab and one daemon; every
scenario leaves its agents offline and its calls wrapped up.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from lab import audio
from lab.customers import CUSTOMER_TONE_HZ, Behaviour, CustomerCall, customer_number
from lab.phones import PhoneEvent
from lab.seed import RECEPTION, known_numbers, unknown_number

from .conftest import Agent, Daemon, E2eLab, shot, wait_ready, wait_until

pytestmark = [pytest.mark.lab, pytest.mark.browser]

OpenAgent = Callable[..., Agent]
# Fixed ids of seeded calls (lab.seed derives them from their keys).
_SEED_NS = uuid.UUID("6f1c4e2a-5b3d-4c8e-9a7f-2d1e0b9c8a75")


def seeded_call(key: str) -> str:
    return str(uuid.uuid5(_SEED_NS, key))


def tid(name: str) -> str:
    return f"[data-testid={name}]"


@pytest.fixture
def offline_after(daemon: Daemon, open_agent: OpenAgent) -> Iterator[list[Agent]]:
    """Agents appended here are set offline through the API after the test."""
    agents: list[Agent] = []
    yield agents
    for agent in agents:
        agent.api("PUT", f"/api/agents/{agent.user}/state", {"state": "offline"})


def set_state(page: Page, state: str) -> None:
    page.click(tid(f"state-{state}"))
    expect(page.locator(tid("agent-state"))).to_have_attribute("data-state", state)


def customer_calls(
    e2e_lab: E2eLab, number: str, *, talk: float = 60, **kwargs: Any
) -> CustomerCall:
    """A lab customer calls the reception line with caller id ``number``."""
    return e2e_lab.run(
        e2e_lab.lab.customers.call(RECEPTION, number, talk_seconds=talk, timeout=30, **kwargs)
    )


def display_form(agent: Agent, number: str) -> str:
    reply = agent.context.request.get("/api/numbers/normalize", params={"number": number})
    assert reply.ok, reply.text()
    return str(reply.json()["display"])


def popup_call_id(page: Page) -> str:
    popup = page.locator(tid("popup"))
    expect(popup).to_be_visible()
    call_id = popup.get_attribute("data-call-id")
    assert call_id
    return call_id


def wrap_up(page: Page, call_id: str, disposition: str, note: str = "") -> None:
    wrapup = page.locator(f"{tid('wrapup')}[data-call-id='{call_id}']")
    expect(wrapup).to_be_visible()
    page.select_option(tid("wrapup-disposition"), label=disposition)
    if note:
        page.fill(tid("wrapup-note"), note)
    page.click(tid("wrapup-save"))
    expect(wrapup).to_be_hidden()


def phone_mark(e2e_lab: E2eLab, ext: str) -> int:
    return len(e2e_lab.lab.phones[ext].events)


def phone_answered(e2e_lab: E2eLab, ext: str, start: int, timeout: float = 15) -> PhoneEvent:
    phone = e2e_lab.lab.phones[ext]
    return e2e_lab.run(phone.wait_call_answered(timeout=timeout, start=start))


def phone_ended(e2e_lab: E2eLab, ext: str, call_id: str, timeout: float = 20) -> PhoneEvent:
    phone = e2e_lab.lab.phones[ext]
    return e2e_lab.run(phone.wait_call_ended(timeout=timeout, call_id=call_id))


def heard_customer(recording: str) -> float:
    return audio.tone_level(Path(recording), CUSTOMER_TONE_HZ)


def end_and_wrap_up(page: Page, call_id: str, disposition: str = "interested") -> None:
    panel = page.locator(tid("call-panel"))
    if panel.is_visible():
        page.click(tid("call-hangup"))
    wrap_up(page, call_id, disposition)


# --- a. an unknown caller becomes a lead -------------------------------------------


def test_unknown_caller_pops_up_and_becomes_a_named_lead(
    e2e_lab: E2eLab, open_agent: OpenAgent, offline_after: list[Agent]
) -> None:
    alice = open_agent("alice")
    offline_after.append(alice)
    page = alice.page
    shot(page, "widget-idle")
    set_state(page, "available")

    number = unknown_number(4242)
    customer_calls(e2e_lab, number)
    call_id = popup_call_id(page)
    expect(page.locator(tid("popup-unknown"))).to_be_visible()
    expect(page.locator(tid("popup-number"))).to_have_text(display_form(alice, number))

    page.click(tid("popup-create-lead"))
    page.fill(tid("popup-contact-name"), "Zoé Lambert")
    page.click(tid("popup-contact-save"))
    card = page.locator(tid("popup-card"))
    expect(card.locator(tid("card-name"))).to_have_text("Zoé Lambert")

    # The new lead is found by name and by the last four digits of its number.
    for query in ("Lambert", number[-4:]):
        page.fill(tid("search-input"), query)
        hit = page.locator(f"{tid('search-hit')}[data-kind=lead]", has_text="Zoé Lambert")
        expect(hit).to_have_count(1)

    # Leave the call answered, ended and wrapped up.
    page.click(tid("popup-answer"))
    expect(page.locator(tid("call-panel"))).to_have_attribute("data-call-id", call_id)
    end_and_wrap_up(page, call_id)


# --- b. a known client, from ringing to the recording in the history ---------------


def test_known_client_call_answered_held_transferred_and_wrapped_up(
    e2e_lab: E2eLab, open_agent: OpenAgent, offline_after: list[Agent]
) -> None:
    alice = open_agent("alice")
    offline_after.append(alice)
    page = alice.page
    set_state(page, "available")
    alice_mark, bob_mark = phone_mark(e2e_lab, "1001"), phone_mark(e2e_lab, "1002")

    customer = customer_calls(e2e_lab, known_numbers()["Camille Petitjean"], talk=90)
    call_id = popup_call_id(page)
    card = page.locator(tid("popup-card"))
    expect(card.locator(tid("card-name"))).to_have_text("Camille Petitjean")
    expect(card.locator(tid("card-company"))).to_contain_text("Boulangerie Petitjean")
    expect(card.locator(tid("card-responsible"))).to_contain_text("Alice")
    expect(card.locator(tid("card-tags"))).to_contain_text("vip")
    expect(card.locator(tid("card-tasks"))).to_contain_text("Call back about the spring order")
    expect(card.locator(tid("card-last-calls"))).not_to_be_empty()
    expect(page.locator(tid("popup-unknown"))).to_be_hidden()
    shot(page, "widget-ringing-card")

    # Answered from the widget: Alice's phone (which never answers by itself) is
    # asked to, and hears the customer.
    page.click(tid("popup-answer"))
    panel = page.locator(tid("call-panel"))
    expect(panel).to_have_attribute("data-state", "bridged")
    expect(page.locator(tid("popup"))).to_have_count(0)
    on_alice = phone_answered(e2e_lab, "1001", alice_mark)
    expect(page.locator(tid("call-timer"))).not_to_have_text("0:00")
    shot(page, "widget-in-call")

    page.click(tid("call-hold"))
    expect(panel).to_have_attribute("data-state", "held")
    expect(page.locator(tid("call-hold"))).to_have_text("Resume")
    page.click(tid("call-hold"))
    expect(panel).to_have_attribute("data-state", "bridged")
    expect(page.locator(tid("call-hold"))).to_have_text("Hold")
    for key in ("1", "2", "hash"):
        page.click(tid(f"dtmf-{key}"))
    expect(page.locator(tid("dtmf-sent"))).to_have_text("12#")

    # Attended transfer to Bob: consult, then complete.
    page.click(tid("call-transfer"))
    transfer = page.locator(tid("transfer-panel"))
    expect(transfer).to_be_visible()
    expect(transfer.locator(f"{tid('transfer-colleague')}[data-agent=bob]")).to_be_visible()
    page.fill(tid("transfer-to"), "1002")
    page.click(tid("transfer-attended"))
    status = page.locator(tid("transfer-status"))
    expect(status).to_have_attribute("data-state", "consulting")
    on_bob = phone_answered(e2e_lab, "1002", bob_mark)
    shot(page, "widget-transfer")
    page.click(tid("transfer-complete"))
    expect(status).to_have_attribute("data-state", "completed")
    alice_ended = phone_ended(e2e_lab, "1001", on_alice.call_id)
    assert heard_customer(alice_ended.data["recording"]) > 0.02

    # Bob talks with the customer until the call is hung up; wrap-up needs a disposition.
    wait_until(lambda: has_media(e2e_lab, "1002", on_bob.call_id), what="bob hears the customer")
    if panel.is_visible():
        page.click(tid("call-hangup"))
    bob_ended = phone_ended(e2e_lab, "1002", on_bob.call_id)
    assert heard_customer(bob_ended.data["recording"]) > 0.02
    assert e2e_lab.run(customer.wait(timeout=15))
    wrapup = page.locator(f"{tid('wrapup')}[data-call-id='{call_id}']")
    expect(wrapup).to_be_visible()
    expect(page.locator(tid("wrapup-skip"))).to_have_count(0)  # wrap_up = "required"
    page.click(tid("wrapup-save"))
    expect(page.locator(tid("wrapup-error"))).to_be_visible()
    shot(page, "widget-wrapup", wrapup)
    wrap_up(page, call_id, "sale", note="Two boxes of croissants a week.")

    # The call in the history, with its disposition and its recording.
    recording_url = f"/api/calls/{call_id}/recording"
    wait_until(
        lambda: alice.context.request.get(f"/api/calls/{call_id}").json().get("recording_url"),
        timeout=20,
        what="the recording attached",
    )
    page.reload()
    wait_ready(page)
    row = page.locator(f"{tid('history-row')}[data-call-id='{call_id}']")
    expect(row).to_have_attribute("data-disposition", "sale")
    expect(row).to_have_attribute("data-missed", "false")
    row.click()
    detail = page.locator(tid("call-detail"))
    expect(detail.locator(tid("call-detail-disposition"))).to_contain_text("sale")
    expect(detail).to_contain_text("Two boxes of croissants a week.")
    player = detail.locator(f"audio{tid('recording-audio')}")
    expect(player).to_have_attribute("src", recording_url)
    played = player.evaluate(
        """async (a) => {
            a.muted = true;
            if (a.readyState < 1) await new Promise((ok, ko) => {
                a.addEventListener("loadedmetadata", ok, {once: true});
                a.addEventListener("error", () => ko(new Error("audio error")), {once: true});
                a.load();
            });
            await a.play();
            const middle = a.duration / 2;
            const seeked = new Promise((ok) => a.addEventListener("seeked", ok, {once: true}));
            a.currentTime = middle;
            await seeked;
            return {duration: a.duration, at: a.currentTime, paused: a.paused,
                    ready: a.readyState, middle};
        }"""
    )
    assert played["duration"] > 1  # the call lasts as long as the steps above take
    assert abs(played["at"] - played["middle"]) < 0.5
    assert played["paused"] is False
    assert played["ready"] >= 1
    ranged = alice.context.request.get(recording_url, headers={"Range": "bytes=100-199"})
    assert ranged.status == 206
    assert len(ranged.body()) == 100


def has_media(e2e_lab: E2eLab, ext: str, call_id: str | None) -> bool:
    """Whether the phone's call has audio (its ``media`` event came)."""
    phone = e2e_lab.lab.phones[ext]
    return any(e.kind == "media" and e.call_id == call_id for e in phone.events)


# --- c. two tabs: one rings, answering in one closes both ----------------------------


def test_two_tabs_one_rings_and_answering_closes_both(
    e2e_lab: E2eLab, open_agent: OpenAgent, offline_after: list[Agent]
) -> None:
    alice = open_agent("alice")
    offline_after.append(alice)
    first = alice.page
    second = alice.new_tab()
    set_state(first, "available")
    expect(second.locator(tid("agent-state"))).to_have_attribute("data-state", "available")

    customer_calls(e2e_lab, known_numbers()["Nadia Benali"], talk=60)
    call_id = popup_call_id(first)
    assert popup_call_id(second) == call_id
    ringing = [p.locator(f"{tid('popup')}[data-ringing=true]").count() for p in (first, second)]
    assert sorted(ringing) == [0, 1], ringing

    second.click(tid("popup-answer"))
    for page in (first, second):
        expect(page.locator(tid("popup"))).to_have_count(0)
    expect(second.locator(tid("call-panel"))).to_have_attribute("data-state", "bridged")
    end_and_wrap_up(second, call_id, "callback")


# --- d. the dialer runs a list to its end --------------------------------------------


def test_dialer_runs_a_three_number_list_to_the_end(
    e2e_lab: E2eLab, daemon: Daemon, open_agent: OpenAgent, offline_after: list[Agent]
) -> None:
    numbers = [
        customer_number(Behaviour.BUSY, ring=1, suffix=701),
        customer_number(Behaviour.ANSWER, ring=1, talk=4, suffix=702),
        customer_number(Behaviour.REJECT, ring=1, suffix=703),
    ]
    created = subprocess.run(
        [sys.executable, "-m", "switchboard", "--config", str(daemon.config),
         "lists", "create", "Three to call", *numbers],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    list_id = created.stdout.strip()

    bob = open_agent("bob")
    offline_after.append(bob)
    page = bob.page
    set_state(page, "available")
    panel = page.locator(tid("dialer-panel"))
    expect(panel).to_be_visible()
    page.select_option(tid("dialer-list"), value=list_id)
    page.click(tid("dialer-start"))
    state = page.locator(tid("dialer-state"))
    expect(state).to_have_attribute("data-state", "running")
    expect(page.locator(tid("dialer-card"))).to_be_visible(timeout=30_000)
    shot(page, "widget-dialer", panel)

    # The answered call asks for a disposition; then the list runs to its end.
    wrapup = page.locator(tid("wrapup"))
    expect(wrapup).to_be_visible(timeout=30_000)
    call_id = wrapup.get_attribute("data-call-id")
    assert call_id
    wrap_up(page, call_id, "voicemail")
    expect(state).to_have_attribute("data-state", "finished", timeout=45_000)
    progress = page.locator(tid("dialer-progress"))
    expect(progress).to_have_attribute("data-done", "3")
    expect(progress).to_have_attribute("data-left", "0")
    expect(progress).to_have_attribute("data-answered", "1")
    seen = [i.number for i in e2e_lab.lab.customers.invites()]
    assert [n for n in seen if n in numbers] == numbers


# --- e. the daemon restarts under an open widget -------------------------------------


def test_widget_reconnects_after_a_daemon_restart_without_reloading(
    daemon: Daemon, open_agent: OpenAgent, offline_after: list[Agent]
) -> None:
    chloe = open_agent("chloe")
    offline_after.append(chloe)
    page = chloe.page
    page.click(tid("state-paused"))
    page.select_option(tid("pause-reason"), label="training")
    page.click(tid("pause-confirm"))
    state = page.locator(tid("agent-state"))
    expect(state).to_have_attribute("data-state", "paused")
    page.evaluate("window.__e2eLoaded = 'before-restart'")
    conn = page.locator(tid("conn-status"))
    expect(conn).to_have_attribute("data-state", "online")

    assert daemon.stop() == 0
    expect(conn).to_have_attribute("data-state", "reconnecting")
    expect(conn).to_contain_text("Reconnecting")
    daemon.start()
    expect(conn).to_have_attribute("data-state", "online", timeout=30_000)
    wait_ready(page)
    expect(state).to_have_attribute("data-state", "paused")
    expect(state).to_contain_text("training")
    assert page.evaluate("window.__e2eLoaded") == "before-restart"


# --- f. rights: another agent's call, recording and private contact -----------------


def test_second_agent_is_refused_the_first_agents_call_and_sees_no_popup(
    e2e_lab: E2eLab, open_agent: OpenAgent, offline_after: list[Agent]
) -> None:
    bob = open_agent("bob")
    alice = open_agent("alice")
    offline_after += [bob, alice]
    # Bob's recorded call and Bob's private client, through Alice's session.
    bobs_call = seeded_call("c06")
    lea = bob.context.request.get("/api/contacts/search", params={"q": "Fontaine"}).json()[
        "results"
    ]
    assert [h["display_name"] for h in lea] == ["Léa Fontaine"]
    for path in (
        f"/api/calls/{bobs_call}",
        f"/api/calls/{bobs_call}/recording",
        f"/api/clients/{lea[0]['id']}",
    ):
        assert bob.context.request.get(path).ok, path
        refused = alice.context.request.get(path)
        assert refused.status == 403, (path, refused.status)
        assert refused.json()["error"]["code"] == "forbidden"
    found = alice.context.request.get("/api/contacts/search", params={"q": "Fontaine"})
    assert found.json()["results"] == []

    # A call offered to Bob pops up at Bob's only.
    set_state(bob.page, "available")
    expect(alice.page.locator(tid("agent-state"))).to_have_attribute("data-state", "offline")
    customer_calls(e2e_lab, known_numbers()["Hugo Moreau"], talk=4)
    # Polled from here: the page's policy (no eval) refuses wait_for_function's strings.
    call_id = wait_until(
        lambda: bob.page.evaluate("Object.keys(window.sbPopupShownAt || {})[0]"),
        what="a pop-up at Bob's",
    )
    wrap_up(bob.page, call_id, "interested")
    assert alice.page.evaluate(f"(window.sbPopupShownAt || {{}})['{call_id}']") is None
    expect(alice.page.locator(tid("popup"))).to_have_count(0)
    assert alice.context.request.get(f"/api/calls/{call_id}").status == 403


# --- g. bad input is refused clearly and changes nothing ------------------------------


def test_bad_input_is_refused_clearly_and_changes_nothing(
    open_agent: OpenAgent, offline_after: list[Agent]
) -> None:
    alice = open_agent("alice")
    page = alice.page

    page.fill(tid("dial-input"), "12ab!!#")
    page.click(tid("dial-call"))
    expect(page.locator(tid("dial-error"))).to_be_visible()
    expect(page.locator(tid("dial-error"))).not_to_be_empty()
    expect(page.locator(tid("call-panel"))).to_be_hidden()

    # A 10 MB note: refused, the note as it was.
    call = seeded_call("c01")
    before = alice.context.request.get(f"/api/calls/{call}").json()["note"]
    huge = alice.api("PUT", f"/api/calls/{call}/note", {"text": "x" * 10_000_000})
    assert huge.status == 413
    assert huge.json()["error"]["code"] == "too_large"
    assert alice.context.request.get(f"/api/calls/{call}").json()["note"] == before

    # SQL and HTML in the search box: shown as text, nothing breaks, nothing runs.
    hostile = '\'; DROP TABLE clients; -- <img src=x onerror="window.__pwned=1">'
    page.fill(tid("search-input"), hostile)
    expect(page.locator(tid("search-hit"))).to_have_count(0)
    expect(page.locator(f"{tid('toast')}[data-kind=error]")).to_have_count(0)
    assert page.locator("img[src=x]").count() == 0
    assert page.evaluate("window.__pwned") is None
    page.fill(tid("search-input"), "Kessler")
    expect(page.locator(tid("search-hit"))).not_to_have_count(0)

    # A forged CSRF token: 403 csrf, no lead created.
    forged = alice.api("POST", "/api/leads", {"name": "Forged Lead"}, csrf="forged-token")
    assert forged.status == 403
    assert forged.json()["error"]["details"]["reason"] == "csrf"
    hits = alice.context.request.get("/api/contacts/search", params={"q": "Forged"}).json()
    assert hits["results"] == []
