"""The server-rendered pages and htmx partials, over HTTP (httpx through ASGI),
with the real app over a real SQLite store: sessions, rights, CSRF, escaping,
languages, the catalogues and the vendored assets."""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from babel.messages.pofile import read_po

from crm_store import Call, CallDirection, CallEndReason, ClientKind
from tests.web.conftest import Env
from web import i18n

ROOT = Path(__file__).parents[2]
PASSWORD = "correct horse battery"
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
HOSTILE = "<script>alert('x')</script>"


async def _login(env: Env, username: str = "alice") -> str:
    await env.store.users.set_password(env.users[username].id, PASSWORD)
    response = await env.client.post(
        "/api/auth/login", json={"username": username, "password": PASSWORD}
    )
    assert response.status_code == 200, response.text
    csrf: str = response.json()["csrf_token"]
    return csrf


async def _call(
    env: Env, user: str, *, minutes: int, answered: bool = True, client_id: uuid.UUID | None = None
) -> Call:
    at = T0 + timedelta(minutes=minutes)
    call = await env.store.calls.create(
        CallDirection.INBOUND,
        "+33612345678",
        "2001",
        agent_user_id=env.users[user].id,
        client_id=client_id,
        at=at,
    )
    if answered:
        await env.store.calls.mark_answered(call.id, at + timedelta(seconds=3))
    reason = CallEndReason.COMPLETED if answered else CallEndReason.NO_ANSWER
    return await env.store.calls.end(call.id, reason, at + timedelta(seconds=43))


def _testids(html: str) -> set[str]:
    return set(re.findall(r'data-testid="([^"]+)"', html))


async def test_pages_need_a_session_and_send_back_after_login(env: Env) -> None:
    root = await env.client.get("/")
    assert (root.status_code, root.headers["location"]) == (303, "/widget")
    for path, expected in (
        ("/widget", "/login?next=%2Fwidget"),
        ("/widget/panel", "/login?next=%2Fwidget%2Fpanel"),
    ):
        response = await env.client.get(path)
        assert (response.status_code, response.headers["location"]) == (303, expected)
    page = await env.client.get("/login?next=/widget/panel")
    assert page.status_code == 200
    assert {"login-submit", "login-error"} <= _testids(page.text)
    assert 'id="username"' in page.text
    assert 'id="password"' in page.text
    assert 'data-next="/widget/panel"' in page.text
    await _login(env)
    widget = await env.client.get("/widget")
    assert widget.status_code == 200
    assert widget.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(
    "target", ["//evil.example/x", "https://evil.example/", "/\\evil.example", "widget"]
)
async def test_login_goes_only_to_a_local_next(env: Env, target: str) -> None:
    page = await env.client.get("/login", params={"next": target})
    assert 'data-next="/widget"' in page.text


async def test_widget_page_has_the_contract_hooks_and_loads_under_300_kb(env: Env) -> None:
    csrf = await _login(env)
    page = await env.client.get("/widget")
    html = page.text
    expected = {
        "conn-status", "agent-state", "state-available", "state-offline", "state-paused",
        "pause-reason", "pause-confirm", "dial-input", "dial-preview", "dial-call", "dial-error",
        "search-input", "search-results", "history", "history-direction", "history-missed",
        "history-date", "call-panel", "call-number", "call-timer", "call-hold", "call-hangup",
        "call-answer", "dtmf-1", "dtmf-0", "dtmf-star", "dtmf-hash", "dtmf-sent",
        "call-transfer", "transfer-panel", "transfer-to", "transfer-blind",
        "transfer-attended", "transfer-complete", "transfer-cancel", "transfer-status",
        "call-note", "call-note-status", "wrapup", "wrapup-disposition", "wrapup-note",
        "wrapup-followup", "wrapup-followup-title", "wrapup-followup-due", "wrapup-save",
        "wrapup-skip", "wrapup-error", "dialer-panel", "dialer-list", "dialer-start",
        "dialer-pause", "dialer-resume", "dialer-skip", "dialer-stop", "dialer-state",
        "dialer-progress", "dialer-card", "popup", "popup-number", "popup-unknown",
        "popup-card", "card-name", "card-company", "card-responsible", "card-tags",
        "card-last-calls", "card-tasks", "popup-answer", "popup-create-lead",
        "popup-create-client", "popup-contact-name", "popup-contact-save",
    }  # fmt: skip
    assert expected - _testids(html) == set()
    assert 'data-ready="false"' in html
    assert f'<meta name="csrf-token" content="{csrf}">' in html
    assert f'"X-CSRF-Token": "{csrf}"' in html
    for reason in env.config.widget.pause_reasons:
        assert f'<option value="{reason}">' in html
    # Everything the first load fetches, from this server, under 300 KB.
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', html)
    assert any(a.endswith("/vendor/htmx/htmx.min.js") for a in assets)
    modules = ["api.js", "i18n.js", "ring.js", "ws.js"]
    widget_js = next(a for a in assets if a.endswith("/js/widget.js"))
    assets += [widget_js.replace("widget.js", m) for m in modules]
    total = len(page.content)
    for asset in assets:
        response = await env.client.get(asset)
        assert response.status_code == 200, asset
        assert "immutable" in response.headers["cache-control"]
        total += len(response.content)
    total += len((await env.client.get("/i18n/en.json")).content)
    assert total < 300_000, total
    unversioned = await env.client.get("/static/js/widget.js")
    assert unversioned.headers["cache-control"] == "no-cache"


async def test_hostile_names_and_queries_are_escaped(env: Env) -> None:
    await _login(env)
    client = await env.store.clients.create(
        ClientKind.COMPANY, name=HOSTILE, phones=["+33612345678"]
    )
    for q in (HOSTILE, "' OR 1=1 --", "script", "<b>"):
        response = await env.client.get("/partials/search", params={"q": q})
        assert response.status_code == 200, (q, response.text)
        assert "<script>alert" not in response.text
        assert "<b>" not in response.text
    found = (await env.client.get("/partials/search", params={"q": "+33612345678"})).text
    assert f'data-id="{client.id}"' in found
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in found
    card = await env.client.get(f"/partials/contacts/client/{client.id}")
    assert card.status_code == 200
    assert "<script>alert" not in card.text
    assert "&lt;script&gt;" in card.text
    call = await _call(env, "alice", minutes=1, client_id=client.id)
    rows = (await env.client.get("/partials/history")).text
    assert f'data-call-id="{call.id}"' in rows
    assert "<script>alert" not in rows


async def test_history_shows_an_unknown_number_in_display_form(env: Env) -> None:
    await _login(env)
    call = await _call(env, "alice", minutes=1, answered=False)
    rows = (await env.client.get("/partials/history")).text
    row = rows[rows.index(f'data-call-id="{call.id}"') :]
    row = row[: row.index("</tr>")]
    cells = re.findall(r"<td>([^<]*)</td>", row)
    # The "Who" column reads as people read a number; the call-back keeps it raw.
    assert "+33 6 12 34 56 78" in cells
    assert "+33612345678" not in cells
    assert 'data-number="+33612345678"' in row


async def test_contact_card_headings_only_over_lists_with_content(env: Env) -> None:
    await _login(env)
    bare = await env.store.clients.create(
        ClientKind.PERSON, first_name="Ines", last_name="Roy", phones=["+33698765432"]
    )
    card = (await env.client.get(f"/partials/contacts/client/{bare.id}")).text
    assert "card-last-calls-heading" not in card
    assert "card-tasks-heading" not in card
    assert re.search(r'<ul data-testid="card-last-calls" hidden>\s*</ul>', card)
    assert re.search(r'<ul data-testid="card-tasks" hidden>\s*</ul>', card)

    busy = await env.store.clients.create(
        ClientKind.PERSON, first_name="Paul", last_name="Blanc", phones=["+33612345678"]
    )
    await _call(env, "alice", minutes=1, answered=False, client_id=busy.id)
    answered = await _call(env, "alice", minutes=2, client_id=busy.id)
    await env.store.calls.set_disposition(answered.id, "sale")
    await env.store.tasks.create("Send the quote", client_id=busy.id, due_at=T0 + timedelta(days=2))
    card = (await env.client.get(f"/partials/contacts/client/{busy.id}")).text
    assert 'data-testid="card-last-calls-heading">Last calls</h4>' in card
    assert 'data-testid="card-tasks-heading">Open tasks</h4>' in card
    calls = re.search(r'<ul data-testid="card-last-calls">(.*?)</ul>', card, re.S)
    assert calls is not None
    items = [
        " ".join(re.sub(r"<[^>]+>", " ", li).split())
        for li in re.findall(r"<li>(.*?)</li>", calls.group(1), re.S)
    ]
    assert items == [
        "2026-12-01T09:02:00+00:00 · Inbound · sale",
        "2026-12-01T09:01:00+00:00 · Inbound · Missed",
    ]
    tasks = re.search(r'<ul data-testid="card-tasks">(.*?)</ul>', card, re.S)
    assert tasks is not None
    assert "Send the quote · due" in " ".join(tasks.group(1).split())
    assert 'datetime="2026-12-03T09:00:00+00:00"' in tasks.group(1)


async def test_another_agents_call_detail_is_forbidden(env: Env) -> None:
    await _login(env)
    theirs = await _call(env, "bob", minutes=1)
    refused = await env.client.get(f"/partials/calls/{theirs.id}")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "forbidden"
    mine = await _call(env, "alice", minutes=2)
    path = env.recordings / f"{mine.id}.wav"
    path.write_bytes(b"RIFF0000WAVE")
    await env.store.calls.attach_recording(mine.id, str(path), 1.0)
    detail = await env.client.get(f"/partials/calls/{mine.id}")
    assert detail.status_code == 200
    assert f'src="/api/calls/{mine.id}/recording"' in detail.text
    assert 'data-testid="recording-audio"' in detail.text
    assert str(env.recordings) not in detail.text
    rows = (await env.client.get("/partials/history")).text
    assert str(theirs.id) not in rows


async def test_htmx_post_without_the_csrf_token_is_refused_and_changes_nothing(
    env: Env,
) -> None:
    csrf = await _login(env)
    call = await _call(env, "alice", minutes=1)
    url = f"/partials/calls/{call.id}/note"
    refused = await env.client.post(url, data={"text": "taken"})
    assert refused.status_code == 403
    assert refused.json()["error"]["details"] == {"reason": "csrf"}
    wrong = await env.client.post(url, data={"text": "taken"}, headers={"X-CSRF-Token": "nope"})
    assert wrong.status_code == 403
    assert (await env.store.calls.get(call.id)).note is None
    saved = await env.client.post(
        url, data={"text": "called back <b>"}, headers={"X-CSRF-Token": csrf, "HX-Request": "true"}
    )
    assert saved.status_code == 200
    assert "called back &lt;b&gt;" in saved.text
    assert (await env.store.calls.get(call.id)).note == "called back <b>"
    too_long = await env.client.post(
        url, data={"text": "x" * 10_001}, headers={"X-CSRF-Token": csrf}
    )
    assert too_long.status_code == 413
    assert (await env.store.calls.get(call.id)).note == "called back <b>"


async def test_history_partial_filters_and_pages_with_before(env: Env) -> None:
    await _login(env)
    answered = [await _call(env, "alice", minutes=i) for i in range(22)]
    missed = await _call(env, "alice", minutes=30, answered=False)
    first = (await env.client.get("/partials/history", params={"direction": "all"})).text
    ids = re.findall(r'data-testid="history-row" data-call-id="([^"]+)"', first)
    assert ids[0] == str(missed.id)
    assert len(ids) == 20
    assert 'data-missed="true"' in first
    assert 'data-testid="history-callback"' in first
    cursor = re.search(r'hx-get="(/partials/history\?[^"]+before=[^"]+)"', first)
    assert cursor is not None
    more = (await env.client.get(cursor.group(1).replace("&amp;", "&"))).text
    more_ids = re.findall(r'data-testid="history-row" data-call-id="([^"]+)"', more)
    assert more_ids == [str(c.id) for c in reversed(answered[:3])]
    assert 'data-testid="history-next"' not in more
    only_missed = (await env.client.get("/partials/history", params={"missed": "on"})).text
    assert re.findall(r'data-call-id="([^"]+)"', only_missed) == [str(missed.id)]
    outbound = (await env.client.get("/partials/history", params={"direction": "outbound"})).text
    assert 'data-testid="history-empty"' in outbound
    # A day in the browser's time zone: 2 December in Tokyo starts at 15:00 UTC on the 1st.
    day = await env.client.get(
        "/partials/history", params={"date": "2026-12-02", "tz": "Asia/Tokyo"}
    )
    assert len(re.findall(r'data-testid="history-row"', day.text)) == 0
    day = await env.client.get(
        "/partials/history", params={"date": "2026-12-01", "tz": "Europe/Paris"}
    )
    assert len(re.findall(r'data-testid="history-row"', day.text)) == 20
    bad = await env.client.get("/partials/history", params={"date": "2026-12-01", "tz": "Mars/X"})
    assert bad.status_code == 400
    no_day = await env.client.get(
        "/partials/history", params={"direction": "all", "date": "", "tz": "Europe/Paris"}
    )
    assert no_day.status_code == 200
    bad = await env.client.get("/partials/history", params={"date": "2026-13-45"})
    assert bad.status_code == 400
    bad = await env.client.get("/partials/history", params={"before": "not-a-cursor"})
    assert bad.status_code == 400


async def test_language_from_cookie_then_accept_language_then_config(env: Env) -> None:
    async def title(headers: dict[str, str] | None = None) -> str:
        page = await env.client.get("/login", headers=headers or {})
        found = re.search(r'data-testid="login-submit"[^>]*>([^<]+)<', page.text)
        assert found is not None
        return found.group(1)

    assert await title() == "Log in"
    assert await title({"Accept-Language": "de-DE, fr;q=0.8, en;q=0.5"}) == "Se connecter"
    assert await title({"Accept-Language": "en-GB, fr;q=0.8"}) == "Log in"
    chosen = await env.client.get("/lang/fr", params={"next": "/login"})
    assert (chosen.status_code, chosen.headers["location"]) == (303, "/login")
    assert await title({"Accept-Language": "en"}) == "Se connecter"
    evil = await env.client.get("/lang/en", params={"next": "//evil.example"})
    assert evil.headers["location"] == "/widget"
    assert await title({"Accept-Language": "fr"}) == "Log in"
    assert (await env.client.get("/lang/xx")).status_code == 400
    catalogue = (await env.client.get("/i18n/fr.json")).json()
    assert catalogue["Unknown number"] == "Numéro inconnu"
    assert (await env.client.get("/i18n/xx.json")).status_code == 400


def test_catalogues_are_complete_and_up_to_date(tmp_path: Path) -> None:
    pot = tmp_path / "messages.pot"
    subprocess.run(
        [sys.executable, "-m", "babel.messages.frontend", "extract", "-F", "babel.cfg",
         "--no-location", "-o", str(pot), "."],
        cwd=ROOT, check=True, capture_output=True,
    )  # fmt: skip
    with pot.open("rb") as f:
        source = {m.id for m in read_po(f) if m.id}
    assert len(source) > 100
    for lang in i18n.LANGUAGES:
        with (ROOT / "web/translations" / lang / "LC_MESSAGES/messages.po").open("rb") as f:
            catalog = read_po(f, locale=lang)
        ids = {m.id for m in catalog if m.id}
        assert source - ids == set(), f"{lang}: not in the catalogue"
        untranslated = [m.id for m in catalog if m.id and not m.string]
        assert untranslated == [], lang
        # Placeholders survive translation.
        for m in catalog:
            if m.id and isinstance(m.id, str):
                assert set(re.findall(r"\{\w+\}", m.id)) == set(
                    re.findall(r"\{\w+\}", str(m.string))
                ), m.id


def test_missing_compiled_catalogues_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(i18n.MissingCatalogues, match="pybabel compile"):
        i18n.load(tmp_path)


async def test_api_docs_use_the_vendored_swagger_ui(env: Env) -> None:
    docs = await env.client.get("/api/docs")
    assert docs.status_code == 200
    assert "cdn." not in docs.text
    assert "https://" not in docs.text.split("<body>")[0]
    scripts = re.findall(r'src="(/static/[^"]+)"', docs.text)
    assert any(s.endswith("swagger-ui-bundle.js") for s in scripts)
    for url in scripts:
        assert (await env.client.get(url)).status_code == 200
    assert "cdn" not in docs.headers["content-security-policy"]
    assert (await env.client.get("/api/openapi.json")).status_code == 200


async def test_embed_script_opens_the_panel_in_the_configured_corner(env: Env) -> None:
    script = await env.client.get("/embed.js")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert '"/widget/panel"' in script.text
    assert '|| "bottom-right"' in script.text


def test_vendored_files_match_the_pins() -> None:
    done = subprocess.run(
        [sys.executable, "scripts/vendor.py", "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout
    for name in ("htmx", "swagger-ui"):
        assert (ROOT / "web/static/vendor" / name / "LICENSE").is_file()


async def test_partials_need_a_session(env: Env) -> None:
    response = await env.client.get("/partials/search", params={"q": "a"})
    assert response.status_code == 401
    assert isinstance(response, httpx.Response)
