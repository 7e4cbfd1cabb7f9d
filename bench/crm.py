"""CRM workspace benchmarks.

``import``: 100,000 CSV rows imported as clients on SQLite (read, checked, written in
one transaction with their phones, search terms and history), next to a bare
``executemany`` of the same client and phone rows in the same run (see
``bench/_crm_import.py``). The machine is shared and noisy: the ratio to the bare
insert is the figure to compare between runs.

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

from bench._crm_import import bench_import


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="part", required=True)
    imp = sub.add_parser("import", help="import of CSV rows into clients")
    imp.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    if args.part == "import":
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
