"""The clients' workspace in a real browser, against a real daemon on the lab.

A person creates a company and a person in it with two phones, a tag and a custom
field; finds the person by the last four digits of the second phone; calls them
from the card (the lab's customer answers); the call appears on their timeline
with its disposition and its recording. A private client stays invisible to
another agent: in the list, the search, its card's URL and the pop-up of its call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import Page, expect

from lab.customers import Behaviour, customer_number
from lab.seed import RECEPTION, known_numbers

from .conftest import Agent, Daemon, E2eLab, shot, wait_until

pytestmark = [pytest.mark.lab, pytest.mark.browser]

OpenAgent = Callable[..., Agent]


def tid(name: str) -> str:
    return f"[data-testid={name}]"


@pytest.fixture
def offline_after(daemon: Daemon) -> Iterator[list[Agent]]:
    """Agents appended here are set offline through the API after the test."""
    agents: list[Agent] = []
    yield agents
    for agent in agents:
        agent.api("PUT", f"/api/agents/{agent.user}/state", {"state": "offline"})


def wrap_up(page: Page, call_id: str, disposition: str) -> None:
    wrapup = page.locator(f"{tid('wrapup')}[data-call-id='{call_id}']")
    expect(wrapup).to_be_visible()
    page.select_option(tid("wrapup-disposition"), label=disposition)
    page.click(tid("wrapup-save"))
    expect(wrapup).to_be_hidden()


def test_create_find_call_and_see_the_call_on_the_timeline(
    e2e_lab: E2eLab, open_agent: OpenAgent, offline_after: list[Agent]
) -> None:
    bob = open_agent("bob")
    offline_after.append(bob)
    widget = bob.page
    page = bob.context.new_page()
    second = customer_number(Behaviour.ANSWER, ring=1, talk=0, suffix="7701")

    # A company, then a person in it: two phones, a tag and a custom field.
    page.goto("/clients")
    page.click(tid("client-new"))
    page.check(tid("kind-company"))
    page.fill(tid("field-company-name"), "Lumière Optique")
    page.click(tid("client-save"))
    expect(page.locator(tid("client-name"))).to_have_text("Lumière Optique")

    page.goto("/clients/new")
    page.fill(tid("field-first-name"), "Maëlle")
    page.fill(tid("field-last-name"), "Carpentier")
    page.select_option(tid("field-company"), label="Lumière Optique")
    page.fill(tid("phone-number"), "06 71 22 33 44")
    page.click(tid("phone-add"))
    rows = page.locator(tid("phone-row"))
    expect(rows).to_have_count(2)
    rows.nth(1).locator(tid("phone-number")).fill(second)
    rows.nth(1).locator(tid("phone-kind")).select_option("work")
    # A bad number is refused where it is, and nothing is written.
    rows.nth(0).locator(tid("phone-number")).fill("06 71 2x")
    page.click(tid("client-save"))
    expect(page.locator(tid("form-error"))).to_be_visible()
    expect(page.locator(tid("form-error"))).to_have_attribute("data-path", "phones.0.number")
    expect(rows.nth(0).locator(tid("phone-number"))).to_have_attribute("aria-invalid", "true")
    rows.nth(0).locator(tid("phone-number")).fill("06 71 22 33 44")
    page.check(tid("tag-vip"))
    page.select_option(tid("cf-segment"), "retail")
    page.fill(tid("cf-contract_value"), "1500")
    page.click(tid("client-save"))
    expect(page.locator(tid("client-name"))).to_have_text("Maëlle Carpentier")
    expect(page.locator(tid("client-company"))).to_have_text("Lumière Optique")
    expect(page.locator(tid("client-phone"))).to_have_count(2)
    expect(page.locator(tid("client-tags"))).to_contain_text("vip")
    expect(page.locator(tid("client-field-segment"))).to_have_text("retail")
    expect(page.locator(tid("client-field-contract_value"))).to_have_text("1500")
    client_id = page.locator(tid("client-card")).get_attribute("data-id")
    assert client_id

    # Found by the last four digits of the second phone, in the one search box.
    page.goto("/clients")
    expect(page.locator(tid("client-row")).first).to_be_visible()
    shot(page, "crm-clients-list")
    page.fill(tid("client-search"), second[-4:])
    rows = page.locator(tid("client-row"))
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-id", client_id)
    page.click(tid("client-link"))
    expect(page.locator(tid("client-name"))).to_have_text("Maëlle Carpentier")

    # Called from the card: Bob's phone answers, then the lab's customer.
    expect(page.locator("body")).to_have_attribute("data-live", "online")
    seen_before = len(e2e_lab.lab.customers.invites())
    page.locator(f"{tid('client-call')}[data-number='{second}']").click()
    wait_until(
        lambda: [i for i in e2e_lab.lab.customers.invites()[seen_before:] if i.number == second],
        timeout=20,
        what="the lab's customer called",
    )
    panel = widget.locator(tid("call-panel"))
    expect(panel).to_have_attribute("data-state", "bridged", timeout=20_000)
    call_id = panel.get_attribute("data-call-id")
    assert call_id
    widget.click(tid("call-hangup"))
    wrap_up(widget, call_id, "sale")
    wait_until(
        lambda: bob.context.request.get(f"/api/calls/{call_id}").json().get("recording_url"),
        timeout=20,
        what="the recording attached",
    )

    # The call on the timeline, with its disposition and its recording.
    page.reload()
    item = page.locator(f"{tid('timeline-item')}[data-call-id='{call_id}']")
    expect(item).to_be_visible()
    expect(item.locator(tid("timeline-disposition"))).to_have_text("sale")
    player = item.locator(f"audio{tid('timeline-recording')}")
    expect(player).to_have_attribute("src", f"/api/calls/{call_id}/recording")
    duration = player.evaluate(
        """async (a) => {
            if (a.readyState < 1) await new Promise((ok, ko) => {
                a.addEventListener("loadedmetadata", ok, {once: true});
                a.addEventListener("error", () => ko(new Error("audio error")), {once: true});
                a.preload = "metadata";
                a.load();
            });
            return a.duration;
        }"""
    )
    assert duration > 0.5
    page.fill(tid("note-text"), "Wants two pairs of glasses.")
    page.click(tid("note-save"))
    expect(page.locator(tid("timeline-note")).first).to_have_text("Wants two pairs of glasses.")
    shot(page, "crm-client-card")


def test_a_private_client_is_invisible_to_another_agent_even_when_calling(
    e2e_lab: E2eLab, open_agent: OpenAgent, offline_after: list[Agent]
) -> None:
    bob = open_agent("bob", via_form=False)
    alice = open_agent("alice")
    offline_after += [bob, alice]
    found = bob.context.request.get("/api/clients", params={"q": "Fontaine"}).json()
    assert [c["display_name"] for c in found["clients"]] == ["Léa Fontaine"]
    lea = found["clients"][0]
    assert lea["visibility"] == "private"

    page = alice.context.new_page()
    page.goto("/clients")
    expect(page.locator(tid("client-row")).first).to_be_visible()
    expect(page.locator(tid("client-row"), has_text="Léa Fontaine")).to_have_count(0)
    page.fill(tid("client-search"), "Fontaine")
    expect(page.locator(tid("client-empty"))).to_be_visible()
    page.fill(tid("client-search"), lea["phones"][0]["number"][-4:])
    expect(page.locator(tid("client-empty"))).to_be_visible()
    for path in (f"/clients/{lea['id']}", f"/api/clients/{lea['id']}"):
        refused = alice.context.request.get(path)
        assert refused.status == 403, path
        assert "Fontaine" not in refused.text()
    assert (
        alice.context.request.get("/api/clients", params={"q": "Fontaine", "total": "true"}).json()[
            "total"
        ]
        == 0
    )

    # Léa calls; the call is offered to Alice: her pop-up says "Private client" only.
    widget = alice.page
    widget.click(tid("state-available"))
    expect(widget.locator(tid("agent-state"))).to_have_attribute("data-state", "available")
    e2e_lab.run(
        e2e_lab.lab.customers.call(
            RECEPTION, known_numbers()["Léa Fontaine"], talk_seconds=60, timeout=30
        )
    )
    popup = widget.locator(tid("popup"))
    expect(popup).to_be_visible()
    call_id = popup.get_attribute("data-call-id")
    assert call_id
    card = popup.locator(tid("popup-card"))
    expect(card.locator(tid("card-name"))).to_have_text("Private client")
    expect(card.locator(tid("card-company"))).to_have_text("")
    expect(card.locator(tid("card-tags"))).to_have_text("")
    expect(popup).not_to_contain_text("Fontaine")
    widget.click(tid("popup-answer"))
    panel = widget.locator(tid("call-panel"))
    expect(panel).to_have_attribute("data-state", "bridged")
    expect(panel).not_to_contain_text("Fontaine")
    widget.click(tid("call-hangup"))
    wrap_up(widget, call_id, "interested")


def test_merge_a_duplicate_then_delete_with_a_confirmation(open_agent: OpenAgent) -> None:
    chloe = open_agent("chloe", via_form=False)
    made = []
    for phone in ("04 91 11 22 33", "04 91 44 55 66"):
        reply = chloe.api(
            "POST",
            "/api/clients/full",
            {"first_name": "Odile", "last_name": "Vasseur", "phones": [{"number": phone}]},
        )
        assert reply.status == 201, reply.text()
        made.append(reply.json())
    keep, dup = made
    page = chloe.context.new_page()
    page.goto(f"/clients/{keep['id']}")
    page.click(tid("client-merge-open"))
    dialog = page.locator(tid("merge-dialog"))
    expect(dialog).to_be_visible()
    page.fill(tid("merge-search"), "445566")
    hit = dialog.locator(f"{tid('merge-hit')}[value='{dup['id']}']")
    hit.check()
    page.click(tid("merge-confirm"))
    expect(page.locator(tid("client-phone"))).to_have_count(2)
    expect(page.locator(tid("timeline"))).to_contain_text("Merged a duplicate")
    assert chloe.context.request.get(f"/api/clients/{dup['id']}").status == 404

    # Delete asks first: Escape keeps the client, the confirmation removes it.
    page.click(tid("client-delete"))
    expect(page.locator(tid("delete-dialog"))).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator(tid("delete-dialog"))).to_be_hidden()
    assert chloe.context.request.get(f"/api/clients/{keep['id']}").ok
    page.click(tid("client-delete"))
    page.click(tid("delete-confirm"))
    page.wait_for_url("**/clients")
    assert chloe.context.request.get(f"/api/clients/{keep['id']}").status == 404
