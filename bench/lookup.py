"""Caller lookup latency against a baseline in the same process.

Builds a SQLite database migrated with ``crm_store.upgrade`` holding ``--rows`` phone
rows (half on clients, half on leads), then times ``Store.lookup_caller`` for random
existing and missing numbers, and, as baselines in the same run, a bare indexed
``SELECT id FROM phones WHERE number_e164 = ?`` run from the event loop in one hand-off
to a thread (the baseline of the ratio), through the store's async engine, and through
the standard ``sqlite3`` module. The machine is shared and noisy, so the ratio to the
baseline is the figure to compare between runs, not the absolute times.

    .venv/bin/python bench/lookup.py [--rows 1000000] [--lookups 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import structlog
from sqlalchemy import text

from crm_store import Store, upgrade

# French mobile numbers 06 12 00 00 00 .. 06 19 99 99 99 are all valid, so every
# generated number survives normalisation on the lookup path.
_FIRST = 612_000_000
_SPAN = 8_000_000
_CHUNK = 50_000


def _e164(national: int) -> str:
    return f"+33{national}"


def _stamp() -> str:
    return datetime.now(UTC).replace(tzinfo=None).isoformat(sep=" ")


def build(path: Path, rows: int, rng: random.Random) -> tuple[list[int], list[int], float]:
    """Fill the database; return (existing numbers, missing numbers, seconds)."""
    started = time.perf_counter()
    picked = rng.sample(range(_SPAN), rows + rows // 10)
    existing, missing = picked[:rows], picked[rows:]
    clients = rows // 4  # two numbers per client: half of the phone rows
    leads = rows - 2 * clients
    now = _stamp()
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")
    db.execute("PRAGMA cache_size=-262144")
    db.execute("BEGIN")

    def chunks(items: Sequence[tuple[object, ...]]) -> Iterator[Sequence[tuple[object, ...]]]:
        for start in range(0, len(items), _CHUNK):
            yield items[start : start + _CHUNK]

    client_ids = [uuid.uuid4().hex for _ in range(clients)]
    lead_ids = [uuid.uuid4().hex for _ in range(leads)]
    for batch in chunks([(cid, f"Client {n}", now) for n, cid in enumerate(client_ids)]):
        db.executemany(
            "INSERT INTO clients (id, kind, first_name, display_name, emails, custom_fields,"
            " visibility, created_at, updated_at)"
            " VALUES (?, 'person', ?, ?2, '[]', '{}', 'shared', ?3, ?3)",
            batch,
        )
    for batch in chunks([(lid, f"Lead {n}", now) for n, lid in enumerate(lead_ids)]):
        db.executemany(
            "INSERT INTO leads (id, display_name, emails, source, status, created_at,"
            " updated_at) VALUES (?, ?, '[]', 'import', 'unprocessed', ?3, ?3)",
            batch,
        )
    phone_rows: list[tuple[object, ...]] = []
    numbers = iter(existing)
    for cid in client_ids:
        for kind in ("mobile", "work"):
            phone_rows.append((uuid.uuid4().hex, _e164(_FIRST + next(numbers)), kind, cid, None))
    for lid in lead_ids:
        phone_rows.append((uuid.uuid4().hex, _e164(_FIRST + next(numbers)), "mobile", None, lid))
    for batch in chunks(phone_rows):
        db.executemany(
            "INSERT INTO phones (id, number_e164, kind, client_id, lead_id) VALUES (?, ?, ?, ?, ?)",
            batch,
        )
    db.execute("COMMIT")
    db.execute("ANALYZE")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return existing, missing, time.perf_counter() - started


async def measure(fn: Callable[[str], Awaitable[object]], numbers: Sequence[str]) -> list[float]:
    """Sequential latencies in microseconds, after a short warm-up."""
    for number in numbers[:500]:
        await fn(number)
    samples = []
    for number in numbers:
        start = time.perf_counter_ns()
        await fn(number)
        samples.append((time.perf_counter_ns() - start) / 1000)
    return samples


def pct(samples: Sequence[float], q: float) -> float:
    return statistics.quantiles(samples, n=1000, method="inclusive")[int(q * 10) - 1]


async def run(rows: int, lookups: int, seed: int) -> dict[str, object]:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="sb-bench-") as tmp:
        path = Path(tmp) / "lookup.sqlite3"
        url = f"sqlite+aiosqlite:///{path}"
        await upgrade(url)
        existing, missing, build_s = build(path, rows, rng)
        hits = [_e164(_FIRST + n) for n in rng.sample(existing, lookups // 2)]
        misses = [_e164(_FIRST + n) for n in rng.sample(missing, lookups // 2)]
        loop = asyncio.get_running_loop()
        bare_sql = "SELECT id FROM phones WHERE number_e164 = ?"
        threaded = sqlite3.connect(path, check_same_thread=False)
        async with await Store.open(url, pool_size=2) as store:
            bare = text("SELECT id FROM phones WHERE number_e164 = :n")

            async def baseline_thread(number: str) -> object:
                # The floor for any lookup made from the event loop: one hand-off
                # to a thread that runs the bare indexed SELECT.
                return await loop.run_in_executor(
                    pool, lambda: threaded.execute(bare_sql, (number,)).fetchone()
                )

            async def baseline_aiosqlite(number: str) -> object:
                async with store.engine.connect() as conn:
                    return (await conn.execute(bare, {"n": number})).first()

            results: dict[str, dict[str, list[float]]] = {}
            with ThreadPoolExecutor(1) as pool:
                for label, numbers in (("existing", hits), ("missing", misses)):
                    results[label] = {
                        "lookup_caller": await measure(store.lookup_caller, numbers),
                        "baseline_thread": await measure(baseline_thread, numbers),
                        "baseline_aiosqlite": await measure(baseline_aiosqlite, numbers),
                    }
            for label, numbers in (("existing", hits), ("missing", misses)):
                found = sum([await store.lookup_caller(n) is not None for n in numbers[:200]])
                assert found == (200 if label == "existing" else 0), found
        threaded.close()
        plain = sqlite3.connect(path)

        async def plain_select(number: str) -> object:
            return plain.execute(
                "SELECT id FROM phones WHERE number_e164 = ?", (number,)
            ).fetchone()

        for label, numbers in (("existing", hits), ("missing", misses)):
            results[label]["baseline_sqlite3"] = await measure(plain_select, numbers)
        plain.close()

    report: dict[str, object] = {"rows": rows, "lookups": lookups, "build_seconds": build_s}
    for label, series in results.items():
        base = series["baseline_thread"]
        for name, samples in series.items():
            report[f"{label}/{name}"] = {
                "p50_us": round(pct(samples, 50), 1),
                "p99_us": round(pct(samples, 99), 1),
            }
        report[f"{label}/ratio_p50"] = round(pct(series["lookup_caller"], 50) / pct(base, 50), 2)
        report[f"{label}/ratio_p99"] = round(pct(series["lookup_caller"], 99) / pct(base, 99), 2)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="phone rows to create")
    parser.add_argument("--lookups", type=int, default=20_000, help="timed lookups per method")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    # Per-call log lines would dominate the timings; keep warnings only.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    report = asyncio.run(run(args.rows, args.lookups, args.seed))
    print(f"phones: {report['rows']:,}  build: {report['build_seconds']:.1f} s")
    print(f"{'numbers':<9} {'method':<17} {'p50 µs':>9} {'p99 µs':>9}")
    for key, value in report.items():
        if isinstance(value, dict):
            label, name = key.split("/")
            print(f"{label:<9} {name:<17} {value['p50_us']:>9} {value['p99_us']:>9}")
    for label in ("existing", "missing"):
        print(
            f"{label}: lookup/baseline ratio p50 {report[f'{label}/ratio_p50']}"
            f"  p99 {report[f'{label}/ratio_p99']}"
        )
    print(json.dumps(report))


if __name__ == "__main__":
    main()
