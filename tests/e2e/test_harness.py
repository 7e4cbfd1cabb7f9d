"""The harness itself: the seeded daemon on the lab answers a browser's session.

What the widget's scenarios stand on, checked with what every page uses: the
login API, the session cookie in a real Chromium context, the CSRF rule, the seeded
data through the API.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import Browser

from .conftest import VIEWPORT, Daemon, api_login, ready

pytestmark = [pytest.mark.lab, pytest.mark.browser]


def test_the_seeded_daemon_serves_a_browser_session(browser: Browser, daemon: Daemon) -> None:
    assert ready(daemon.base_url)
    context = browser.new_context(base_url=daemon.base_url, viewport=VIEWPORT)  # type: ignore[arg-type]
    try:
        refused = context.request.post(
            "/api/auth/login", data={"username": "alice", "password": "wrong-password"}
        )
        assert refused.status == 401
        csrf = api_login(context, "alice", daemon.passwords["alice"])
        assert any(c["name"] == "sb_session" for c in context.cookies())

        me = context.request.get("/api/agents/me")
        assert me.ok, me.text()
        assert [a["agent"] for a in me.json()] == ["alice"]
        hits = context.request.get("/api/contacts/search", params={"q": "kessler"}).json()
        assert {h["display_name"] for h in hits["results"]} >= {
            "Kessler Logistik GmbH",
            "Jonas Kessler",
        }
        history = context.request.get("/api/calls").json()
        assert len(history["calls"]) == 5  # Alice's seeded calls

        # A state change needs the session's CSRF token.
        body = {"state": "offline"}
        forged = context.request.put(
            "/api/agents/alice/state", data=body, headers={"X-CSRF-Token": "forged"}
        )
        assert forged.status == 403
        assert forged.json()["error"]["details"]["reason"] == "csrf"
        done = context.request.put(
            "/api/agents/alice/state", data=body, headers={"X-CSRF-Token": csrf}
        )
        assert done.ok, done.text()
    finally:
        context.close()
