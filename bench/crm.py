"""CRM workspace benchmarks.

``clients``: 100,000 clients on SQLite; pages of the clients' list (50 rows, each
kind of filter in turn) and contact searches through the API, p50 / p99 next to the
app's bare request path (see ``bench/_crm_clients.py``). Goal: p99 < 50 ms.

``import``: 100,000 CSV rows imported as clients on SQLite (read, checked, written in
one transaction with their phones, search terms and history), next to a bare
``executemany`` of the same client and phone rows in the same run (see
``bench/_crm_import.py``). The machine is shared and noisy: the ratio to the bare
insert is the figure to compare between runs.

    .venv/bin/python bench/crm.py clients [--clients 100000] [--samples 650]
    .venv/bin/python bench/crm.py import [--rows 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import sys
from pathlib import Path

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._crm_clients import bench_clients
from bench._crm_import import bench_import


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="part", required=True)
    cli = sub.add_parser("clients", help="the clients' list and search at scale")
    cli.add_argument("--clients", type=int, default=100_000)
    cli.add_argument("--samples", type=int, default=650)
    cli.add_argument("--keep", type=Path, help="build the store here and keep it (reused)")
    imp = sub.add_parser("import", help="import of CSV rows into clients")
    imp.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    if args.part == "clients":
        print(
            json.dumps(asyncio.run(bench_clients(args.clients, args.samples, args.keep)), indent=2)
        )
    elif args.part == "import":
        figures = asyncio.run(bench_import(args.rows))
        out = dataclasses.asdict(figures)
        out["ratio_to_bare"] = round(figures.total_s / figures.bare_s, 1)
        print(
            json.dumps(
                {k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}, indent=2
            )
        )


if __name__ == "__main__":
    main()
