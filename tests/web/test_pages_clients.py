"""The clients' pages rendered by the server: the list with its filters, the card
with its timeline, the form, and a private client's card refused to another agent."""

from __future__ import annotations

from crm_store import CallDirection, ClientKind, PhoneKind, Visibility
from crm_store.enums import CustomFieldType
from tests.web.conftest import Env

PASSWORD = "correct horse battery"
HOSTILE = "<script>alert('x')</script>"


async def _login(env: Env, username: str = "alice") -> str:
    await env.store.users.set_password(env.users[username].id, PASSWORD)
    reply = await env.client.post(
        "/api/auth/login", json={"username": username, "password": PASSWORD}
    )
    assert reply.status_code == 200, reply.text
    csrf: str = reply.json()["csrf_token"]
    return csrf


async def test_list_card_and_form_pages(env: Env) -> None:
    store = env.store
    await store.definitions.define_tag("vip")
    await store.definitions.define_field("budget", "Budget", CustomFieldType.NUMBER)
    acme = await store.clients.create(ClientKind.COMPANY, name="Acme")
    ana = await store.clients.create(
        ClientKind.PERSON,
        first_name="Ana",
        last_name=HOSTILE,
        company_id=acme.id,
        phones=[("0612345678", PhoneKind.MOBILE), ("0144556677", PhoneKind.WORK)],
        tags=["vip"],
        custom_fields={"budget": 1200},
    )
    await store.calls.create(
        CallDirection.OUTBOUND,
        "1001",
        "+33144556677",
        client_id=ana.id,
        agent_user_id=env.users["alice"].id,
    )
    csrf = await _login(env)

    page = await env.client.get("/clients")
    assert page.status_code == 200
    html = page.text
    assert 'data-testid="client-row"' in html
    assert HOSTILE not in html
    assert 'aria-current="page"' in html
    assert 'href="/clients"' in html
    filtered = (await env.client.get("/clients", params={"q": "6677", "f.budget.ge": "1000"})).text
    assert filtered.count('data-testid="client-row"') == 1
    assert f'data-id="{ana.id}"' in filtered
    assert (await env.client.get("/clients", params={"tag": "nope"})).text.count(
        'data-testid="client-row"'
    ) == 0
    assert (await env.client.get("/clients", params={"sort": "shoe"})).status_code == 400
    counted = await env.client.get("/partials/clients/count", params={"tag": "vip"})
    assert 'data-total="1"' in counted.text

    card = (await env.client.get(f"/clients/{ana.id}")).text
    assert card.count('data-testid="client-call"') == 2
    assert 'data-testid="timeline-item" data-type="call"' in card
    assert HOSTILE not in card
    form = (await env.client.get(f"/clients/{ana.id}/edit")).text
    assert 'data-testid="client-form"' in form
    assert (await env.client.get("/clients/new")).status_code == 200

    note = await env.client.post(
        f"/partials/clients/{ana.id}/notes",
        data={"text": "Call back <b>soon</b>"},
        headers={"X-CSRF-Token": csrf, "HX-Request": "true"},
    )
    assert note.status_code == 200, note.text
    assert "Call back &lt;b&gt;soon&lt;/b&gt;" in note.text


async def test_a_private_clients_page_is_refused_to_another_agent(env: Env) -> None:
    secret = await env.store.clients.create(
        ClientKind.PERSON,
        first_name="Paul",
        last_name="Secret",
        responsible_user_id=env.users["alice"].id,
        visibility=Visibility.PRIVATE,
    )
    await _login(env, "bob")
    assert "Paul Secret" not in (await env.client.get("/clients")).text
    assert "Paul Secret" not in (await env.client.get("/clients", params={"q": "secret"})).text
    for path in (f"/clients/{secret.id}", f"/clients/{secret.id}/edit"):
        reply = await env.client.get(path)
        assert reply.status_code == 403
        assert "Paul" not in reply.text


async def test_pages_need_a_session(env: Env) -> None:
    for path in ("/clients", "/clients/new"):
        reply = await env.client.get(path)
        assert reply.status_code == 303
        assert reply.headers["location"].startswith("/login?next=")
