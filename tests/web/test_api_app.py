"""The app as a whole: health, security headers, body limit, settings, numbers,
OpenAPI; and the real server in the loop (:class:`web.server.HttpServer`)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import uuid

import httpx
import pytest

from tests.web.conftest import Env
from web.app import create_app
from web.server import HttpServer


async def test_health_and_readiness(env: Env) -> None:
    assert (await env.client.get("/healthz")).json() == {"status": "ok"}
    ready = await env.client.get("/readyz")
    assert (ready.status_code, ready.json()) == (200, {"status": "ready"})
    starting = create_app(dataclasses.replace(env.services, ready=lambda: False))
    transport = httpx.ASGITransport(app=starting)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        reply = await client.get("/readyz")
    assert (reply.status_code, reply.json()) == (503, {"status": "starting"})


async def test_every_response_carries_the_security_headers(env: Env) -> None:
    for reply in (
        await env.client.get("/healthz"),
        await env.client.get("/api/calls"),  # 401
        await env.client.get("/api/settings/widget", headers=env.auth("bob")),
    ):
        csp = reply.headers["content-security-policy"]
        assert "default-src 'self'" in csp
        assert "frame-ancestors 'self' https://crm.example.com" in csp
        assert "connect-src 'self' ws://testserver:8765/" in csp
        assert reply.headers["x-content-type-options"] == "nosniff"
        assert reply.headers["referrer-policy"] == "same-origin"


async def test_a_body_over_the_limit_is_refused_before_it_is_read(env: Env) -> None:
    big = b'{"name": "' + b"x" * 70_000 + b'"}'
    declared = await env.client.post(
        "/api/leads", content=big, headers={**env.auth("bob"), "content-type": "application/json"}
    )
    assert declared.status_code == 413
    assert declared.json()["error"]["code"] == "too_large"

    async def chunks():  # type: ignore[no-untyped-def]
        for i in range(0, len(big), 8192):
            yield big[i : i + 8192]

    chunked = await env.client.post(
        "/api/leads",
        content=chunks(),
        headers={**env.auth("bob"), "content-type": "application/json"},
    )
    assert chunked.status_code == 413
    assert (
        await env.client.get("/api/contacts/search", params={"q": "xxx"}, headers=env.auth("sue"))
    ).json() == {"results": []}


async def test_small_chunked_body_goes_through(env: Env) -> None:
    async def chunks():  # type: ignore[no-untyped-def]
        yield b'{"name": "Chunked'
        yield b' Lead"}'

    made = await env.client.post(
        "/api/leads",
        content=chunks(),
        headers={**env.auth("bob"), "content-type": "application/json"},
    )
    assert made.status_code == 201, made.text
    assert made.json()["display_name"] == "Chunked Lead"


async def test_widget_settings(env: Env) -> None:
    reply = await env.client.get("/api/settings/widget", headers=env.auth("alice"))
    assert reply.json() == {
        "websocket_url": "ws://testserver:8765/",
        "region": "FR",
        "pause_reasons": ["lunch", "break", "training", "meeting", "after-call work"],
        "dispositions": [
            "interested",
            "callback",
            "sale",
            "not interested",
            "wrong number",
            "voicemail",
        ],
        "wrap_up": "optional",
        "corner": "bottom-right",
        "language": "en",
    }


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        (
            "06 12 34 56 78",
            {"kind": "number", "e164": "+33612345678", "display": "+33 6 12 34 56 78"},
        ),
        (
            "+44 20 7946 0958",
            {"kind": "number", "e164": "+442079460958", "display": "+44 20 7946 0958"},
        ),
        (
            "0033 (0)6.12.34.56.78",
            {"kind": "number", "e164": "+33612345678", "display": "+33 6 12 34 56 78"},
        ),
        ("1002", {"kind": "extension", "extension": "1002", "agent": "Bob Durand"}),
        ("555", {"kind": "extension", "extension": "555", "agent": None}),
    ],
)
async def test_numbers_are_normalised(env: Env, typed: str, expected: dict[str, object]) -> None:
    reply = await env.client.get(
        "/api/numbers/normalize", params={"number": typed}, headers=env.auth("bob")
    )
    assert reply.status_code == 200, reply.text
    assert reply.json() == expected


async def test_a_malformed_number_is_a_bad_request_not_echoed(env: Env) -> None:
    for typed in ("12ab<script>", "+999 123", "0612 34"):
        reply = await env.client.get(
            "/api/numbers/normalize", params={"number": typed}, headers=env.auth("bob")
        )
        assert reply.status_code == 400, typed
        error = reply.json()["error"]
        assert error["code"] == "bad_request"
        assert error["message"].startswith("not a phone number: ")
        assert "<script>" not in reply.text


async def test_openapi_describes_the_api(env: Env) -> None:
    spec = (await env.client.get("/api/openapi.json")).json()
    for path in (
        "/api/calls",
        "/api/calls/{call_id}/recording",
        "/api/contacts/search",
        "/api/agents/{agent}/state",
        "/healthz",
        "/readyz",
    ):
        assert path in spec["paths"], path
    docs = await env.client.get("/api/docs")
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()


async def test_server_listens_in_the_loop_and_stops(env: Env) -> None:
    app = create_app(env.services)
    async with HttpServer(app, host="127.0.0.1", port=0) as server:
        assert server.port != 0
        async with httpx.AsyncClient(base_url=server.url) as client:
            assert (await client.get("/healthz")).json() == {"status": "ok"}
            calls = await client.get("/api/calls", headers=env.auth("alice"))
            assert calls.status_code == 200
        # A second server on the same port: the bind fails, as an OSError.
        with pytest.raises(OSError, match="in use"):
            await HttpServer(app, host="127.0.0.1", port=server.port).start()
        port = server.port
    with (
        pytest.raises(ConnectionRefusedError),
        socket.create_connection(("127.0.0.1", port), timeout=2),
    ):
        pass
    await server.aclose()  # idempotent


async def test_accepted_connections_do_not_wait_for_delayed_acks(env: Env) -> None:
    """Every accepted connection has TCP_NODELAY, or small replies wait ~40 ms."""
    app = create_app(env.services)
    async with (
        HttpServer(app, host="127.0.0.1", port=0) as server,
        httpx.AsyncClient(base_url=server.url) as client,
    ):
        assert (await client.get("/healthz")).status_code == 200
        assert server._server is not None
        connections = server._server.server_state.connections
        assert connections, "the keep-alive connection is still open"
        for protocol in connections:
            sock = protocol.transport.get_extra_info("socket")
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1


async def test_a_forged_host_header_does_not_reach_the_policy(env: Env) -> None:
    reply = await env.client.get("/healthz", headers={"Host": "evil.example; script-src *"})
    csp = reply.headers["content-security-policy"]
    assert "evil" not in csp
    assert "connect-src 'self' ws://127.0.0.1:8765/" in csp
    v6 = await env.client.get("/healthz", headers={"Host": "[::1]:8080"})
    assert "connect-src 'self' ws://[::1]:8765/" in v6.headers["content-security-policy"]


async def test_a_client_sending_a_huge_body_reads_the_413_not_a_reset(env: Env) -> None:
    """10 MB sent in full over a real socket: the answer is a 413 the client can
    read (no connection reset midway), then the connection is closed cleanly."""
    app = create_app(env.services)
    async with HttpServer(app, host="127.0.0.1", port=0) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            body = b'{"text": "' + b"x" * 10_000_000 + b'"}'
            token = env.auth("alice")["Authorization"]
            head = (
                f"PUT /api/calls/{uuid.uuid4()}/note HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: {token}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
            async with asyncio.timeout(10):
                status = await reader.readline()
                assert status.startswith(b"HTTP/1.1 413"), status
                length = 0
                while (line := await reader.readline()) != b"\r\n":
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                answer = json.loads(await reader.readexactly(length))
                assert answer["error"]["code"] == "too_large"
                # Then the server closes the connection cleanly (no reset).
                assert await reader.read() == b""
        finally:
            writer.close()
