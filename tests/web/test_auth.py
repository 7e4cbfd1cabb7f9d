"""Log in and out over HTTP: the cookie, CSRF, lock-out, tickets and bearer tokens."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from crm_store import Store, User
from crm_store import _models as m
from web.auth import AddressLimiter
from web.security import CurrentPrincipal

from ._auth_fixtures import PASSWORD, alice, app, http, log_in, store

__all__ = ["alice", "app", "http", "store"]

WRONG = {
    "error": {"code": "unauthenticated", "message": "wrong user name or password", "details": {}}
}


@pytest.fixture
def changes(app: FastAPI) -> list[str]:
    """What a state-changing probe endpoint behind the shared principal
    dependency was asked to do (it appends the caller's user name)."""
    done: list[str] = []

    async def change(principal: CurrentPrincipal) -> dict[str, Any]:
        done.append(principal.username)
        return {"ok": True}

    app.add_api_route("/api/probe", change, methods=["POST"])
    return done


async def _tickets(store: Store) -> int:
    async with store.engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(m.ws_tickets)) or 0)


def _set_cookie(response: httpx.Response) -> str:
    header: str | None = response.headers.get("set-cookie")
    assert header is not None, "no cookie set"
    return header


async def test_login_sets_a_strict_httponly_cookie_and_me_answers(
    http: httpx.AsyncClient, alice: User
) -> None:
    response = await http.post("/api/auth/login", json={"username": "alice", "password": PASSWORD})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["user"] == {
        "id": str(alice.id),
        "username": "alice",
        "display_name": "Alice Martin",
        "role": "agent",
        "agents": ["alice"],
    }
    assert len(body["csrf_token"]) >= 32
    cookie = _set_cookie(response)
    attributes = {part.strip().split("=", 1)[0].lower() for part in cookie.split(";")}
    assert cookie.startswith("sb_session=sbs_")
    assert {"httponly", "path", "samesite", "max-age"} <= attributes
    assert "samesite=strict" in cookie.lower()
    assert "path=/;" in cookie.lower() + ";"
    assert "secure" not in attributes
    assert response.headers["cache-control"] == "no-store"

    me = await http.get("/api/auth/me")
    assert me.status_code == 200
    assert me.json() == body


async def test_cookie_is_secure_when_the_request_came_over_https(app: FastAPI, alice: User) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="https://sb.test"
    ) as client:
        response = await client.post(
            "/api/auth/login", json={"username": "alice", "password": PASSWORD}
        )
    assert response.status_code == 200
    attributes = {p.strip().lower() for p in _set_cookie(response).split(";")}
    assert "secure" in attributes


async def test_wrong_password_and_unknown_user_get_the_same_answer(
    http: httpx.AsyncClient, alice: User
) -> None:
    wrong = await http.post("/api/auth/login", json={"username": "alice", "password": "nope"})
    unknown = await http.post("/api/auth/login", json={"username": "mallory", "password": PASSWORD})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json() == WRONG
    assert "set-cookie" not in wrong.headers
    assert "set-cookie" not in unknown.headers
    assert (await http.get("/api/auth/me")).status_code == 401


async def test_five_wrong_passwords_lock_the_user_out(http: httpx.AsyncClient, alice: User) -> None:
    for _ in range(5):
        wrong = await http.post(
            "/api/auth/login", json={"username": "alice", "password": "guess again"}
        )
        assert wrong.status_code == 401
    locked = await http.post("/api/auth/login", json={"username": "alice", "password": PASSWORD})
    assert locked.status_code == 429
    error = locked.json()["error"]
    assert error["code"] == "rate_limited"
    assert 0 < error["details"]["retry_after"] <= 15 * 60
    assert locked.headers["retry-after"] == str(error["details"]["retry_after"])
    assert "set-cookie" not in locked.headers


async def test_an_address_with_too_many_failures_is_refused_whatever_the_name(
    app: FastAPI, http: httpx.AsyncClient, alice: User
) -> None:
    app.state.login_limiter = AddressLimiter(max_failures=3, window=300.0)
    for name in ("bob", "carol", "dave"):
        wrong = await http.post("/api/auth/login", json={"username": name, "password": "x"})
        assert wrong.status_code == 401
    refused = await http.post("/api/auth/login", json={"username": "alice", "password": PASSWORD})
    assert refused.status_code == 429
    assert refused.json()["error"]["details"]["retry_after"] > 0
    assert "set-cookie" not in refused.headers


def test_address_limiter_forgets_failures_older_than_its_window() -> None:
    now = [1000.0]
    limiter = AddressLimiter(max_failures=2, window=60.0, clock=lambda: now[0])
    limiter.failed("192.0.2.1")
    now[0] += 30
    limiter.failed("192.0.2.1")
    assert limiter.retry_after("192.0.2.1") == 30
    assert limiter.retry_after("192.0.2.2") is None
    now[0] += 31
    assert limiter.retry_after("192.0.2.1") is None


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-CSRF-Token": "forged"}, {"X-CSRF-Token": ""}],
    ids=["missing", "forged", "empty"],
)
async def test_state_change_without_the_csrf_token_is_refused_and_changes_nothing(
    http: httpx.AsyncClient,
    store: Store,
    alice: User,
    changes: list[str],
    headers: dict[str, str],
) -> None:
    csrf = await log_in(http)
    for path in ("/api/probe", "/api/auth/ticket", "/api/auth/logout"):
        refused = await http.post(path, headers=headers)
        assert refused.status_code == 403, path
        assert refused.json()["error"]["code"] == "forbidden"
        assert refused.json()["error"]["details"] == {"reason": "csrf"}
    assert changes == []
    assert await _tickets(store) == 0
    # The session is still open, and the right token works.
    assert (await http.get("/api/auth/me")).status_code == 200
    done = await http.post("/api/probe", headers={"X-CSRF-Token": csrf})
    assert done.status_code == 200
    assert changes == ["alice"]


async def test_logout_revokes_the_session_and_clears_the_cookie(
    http: httpx.AsyncClient, store: Store, alice: User
) -> None:
    csrf = await log_in(http)
    token = http.cookies["sb_session"]
    response = await http.post("/api/auth/logout", headers={"X-CSRF-Token": csrf})
    assert response.status_code == 204
    cleared = _set_cookie(response).lower()
    assert cleared.startswith("sb_session=")
    assert "max-age=0" in cleared
    assert "sb_session" not in http.cookies
    # The old cookie, sent again, opens nothing: the session is revoked in the store.
    again = await http.get("/api/auth/me", headers={"Cookie": f"sb_session={token}"})
    assert again.status_code == 401
    assert again.json()["error"]["code"] == "unauthenticated"
    assert await store.sessions.get(token) is None
    ticket = await http.post(
        "/api/auth/ticket", headers={"Cookie": f"sb_session={token}", "X-CSRF-Token": csrf}
    )
    assert ticket.status_code == 401


async def test_ticket_is_single_use_and_short_lived(
    http: httpx.AsyncClient, store: Store, alice: User
) -> None:
    csrf = await log_in(http)
    response = await http.post("/api/auth/ticket", headers={"X-CSRF-Token": csrf})
    assert response.status_code == 200
    body = response.json()
    assert body["expires_in"] == 30
    assert body["ticket"].startswith("sbk_")
    user = await store.users.authenticate(body["ticket"])
    assert user is not None
    assert user.id == alice.id
    assert await store.users.authenticate(body["ticket"]) is None


async def test_bearer_api_token_still_works_without_csrf(
    http: httpx.AsyncClient, store: Store, alice: User, changes: list[str]
) -> None:
    _, token = await store.users.issue_token(alice.id, "crm")
    bearer = {"Authorization": f"Bearer {token}"}
    me = await http.get("/api/auth/me", headers=bearer)
    assert me.status_code == 200
    assert me.json()["user"]["username"] == "alice"
    assert me.json()["csrf_token"] == ""
    assert (await http.post("/api/probe", headers=bearer)).status_code == 200
    assert changes == ["alice"]
    ticket = await http.post("/api/auth/ticket", headers=bearer)
    assert ticket.status_code == 200
    assert ticket.json()["ticket"].startswith("sbk_")
    # A websocket ticket is not an API token: refused, and left unused.
    sbk = {"Authorization": f"Bearer {ticket.json()['ticket']}"}
    assert (await http.post("/api/probe", headers=sbk)).status_code == 401
    assert (await http.get("/api/auth/me", headers=sbk)).status_code == 401
    assert await store.users.authenticate(ticket.json()["ticket"]) is not None
    bad = {"Authorization": "Bearer sbt_not-a-token"}
    assert (await http.post("/api/probe", headers=bad)).status_code == 401
    assert (await http.post("/api/auth/ticket", headers=bad)).status_code == 401
    assert changes == ["alice"]


async def test_a_disabled_user_loses_the_session(
    http: httpx.AsyncClient, store: Store, alice: User
) -> None:
    await log_in(http)
    await store.users.set_active(alice.id, False)
    assert (await http.get("/api/auth/me")).status_code == 401


@pytest.mark.parametrize(
    ("kwargs", "path"),
    [
        ({"json": {"username": "alice"}}, "password"),
        ({"json": {"username": "a" * 65, "password": PASSWORD}}, "username"),
        ({"json": {"username": "alice", "password": "p" * 1025}}, "password"),
        ({"json": {"username": "alice", "password": PASSWORD, "role": "admin"}}, "role"),
        ({"json": ["alice", PASSWORD]}, ""),
        # A form of another site cannot log a browser in: the body must be JSON.
        ({"data": {"username": "alice", "password": PASSWORD}}, ""),
    ],
    ids=["missing", "long-name", "long-password", "extra-field", "not-an-object", "form"],
)
async def test_bad_login_input_is_a_clear_400_and_opens_no_session(
    http: httpx.AsyncClient, alice: User, kwargs: dict[str, Any], path: str
) -> None:
    response = await http.post("/api/auth/login", **kwargs)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "bad_request"
    assert path in error["details"]["path"]
    assert PASSWORD not in response.text
    assert "set-cookie" not in response.headers


async def test_logout_without_a_session_just_clears_the_cookie(http: httpx.AsyncClient) -> None:
    response = await http.post("/api/auth/logout")
    assert response.status_code == 204
    assert "max-age=0" in _set_cookie(response).lower()
