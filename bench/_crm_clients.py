"""The clients' list and search through the API, at 100,000 clients on SQLite.

The store is migrated, then filled in bulk straight into the SQLite file (clients
with a phone, tags, a responsible user, custom fields, search terms; one client in
twenty private; calls and open tasks for some), as the repositories write them.
The app is the daemon's (``web.app.create_app``) on that store, driven in-process
through ``httpx``'s ASGI transport as an agent with an API token (so every list
applies the visibility rule): no socket, the cost of the app and the store alone.

Each sample is one ``GET /api/clients`` page of 50 rows of a kind of filter, drawn
in turn (the page shows its rows with this request), then the count of every match
for the same filter (``total=true``, which the page asks for apart); the baseline,
interleaved, is ``GET /api/auth/me`` (the token check and the app's request path,
no query). Goal: p99 < 50 ms for the page.
"""

from __future__ import annotations

import json
import math
import random
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine

from config import load_config
from crm_store import ClientKind, CustomFieldType, PhoneKind, Role, Visibility, open_store, upgrade
from crm_store import _models as m
from crm_store._search import fold, phone_terms, text_terms
from crm_store.ids import new_id
from web._services import Services
from web.app import create_app
from ws_gateway import Projection

__all__ = ["bench_clients"]

_FIRST = ("Anne", "Bruno", "Chloé", "David", "Élise", "Fabien", "Gaëlle", "Hugo", "Inès",
          "Julien", "Karim", "Léa", "Marc", "Nadia", "Olivier", "Pauline", "Quentin",
          "Rose", "Sami", "Théo")  # fmt: skip
_LAST = ("Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand",
         "Leroy", "Moreau", "Simon", "Laurent", "Lefebvre", "Michel", "Garcia", "David",
         "Bertrand", "Roux", "Vincent", "Fournier", "Morel", "Girard", "André", "Mercier",
         "Dupont", "Lambert", "Bonnet", "François", "Martinez", "Legrand")  # fmt: skip
_TAGS = ("vip", "north", "south", "newsletter", "export", "retail", "wholesale", "partner")
_SEGMENTS = ("retail", "wholesale", "industry")
KINDS = (
    "all by name",
    "page 40",
    "my clients",
    "tag",
    "two tags",
    "choice field",
    "number range",
    "open tasks",
    "created range",
    "last contact range",
    "sorted by last contact",
    "search name",
    "search 4 digits",
)


def pct(values: Sequence[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _chunks(rows: list[dict[str, Any]], size: int = 5000) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def _bulk(db: Path, count: int, users: Sequence[Any], rng: random.Random) -> list[str]:
    """Insert ``count`` clients; some of their phone numbers (to search for)."""
    engine = create_engine(f"sqlite:///{db}")
    now = datetime.now(UTC)
    clients, phones, tags, terms, calls, tasks = [], [], [], [], [], []
    numbers: list[str] = []
    for i in range(count):
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        owner = new_id()
        number = f"+33{6 + i % 2}{(i * 7919) % 10**8:08d}"
        email = f"{fold(first)}.{fold(last)}{i % 1000}@example.com"
        created = now - timedelta(days=rng.randrange(0, 1000), minutes=rng.randrange(1440))
        responsible = rng.choice(users)
        fields: dict[str, Any] = {"segment": rng.choice(_SEGMENTS)}
        if rng.random() < 0.6:
            fields["contract_value"] = rng.randrange(100, 100_000)
        clients.append(
            {
                "id": owner,
                "kind": ClientKind.PERSON,
                "first_name": first,
                "last_name": last,
                "display_name": f"{first} {last}",
                "emails": [email],
                "custom_fields": fields,
                "responsible_user_id": responsible.id,
                "visibility": Visibility.PRIVATE if i % 20 == 0 else Visibility.SHARED,
                "created_at": created,
                "updated_at": created,
            }
        )
        phones.append(
            {"id": new_id(), "number_e164": number, "kind": PhoneKind.MOBILE, "client_id": owner}
        )
        for tag in rng.sample(_TAGS, rng.randrange(0, 3)):
            tags.append({"client_id": owner, "tag": tag})
        for term in sorted(text_terms((f"{first} {last}", None), [email]) | phone_terms([number])):
            terms.append({"id": new_id(), "term": term, "client_id": owner, "lead_id": None})
        if rng.random() < 0.5:
            at = now - timedelta(days=rng.randrange(0, 365), minutes=rng.randrange(1440))
            calls.append(
                {
                    "id": new_id(),
                    "direction": "outbound",
                    "from_number": "1001",
                    "to_number": number,
                    "client_id": owner,
                    "agent_user_id": responsible.id,
                    "created_at": at,
                    "ended_at": at + timedelta(minutes=3),
                    "end_reason": "completed",
                }
            )
        if rng.random() < 0.1:
            tasks.append(
                {
                    "id": new_id(),
                    "title": "Call back",
                    "kind": "call",
                    "client_id": owner,
                    "assignee_user_id": responsible.id,
                    "done": False,
                    "created_at": now,
                }
            )
        if i % max(1, count // 400) == 0:
            numbers.append(number)
    with engine.begin() as conn:
        for table, rows in (
            (m.clients, clients),
            (m.phones, phones),
            (m.client_tags, tags),
            (m.calls, calls),
            (m.tasks, tasks),
        ):
            for chunk in _chunks(rows):
                conn.execute(table.insert(), chunk)
        for chunk in _chunks(terms, 20000):
            conn.execute(m.search_terms.insert(), chunk)
    engine.dispose()
    return numbers


def _params(kind: str, rng: random.Random, me: str, numbers: Sequence[str]) -> dict[str, Any]:
    day = datetime.now(UTC).date()
    if kind == "all by name":
        return {}
    if kind == "page 40":
        return {"page": 40}
    if kind == "my clients":
        return {"scope": "my"}
    if kind == "tag":
        return {"tag": rng.choice(_TAGS)}
    if kind == "two tags":
        return {"tag": rng.sample(_TAGS, 2)}
    if kind == "choice field":
        return {"field": f"segment:eq:{rng.choice(_SEGMENTS)}", "scope": "my"}
    if kind == "number range":
        low = rng.randrange(100, 90_000)
        return {"field": [f"contract_value:ge:{low}", f"contract_value:le:{low + 5000}"]}
    if kind == "open tasks":
        return {"open_tasks": "true"}
    if kind == "created range":
        start = day - timedelta(days=rng.randrange(30, 900))
        return {
            "created_from": start.isoformat(),
            "created_until": (start + timedelta(days=30)).isoformat(),
        }
    if kind == "last contact range":
        start = day - timedelta(days=rng.randrange(7, 300))
        return {
            "contact_from": start.isoformat(),
            "contact_until": (start + timedelta(days=7)).isoformat(),
        }
    if kind == "sorted by last contact":
        return {"sort": "-last_contact", "scope": "my"}
    if kind == "search name":
        return {"q": f"{rng.choice(_FIRST)} {rng.choice(_LAST)[:3]}"}
    return {"q": rng.choice(numbers)[-4:]}


async def bench_clients(count: int, samples: int, keep: Path | None = None) -> dict[str, Any]:
    """``keep``: a directory to build the store in and keep (reused when it holds
    one: the fill is skipped)."""
    rng = random.Random(12)
    with tempfile.TemporaryDirectory(prefix="sb-bench-clients-") as tmp:
        root = keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        db = root / "crm.sqlite3"
        url = f"sqlite+aiosqlite:///{db}"
        reuse = db.exists()
        await upgrade(url)
        (root / "rec").mkdir(exist_ok=True)
        cfg = root / "switchboard.toml"
        cfg.write_text(
            '[site]\nid = "bench"\ndefault_region = "FR"\n\n'
            '[pbx]\nhost = "127.0.0.1"\ndomain = "bench.lab"\n\n'
            '[[lines]]\nextension = "2001"\nsecret = "s3cret-2001"\nrole = "agent"\n\n'
            '[[agents]]\nname = "Alice"\nextension = "1001"\nline = "2001"\nuser = "alice"\n\n'
            f'[recording]\ndirectory = "{root / "rec"}"\n'
        )
        config = load_config(cfg)
        fill_s = 0.0
        async with open_store(url, default_region="FR") as store:
            if reuse:
                alice = await store.users.by_username("alice")
                assert alice is not None
                _, token = await store.users.issue_token(alice.id, label="bench")
                numbers = json.loads((root / "numbers.json").read_text())
            else:
                users = [await store.users.add("alice", "Alice", Role.AGENT)]
                users += [
                    await store.users.add(f"agent{n}", f"Agent {n}", Role.AGENT) for n in range(9)
                ]
                _, token = await store.users.issue_token(users[0].id, label="bench")
                await store.definitions.define_field(
                    "segment", "Segment", CustomFieldType.CHOICE, choices=_SEGMENTS
                )
                await store.definitions.define_field(
                    "contract_value", "Contract value", CustomFieldType.NUMBER
                )
                started = time.perf_counter()
                numbers = _bulk(db, count, users, rng)
                fill_s = time.perf_counter() - started
                (root / "numbers.json").write_text(json.dumps(numbers))
        async with open_store(url, default_region="FR") as store:
            services = Services(
                store=store,
                config=lambda: config,
                agents=None,
                commands=_no_commands,
                calls=Projection(),
                ready=lambda: True,
                recordings=root / "rec",
            )
            app = create_app(services)
            headers = {"Authorization": f"Bearer {token}"}
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://bench", headers=headers
            ) as http:
                for kind in KINDS:  # warm every path once
                    (
                        await http.get("/api/clients", params=_params(kind, rng, "", numbers))
                    ).raise_for_status()
                times: dict[str, list[float]] = {k: [] for k in KINDS}
                totals: dict[str, list[int]] = {k: [] for k in KINDS}
                counts: dict[str, list[float]] = {k: [] for k in KINDS}
                baseline: list[float] = []
                search: list[float] = []
                for n in range(samples):
                    kind = KINDS[n % len(KINDS)]
                    params = _params(kind, rng, "", numbers)
                    t0 = time.perf_counter()
                    reply = await http.get("/api/clients", params=params)
                    times[kind].append((time.perf_counter() - t0) * 1000)
                    reply.raise_for_status()
                    t0 = time.perf_counter()
                    counted = await http.get(
                        "/api/clients", params={**params, "per_page": 1, "total": "true"}
                    )
                    counts[kind].append((time.perf_counter() - t0) * 1000)
                    counted.raise_for_status()
                    totals[kind].append(counted.json()["total"])
                    t0 = time.perf_counter()
                    (await http.get("/api/auth/me")).raise_for_status()
                    baseline.append((time.perf_counter() - t0) * 1000)
                    if n % 2 == 0:
                        q = rng.choice(numbers)[-4:] if n % 4 else rng.choice(_LAST)
                        t0 = time.perf_counter()
                        (await http.get("/api/contacts/search", params={"q": q})).raise_for_status()
                        search.append((time.perf_counter() - t0) * 1000)
    every = [v for values in times.values() for v in values]
    every_count = [v for values in counts.values() for v in values]
    p99 = pct(every, 0.99)
    return {
        "clients": count,
        "fill_s": round(fill_s, 1),
        "list_pages": len(every),
        "p50_ms": round(pct(every, 0.5), 2),
        "p99_ms": round(p99, 2),
        "baseline_p50_ms": round(pct(baseline, 0.5), 2),
        "baseline_p99_ms": round(pct(baseline, 0.99), 2),
        "count_p50_ms": round(pct(every_count, 0.5), 2),
        "count_p99_ms": round(pct(every_count, 0.99), 2),
        "search_p50_ms": round(pct(search, 0.5), 2),
        "search_p99_ms": round(pct(search, 0.99), 2),
        "goal_met": p99 < 50,
        "kinds": {
            k: {
                "p50_ms": round(pct(times[k], 0.5), 2),
                "p99_ms": round(pct(times[k], 0.99), 2),
                "count_p50_ms": round(pct(counts[k], 0.5), 2),
                "count_p99_ms": round(pct(counts[k], 0.99), 2),
                "median_total": int(pct([float(t) for t in totals[k]], 0.5)),
            }
            for k in KINDS
        },
    }


async def _no_commands(*args: Any) -> dict[str, Any]:
    raise RuntimeError("no telephony in this bench")
