"""Run inside a private network namespace: load a ruleset, then report which
sources reach which UDP/TCP ports on 127.0.0.1.

Usage: python -m tests.sip.firewall_probe RULESET PROTO:PORT...  (one JSON line out:
{"udp:25060": ["127.0.0.1"], ...}). Sources tried: 127.0.0.1, 127.0.0.2, ::1.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys

SOURCES = ("127.0.0.1", "127.0.0.2", "::1")


def _reached(proto: str, port: int, source: str) -> bool:
    family = socket.AF_INET6 if ":" in source else socket.AF_INET
    target = "::1" if family == socket.AF_INET6 else "127.0.0.1"
    kind = socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM
    with socket.socket(family, kind) as server, socket.socket(family, kind) as client:
        server.bind((target, port))
        server.settimeout(0.3)  # a dropped packet never comes: this bounds the wait
        client.bind((source, 0))
        client.settimeout(0.3)
        if proto == "udp":
            client.sendto(b"probe", (target, port))
            try:
                server.recvfrom(16)
            except TimeoutError:
                return False
            return True
        server.listen()
        try:
            client.connect((target, port))
        except (TimeoutError, OSError):
            return False
        return True


def main() -> int:
    ruleset, *targets = sys.argv[1:]
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(["nft", "-f", ruleset], check=True)
    # Loading twice must work: the ruleset replaces its own table.
    subprocess.run(["nft", "-f", ruleset], check=True)
    result = {}
    for target in targets:
        proto, port = target.split(":")
        result[target] = [s for s in SOURCES if _reached(proto, int(port), s)]
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
