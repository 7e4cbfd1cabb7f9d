"""Vendor the web tier's third-party front-end files from the npm registry.

Each package is fetched at the pinned version below from
``https://registry.npmjs.org``, its tarball checked against the sha512
``integrity`` the registry publishes for that version, and only the files the
pages use (plus the licence) extracted into ``web/static/vendor/<name>/``, with
a ``VERSIONS`` file saying what came from where. Nothing is loaded from the
internet at run time: the vendored files are committed.

    python scripts/vendor.py            # fetch and extract every package
    python scripts/vendor.py --check    # verify the VERSIONS files match the pins
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import shutil
import sys
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REGISTRY = "https://registry.npmjs.org"
VENDOR = Path(__file__).resolve().parents[1] / "web" / "static" / "vendor"


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    #: The directory under web/static/vendor/.
    target: str
    #: Paths inside the tarball's ``package/`` directory.
    files: tuple[str, ...]


PACKAGES = (
    Package("htmx.org", "2.0.11", "htmx", ("dist/htmx.min.js", "LICENSE")),
    Package(
        "swagger-ui-dist",
        "5.35.0",
        "swagger-ui",
        ("swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png", "LICENSE"),
    ),
)


def _get(url: str) -> bytes:
    if not url.startswith(REGISTRY + "/"):
        raise SystemExit(f"refusing to fetch outside the npm registry: {url}")
    with urllib.request.urlopen(url, timeout=60) as response:
        data: bytes = response.read()
    return data


def _metadata(pkg: Package) -> dict[str, str]:
    meta = json.loads(_get(f"{REGISTRY}/{pkg.name}/{pkg.version}"))
    dist = meta["dist"]
    return {"tarball": dist["tarball"], "integrity": dist["integrity"]}


def _verify(data: bytes, integrity: str) -> None:
    algo, _, expected = integrity.partition("-")
    if algo != "sha512":
        raise SystemExit(f"unexpected integrity algorithm {algo!r}")
    actual = base64.b64encode(hashlib.sha512(data).digest()).decode()
    if actual != expected:
        raise SystemExit(f"integrity mismatch: expected {expected}, got {actual}")


def vendor(pkg: Package) -> None:
    meta = _metadata(pkg)
    data = _get(meta["tarball"])
    _verify(data, meta["integrity"])
    out = VENDOR / pkg.target
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for path in pkg.files:
            member = tar.getmember(f"package/{path}")
            extracted = tar.extractfile(member)
            if extracted is None:
                raise SystemExit(f"{pkg.name}: {path} is not a file")
            (out / Path(path).name).write_bytes(extracted.read())
    (out / "VERSIONS").write_text(
        f"{pkg.name} {pkg.version}\n"
        f"tarball {meta['tarball']}\n"
        f"integrity {meta['integrity']}\n"
        f"files {' '.join(Path(p).name for p in pkg.files)}\n"
    )
    print(f"vendored {pkg.name} {pkg.version} into {out}")


def check() -> int:
    bad = 0
    for pkg in PACKAGES:
        versions = VENDOR / pkg.target / "VERSIONS"
        first = versions.read_text().splitlines()[0] if versions.is_file() else ""
        if first != f"{pkg.name} {pkg.version}":
            print(f"{pkg.target}: expected {pkg.name} {pkg.version}, found {first!r}")
            bad += 1
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only verify the VERSIONS files")
    args = parser.parse_args(argv)
    if args.check:
        return check()
    for pkg in PACKAGES:
        vendor(pkg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
