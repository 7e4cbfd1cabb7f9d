"""The web tier's figures: INVITE to pop-up with conversations up, contact search at
100,000 contacts, and the weight of the widget's first load.

One lab (Kamailio, SIPp customers, Alice's phone 1001 that never answers, so offered
calls keep ringing), one ``switchboard run`` on the demo's configuration (free
ports) plus ``--conversations / 2`` bench agents (one agent line each, a worker
each: two conversations of two legs fill a worker's four call slots), its store
seeded (:mod:`lab.seed`) and then filled with ``--contacts`` clients and as many
leads, written in bulk straight into the SQLite file with their phones and search
terms (as the repositories index them), before the daemon starts.

- **INVITE → pop-up**: Alice is logged in in Debian's Chromium (headless, driven by
  Playwright) and available. Customers with new numbers call the reception line one
  after the other, each cancelling two seconds after ringing; Alice's phone rings
  and her page shows the pop-up. The INVITE is timed on the wire (the customer's
  authenticated INVITE reaching Kamailio, kernel timestamp on ``lo``, see
  ``bench/inbound.py``'s ``WireClock``; root needed); the pop-up when the page
  inserts it (``window.sbPopupShownAt[call_id]``, epoch ms, same clock), read by
  polling from outside the page (its policy refuses eval). The baseline of the same
  calls: a websocket client (the supervisor, an API token) in its own process
  (``bench/_web_events.py``, so that the browser's loop does not delay it) stamps
  ``time.time()`` when the gateway's ``call.ringing`` (leg ``agent``) arrives.
  Two phases: ``--idle-calls`` with nothing else up, then ``--calls`` with
  ``--conversations`` up. The conversations are click-to-calls
  (``call.originate`` over the websocket, as the supervisor, naming the agent): the
  agent's phone is a lab customer on a ``00…`` number (answers after 1 s, talks
  until hung up), the customer one who answers at once and talks until hung up, so
  they last the whole phase; the bench agents stay offline, so reception calls ring
  only Alice. The conversations up (bridged, not ended, as the websocket client
  saw them) are counted before and after the phase. Goal: p99 < 150 ms with 50 up.
- **Search**: ``--searches`` ``GET /api/contacts/search`` through a plain HTTP
  client (``httpx``, keep-alive, Alice's session cookie) in a thread of its own;
  a mix of query kinds (a last name, first name and a prefix of the last, a company
  word, a part of an e-mail, the last 4 and 3 digits of a phone, one letter),
  each kind drawn in turn from the data inserted. The baseline, interleaved with
  the searches on the same connection: ``GET /api/auth/me`` (session check and
  the round trip, no query). Goal: p99 < 50 ms.
- **First load**: the bytes of every response of a first visit to ``/widget``
  (document, scripts, styles, catalogue, fonts), logged in, cache empty.
  Goal: < 300 KB.

    .venv/bin/python bench/web.py [--conversations 50] [--calls 30] [--idle-calls 10]
        [--contacts 50000] [--searches 700] [--json out.json]

The defaults are the issue's sizes (100,000 contacts, 50 conversations); about
five minutes on two cores (81 s of it the bulk insert).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import signal
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from playwright.async_api import Browser, Page, async_playwright
from playwright.async_api import Error as PlaywrightError
from sqlalchemy import create_engine
from websockets.asyncio.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import inbound as inbound_bench
from crm_store import ClientKind, LeadSource, LeadStatus, PhoneKind, Visibility
from crm_store import _models as m
from crm_store._search import phone_terms, text_terms
from crm_store.ids import new_id
from lab import Behaviour, customer_number, free_port_block
from lab.__main__ import PHONES, demo_extensions
from lab.demo import EXAMPLE, demo_config, dump_toml, prepare_store
from lab.phones import PhoneSpec
from lab.runner import Lab
from lab.seed import RECEPTION, unknown_number

CHROMIUM = "/usr/bin/chromium"
EVENTS_SCRIPT = Path(__file__).with_name("_web_events.py")
CONVERSATIONS_PER_AGENT = 2  # 4 call slots per worker, one agent line per worker
BENCH_LINE_FIRST = 3001
_FIRST = [
    "Anna", "Louis", "Emma", "Jules", "Lina", "Noah", "Mila", "Adam", "Rose", "Paul",
    "Chloé", "Hugo", "Inès", "Léo", "Jade", "Gabriel", "Manon", "Arthur", "Zoé", "Nathan",
    "Camille", "Lucas", "Sarah", "Ethan", "Léa", "Tom", "Clara", "Raphaël", "Alice", "Victor",
    "Julia", "Sacha", "Eva", "Théo", "Louise", "Martin", "Nina", "Maxime", "Elsa", "Samuel",
]  # fmt: skip
_LAST = [
    "Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand",
    "Leroy", "Moreau", "Simon", "Laurent", "Lefebvre", "Michel", "Garcia", "David",
    "Bertrand", "Roux", "Vincent", "Fournier", "Morel", "Girard", "André", "Lefèvre",
    "Mercier", "Dupont", "Lambert", "Bonnet", "François", "Martinez", "Legrand", "Garnier",
    "Faure", "Rousseau", "Blanc", "Guérin", "Muller", "Henry", "Roussel", "Nicolas",
    "Perrin", "Morin", "Mathieu", "Clément", "Gauthier", "Dumont", "Lopez", "Fontaine",
    "Chevalier", "Robin", "Masson", "Sanchez", "Gérard", "Nguyen", "Boyer", "Denis",
    "Lemaire", "Duval", "Joly", "Gautier", "Roger", "Roche", "Roy", "Noël", "Meyer",
    "Lucas", "Meunier", "Jean", "Perez", "Marchand", "Dufour", "Blanchard", "Marie",
    "Barbier", "Brun", "Dumas", "Brunet", "Schmitt", "Leroux", "Colin",
]  # fmt: skip
_TRADES = [
    "Atelier", "Maison", "Garage", "Cabinet", "Studio", "Ferme", "Librairie", "Hôtel",
    "Boulangerie", "Pharmacie", "Menuiserie", "Imprimerie", "Transports", "Agence",
    "Clinique", "Brasserie", "Fromagerie", "Plomberie", "Électricité", "Conseil",
]  # fmt: skip
_DOMAINS = ["example.org", "mail.example", "post.example", "courriel.example"]
QUERY_KINDS = ("name", "two words", "company", "email part", "last 4 digits", "3 digits",
               "one letter")  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (nearest rank) of ``values``; NaN if empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _r(value: float, digits: int = 1) -> float | None:
    return None if math.isnan(value) else round(value, digits)


# --------------------------------------------------------------------------- bulk contacts


def _chunks(rows: list[dict[str, Any]], size: int = 5000) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def bulk_contacts(db: Path, count: int, rng: random.Random) -> tuple[float, dict[str, list[str]]]:
    """Insert ``count`` clients and ``count`` leads, each with a phone and its search
    terms, in one transaction; (seconds, queries by kind drawn from what was written).

    Names repeat as real ones do (40 first names, 80 last names), companies are a
    trade and a last name, e-mails ``first.last<n>@<domain>``, phones unique.
    """
    from crm_store._search import fold

    started = time.perf_counter()
    engine = create_engine(f"sqlite:///{db}")
    clients, leads, phones, terms = [], [], [], []
    queries: dict[str, list[str]] = {kind: [] for kind in QUERY_KINDS}
    stamp = datetime.now(UTC)
    every = max(1, (2 * count) // 500)
    for i in range(2 * count):
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        company = f"{rng.choice(_TRADES)} {rng.choice(_LAST)}" if rng.random() < 0.7 else None
        # Unique (7919 is prime to 10**8), with well spread last digits.
        number = f"+33{6 + i % 2}{(i * 7919) % 10**8:08d}"
        owner = new_id()
        name = f"{first} {last}"
        email = f"{fold(first)}.{fold(last)}{i % 1000}@{rng.choice(_DOMAINS)}".replace(" ", "")
        is_client = i < count
        row = {
            "id": owner,
            "first_name": first,
            "last_name": last,
            "company_name": company,
            "display_name": name,
            "emails": [email],
            "created_at": stamp,
            "updated_at": stamp,
        }
        if is_client:
            row |= {"kind": ClientKind.PERSON, "visibility": Visibility.SHARED, "custom_fields": {}}
            clients.append(row)
        else:
            row |= {"source": LeadSource.IMPORT, "status": LeadStatus.UNPROCESSED}
            leads.append(row)
        key = {"client_id": owner, "lead_id": None} if is_client else {
            "client_id": None, "lead_id": owner
        }  # fmt: skip
        phones.append({"id": new_id(), "number_e164": number, "kind": PhoneKind.MOBILE, **key})
        for term in sorted(text_terms((name, company), [email]) | phone_terms([number])):
            terms.append({"id": new_id(), "term": term, **key})
        if i % every == 0:
            queries["name"].append(last)
            queries["two words"].append(f"{first} {last[: rng.randint(2, len(last))]}")
            if company:
                queries["company"].append(company.split()[0])
            queries["email part"].append(email.split("@")[0][: rng.randint(4, 12)])
            queries["last 4 digits"].append(number[-4:])
            queries["3 digits"].append(number[-3:])
            queries["one letter"].append(rng.choice("abcdefghijlmnoprstv"))
    with engine.begin() as conn:
        for table, rows in ((m.clients, clients), (m.leads, leads), (m.phones, phones)):
            for chunk in _chunks(rows):
                conn.execute(table.insert(), chunk)
        for chunk in _chunks(terms, 20000):
            conn.execute(m.search_terms.insert(), chunk)
    engine.dispose()
    return time.perf_counter() - started, queries


# --------------------------------------------------------------------------- the daemon


def bench_agents(conversations: int) -> list[tuple[str, str, str]]:
    """(line, user, phone number) of each bench agent: one line, two conversations.

    The phone is a lab customer on a ``00…`` number: not of the ``+4930199`` plan, so
    SIPp answers it after 1 s and talks until hung up.
    """
    count = math.ceil(conversations / CONVERSATIONS_PER_AGENT)
    return [
        (str(BENCH_LINE_FIRST + a), f"bench{a:02d}", f"004930198700{a:03d}") for a in range(count)
    ]


def _config(lab: Lab, run_dir: Path, agents: Sequence[tuple[str, str, str]]) -> dict[str, Any]:
    data = demo_config(
        EXAMPLE,
        pbx_port=lab.pbx_port,
        run_dir=run_dir,
        domain=lab.domain,
        http_port=_free_port(),
        websocket_port=_free_port(),
    )
    for line, user, phone in agents:
        data["lines"].append({"extension": line, "secret": lab.extensions[line], "role": "agent"})
        data["agents"].append(
            {"name": f"Bench {user[5:]}", "extension": phone, "line": line, "user": user}
        )
    workers = len(data["lines"])  # one per line: none shared
    rtp = random.randrange(32000, 38000, 100)
    data["sip"].update(
        port_range_start=free_port_block(workers),
        max_workers=workers,
        rtp_port_range=[rtp, rtp + 40 * workers - 1],
    )
    data["logging"] = {"format": "json", "level": "warning"}
    data["inbound"].update(agent_ring_seconds=30, no_agent_timeout=40)
    return data


async def _ready(base: str, proc: asyncio.subprocess.Process, timeout: float = 90) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            raise RuntimeError("the daemon exited")
        try:
            reply = await asyncio.to_thread(urllib.request.urlopen, f"{base}/readyz", None, 2)
            if json.load(reply).get("status") == "ready":
                return
        except (OSError, ValueError):
            pass
        await asyncio.sleep(0.2)
    raise RuntimeError("the daemon was not ready in time")


async def _switchboard(config: Path, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "switchboard", "--config", str(config), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    if proc.returncode:
        raise RuntimeError(err.decode())
    return out.decode().strip()


# --------------------------------------------------------------------------- the websocket client


@dataclass
class _Seen:
    ringing_agent: dict[str, tuple[str, float]] = field(default_factory=dict)  # number ->
    bridged: set[str] = field(default_factory=set)
    ended: set[str] = field(default_factory=set)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def until(self, done: Callable[[], bool], timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while not done():
                self.changed.clear()
                await self.changed.wait()

    def up(self, ids: Sequence[str]) -> int:
        """How many of ``ids`` are bridged and not ended."""
        return sum(1 for i in ids if i in self.bridged and i not in self.ended)


class EventsClient:
    """The process of ``bench/_web_events.py``: started, read and reaped here.

    ``async with`` starts it, hands it the settings over its stdin (the token is not
    put on the command line) and waits for its ``{"ready": true}``; then a task reads
    its reports into :class:`_Seen`. On exit stdin is closed, which ends the client;
    it is waited for 10 s, then killed: it never outlives the run.
    """

    def __init__(self, url: str, token: str) -> None:
        self._url, self._token = url, token
        self.seen = _Seen()
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> EventsClient:
        try:
            self._process = process = await asyncio.create_subprocess_exec(
                sys.executable, str(EVENTS_SCRIPT),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            assert process.stdin is not None
            assert process.stdout is not None
            process.stdin.write(json.dumps({"url": self._url, "token": self._token}).encode())
            process.stdin.write(b"\n")
            await process.stdin.drain()
            async with asyncio.timeout(30):
                line = await process.stdout.readline()
            if not line or json.loads(line).get("ready") is not True:
                raise RuntimeError(f"the websocket client did not start: {line!r}")
            self._reader = asyncio.create_task(self._read(process.stdout), name="bench-events")
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _read(self, stdout: asyncio.StreamReader) -> None:
        seen = self.seen
        while line := await stdout.readline():
            event = json.loads(line)
            kind, call_id = event["type"], event["call_id"]
            if kind == "call.ringing" and event["leg"] == "agent" and event["from_number"]:
                seen.ringing_agent.setdefault(event["from_number"], (call_id, event["at"]))
            elif kind == "call.bridged":
                seen.bridged.add(call_id)
            elif kind == "call.ended":
                seen.ended.add(call_id)
            seen.changed.set()
        seen.changed.set()

    async def aclose(self) -> None:
        """Close the client and reap the process; idempotent, bounded."""
        process, self._process = self._process, None
        reader, self._reader = self._reader, None
        try:
            if process is not None:
                if process.stdin is not None and not process.stdin.is_closing():
                    process.stdin.close()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(10):
                        await process.wait()
        finally:
            if process is not None and process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
            if reader is not None:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader


# --------------------------------------------------------------------------- phases


async def _originate(
    ws_url: str, token: str, agents: Sequence[tuple[str, str, str]], count: int
) -> tuple[list[str], list[str]]:
    """``count`` click-to-calls, two per bench agent, as the supervisor; (call ids,
    errors). The connection is closed afterwards (it would fill with events)."""
    ids: list[str] = []
    errors: list[str] = []
    async with connect(ws_url, open_timeout=10, max_queue=None) as ws:
        await ws.send(json.dumps({"type": "auth", "token": token}))
        for c in range(count):
            _line, user, _phone = agents[c // CONVERSATIONS_PER_AGENT]
            to = customer_number(Behaviour.ANSWER, ring=0, talk=0, suffix=f"7{c:03d}")
            for attempt in range(20):
                request_id = f"o-{c}-{attempt}"
                await ws.send(json.dumps({"type": "command", "id": request_id,
                                          "name": "call.originate",
                                          "args": {"to": to, "agent": user}}))  # fmt: skip
                async with asyncio.timeout(20):
                    reply = json.loads(await ws.recv())
                    while reply.get("id") != request_id:
                        reply = json.loads(await ws.recv())
                if reply["type"] == "result":
                    ids.append(reply["data"]["call_id"])
                elif reply.get("code") == "rate_limited":
                    # The gateway's [websocket] commands_per_second: pace and try again.
                    await asyncio.sleep(0.5)
                    continue
                else:
                    errors.append(f"{user} -> {to}: {reply.get('code')} {reply.get('message')}")
                break
    return ids, errors


async def _popups(
    lab: Lab,
    page: Page,
    events: EventsClient,
    wire: Any,
    *,
    calls: int,
    serial: int,
    conversations: Sequence[str],
) -> dict[str, Any]:
    seen = events.seen
    popup_ms: list[float] = []
    ws_ms: list[float] = []
    up_before = seen.up(conversations)
    missing = 0
    for n in range(calls):
        number = unknown_number(serial + n)
        customer = await lab.customers.call(RECEPTION, number, cancel_after=2.0, timeout=30)
        try:
            await seen.until(lambda n=number: n in seen.ringing_agent, timeout=20)  # type: ignore[misc]
        except TimeoutError:
            missing += 1
            await customer.wait(timeout=30)
            continue
        call_id, ws_at = seen.ringing_agent[number]
        # Polled: the page's policy (no eval) refuses wait_for_function's strings.
        shown_at = math.nan
        async with asyncio.timeout(20):
            while math.isnan(shown_at):
                value = await page.evaluate(
                    "id => (window.sbPopupShownAt || {})[id] ?? null", call_id
                )
                if value is None:
                    await asyncio.sleep(0.05)
                else:
                    shown_at = float(value) / 1000
        pbx_in, _fork = wire.times(customer.call_id)
        if not math.isnan(pbx_in):
            popup_ms.append((shown_at - pbx_in) * 1000)
            ws_ms.append((ws_at - pbx_in) * 1000)
        await customer.wait(timeout=30)
        await page.wait_for_selector(
            f"[data-testid=popup][data-call-id='{call_id}']", state="detached", timeout=40_000
        )
    popup_p99, ws_p99 = pct(popup_ms, 0.99), pct(ws_ms, 0.99)
    return {
        "conversations_up_before": up_before,
        "conversations_up_after": seen.up(conversations),
        "calls": calls,
        "timed": len(popup_ms),
        "no_ringing": missing,
        "popup_p50_ms": _r(pct(popup_ms, 0.5)),
        "popup_p99_ms": _r(popup_p99),
        "ws_p50_ms": _r(pct(ws_ms, 0.5)),
        "ws_p99_ms": _r(ws_p99),
        "ratio_p50": _r(pct(popup_ms, 0.5) / pct(ws_ms, 0.5), 2),
        "ratio_p99": _r(popup_p99 / ws_p99, 2),
        "goal_met": popup_p99 < 150 and len(popup_ms) == calls,
    }


def _searches(
    base: str, username: str, password: str, queries: dict[str, list[str]], count: int
) -> dict[str, Any]:
    """Blocking, in a thread of its own: one keep-alive connection, Alice's session."""
    rng = random.Random(7)
    kinds = [k for k in QUERY_KINDS if queries[k]]
    samples: dict[str, list[float]] = {k: [] for k in kinds}
    baseline: list[float] = []
    found: dict[str, int] = dict.fromkeys(kinds, 0)
    with httpx.Client(base_url=base, timeout=10) as http:
        reply = http.post("/api/auth/login", json={"username": username, "password": password})
        reply.raise_for_status()
        for _ in range(20):  # warm the connection and the server's caches
            http.get("/api/auth/me").raise_for_status()
            http.get("/api/contacts/search", params={"q": rng.choice(queries[kinds[0]])})
        for n in range(count):
            kind = kinds[n % len(kinds)]
            q = rng.choice(queries[kind])
            started = time.perf_counter()
            reply = http.get("/api/contacts/search", params={"q": q})
            samples[kind].append((time.perf_counter() - started) * 1000)
            reply.raise_for_status()
            found[kind] += bool(reply.json()["results"])
            started = time.perf_counter()
            http.get("/api/auth/me").raise_for_status()
            baseline.append((time.perf_counter() - started) * 1000)
    every = [v for values in samples.values() for v in values]
    p50, p99 = pct(every, 0.5), pct(every, 0.99)
    return {
        "searches": len(every),
        "p50_ms": _r(p50, 2),
        "p99_ms": _r(p99, 2),
        "baseline_p50_ms": _r(pct(baseline, 0.5), 2),
        "baseline_p99_ms": _r(pct(baseline, 0.99), 2),
        "ratio_p50": _r(p50 / pct(baseline, 0.5), 2),
        "ratio_p99": _r(p99 / pct(baseline, 0.99), 2),
        "kinds": {
            k: {
                "searches": len(samples[k]),
                "with_results": found[k],
                "p50_ms": _r(pct(samples[k], 0.5), 2),
                "p99_ms": _r(pct(samples[k], 0.99), 2),
            }
            for k in kinds
        },
        "goal_met": p99 < 50,
    }


async def _first_load(browser: Browser, base: str, password: str) -> dict[str, Any]:
    context = await browser.new_context(base_url=base, viewport={"width": 1280, "height": 800})
    reply = await context.request.post(
        "/api/auth/login", data={"username": "bob", "password": password}
    )
    assert reply.ok, await reply.text()
    page = await context.new_page()
    sizes: dict[str, int] = {}

    async def on_response(response: Any) -> None:
        try:
            sizes[response.url] = len(await response.body())
        except PlaywrightError:  # a redirect has no body
            sizes.setdefault(response.url, 0)

    pending: list[asyncio.Task[None]] = []
    page.on("response", lambda r: pending.append(asyncio.ensure_future(on_response(r))))
    await page.goto("/widget", wait_until="networkidle")
    await page.wait_for_selector("body[data-ready=true]", timeout=20_000)
    await asyncio.gather(*pending)
    await context.close()
    total = sum(sizes.values())
    largest = sorted(sizes.items(), key=lambda kv: -kv[1])[:5]
    return {"resources": len(sizes), "bytes": total, "kb": round(total / 1024, 1),
            "largest": [{"path": u.removeprefix(base), "bytes": b} for u, b in largest],
            "goal_met": total < 300 * 1024}  # fmt: skip


async def _alice_page(browser: Browser, base: str, password: str) -> Page:
    context = await browser.new_context(base_url=base)
    reply = await context.request.post(
        "/api/auth/login", data={"username": "alice", "password": password}
    )
    assert reply.ok, await reply.text()
    csrf = (await reply.json())["csrf_token"]
    page = await context.new_page()
    await page.goto("/widget")
    await page.wait_for_selector("body[data-ready=true]", timeout=20_000)
    await page.wait_for_selector("[data-testid=conn-status][data-state=online]", timeout=20_000)
    # Through the API the page's button uses: the page's own button finds no agent
    # of the user in this version (widget.js reads a body attribute the page lacks).
    reply = await context.request.put(
        "/api/agents/alice/state", data={"state": "available"}, headers={"X-CSRF-Token": csrf}
    )
    assert reply.ok, await reply.text()
    assert (await reply.json())["state"] == "available"
    return page


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    run_dir = Path(tempfile.mkdtemp(prefix="bench-web-"))
    agents = bench_agents(args.conversations)
    phones: list[str | PhoneSpec] = [PhoneSpec(PHONES[0], mode="never")]
    extensions = demo_extensions() | {line: f"bench-{line}" for line, _, _ in agents}
    print(f"run directory {run_dir}; {os.cpu_count()} CPUs; {len(agents)} bench agents",
          flush=True)  # fmt: skip
    async with await Lab.start(run_dir / "lab", extensions=extensions, phones=phones) as lab:
        data = _config(lab, run_dir, agents)
        config = run_dir / "switchboard.toml"
        config.write_text(dump_toml(data))
        passwords = await prepare_store(config, data, run_dir=run_dir)
        build_s, queries = await asyncio.to_thread(
            bulk_contacts, run_dir / "switchboard.sqlite3", args.contacts, random.Random(1)
        )
        print(f"{2 * args.contacts:,} contacts inserted in {build_s:.1f} s", flush=True)
        token = await _switchboard(config, "users", "token", "samira")
        log = (run_dir / "daemon.log").open("wb")
        daemon = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "switchboard", "--config", str(config), "run",
            stdout=log, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        base = f"http://127.0.0.1:{data['http']['port']}"
        ws_url = f"ws://127.0.0.1:{data['websocket']['port']}"
        wire = inbound_bench.WireClock(lab.pbx_port)
        report: dict[str, Any] = {}
        try:
            await _ready(base, daemon)
            wire.start()
            search = await asyncio.to_thread(
                _searches, base, "alice", passwords["alice"], queries, args.searches
            )
            print(_search_text(search), flush=True)
            async with async_playwright() as p, EventsClient(ws_url, token) as events:
                browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True)
                first = await _first_load(browser, base, passwords["bob"])
                print(_first_load_text(first), flush=True)
                page = await _alice_page(browser, base, passwords["alice"])
                phases = [await _popups(lab, page, events, wire, calls=args.idle_calls,
                                        serial=5000, conversations=[])]  # fmt: skip
                print(_popup_text(phases[-1], 0), flush=True)
                ids, errors = await _originate(ws_url, token, agents, args.conversations)
                with contextlib.suppress(TimeoutError):
                    await events.seen.until(lambda: events.seen.up(ids) >= len(ids), timeout=90)
                print(f"conversations: {len(ids)} placed, {events.seen.up(ids)} bridged"
                      f"{'; errors: ' + '; '.join(errors[:3]) if errors else ''}",
                      flush=True)  # fmt: skip
                phases.append(await _popups(lab, page, events, wire, calls=args.calls,
                                            serial=6000, conversations=ids))  # fmt: skip
                phases[-1]["conversations_placed"] = len(ids)
                phases[-1]["originate_errors"] = errors
                print(_popup_text(phases[-1], args.conversations), flush=True)
                await browser.close()
            report = {"popup": phases, "search": search, "first_load": first}
        finally:
            wire.stop()
            if daemon.returncode is None:
                daemon.send_signal(signal.SIGTERM)
                try:
                    async with asyncio.timeout(60):
                        await daemon.wait()
                except TimeoutError:
                    daemon.kill()
                    await daemon.wait()
            log.close()
    return {
        "bench": "web",
        "contacts": 2 * args.contacts,
        "bulk_insert_s": round(build_s, 1),
        **report,
        "cpus": os.cpu_count(),
        "run_dir": str(run_dir),
        "id": str(uuid.uuid4())[:8],
    }


# --------------------------------------------------------------------------- output


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def _popup_text(phase: dict[str, Any], asked: int) -> str:
    up = f"{phase['conversations_up_before']}/{phase['conversations_up_after']}"
    return (
        f"INVITE -> pop-up, conversations up (before/after) {up} of {asked} asked, "
        f"{phase['timed']}/{phase['calls']} calls timed\n"
        f"  {'INVITE -> pop-up in the DOM':<36} p50 {phase['popup_p50_ms']} ms, "
        f"p99 {phase['popup_p99_ms']} ms  (p99 < 150 ms: {_met(phase['goal_met'])})\n"
        f"  {'INVITE -> websocket call.ringing':<36} p50 {phase['ws_p50_ms']} ms, "
        f"p99 {phase['ws_p99_ms']} ms  (baseline, same calls)\n"
        f"  ratio pop-up / websocket: p50 {phase['ratio_p50']}, p99 {phase['ratio_p99']}"
    )


def _search_text(search: dict[str, Any]) -> str:
    lines = [
        f"contact search, HTTP API, {search['searches']} searches: p50 {search['p50_ms']} ms, "
        f"p99 {search['p99_ms']} ms  (p99 < 50 ms: {_met(search['goal_met'])})",
        f"  baseline GET /api/auth/me: p50 {search['baseline_p50_ms']} ms, p99 "
        f"{search['baseline_p99_ms']} ms; ratio p50 {search['ratio_p50']}, p99 "
        f"{search['ratio_p99']}",
    ]
    for kind, k in search["kinds"].items():
        lines.append(
            f"  {kind:<14} p50 {k['p50_ms']:>6} ms  p99 {k['p99_ms']:>6} ms  "
            f"({k['with_results']}/{k['searches']} with results)"
        )
    return "\n".join(lines)


def _first_load_text(first: dict[str, Any]) -> str:
    largest = ", ".join(f"{x['path']} {x['bytes'] / 1024:.1f} KB" for x in first["largest"])
    return (
        f"first load of /widget: {first['kb']} KB in {first['resources']} responses "
        f"(< 300 KB: {_met(first['goal_met'])}); largest: {largest}"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--conversations", type=int, default=50, help="conversations up while timing"
    )
    parser.add_argument("--calls", type=int, default=30, help="inbound calls timed with them")
    parser.add_argument("--idle-calls", type=int, default=10, help="inbound calls timed before")
    parser.add_argument(
        "--contacts", type=int, default=50_000, help="clients added, and as many leads"
    )
    parser.add_argument("--searches", type=int, default=700)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    report = asyncio.run(bench(args))
    print(json.dumps(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
