"""``switchboard firewall``: the nftables ruleset and the systemd drop-in it prints.

The ruleset is checked by nft itself (``nft -c``) and then loaded in a private network
namespace (``unshare -rn``: a user namespace, no privilege needed on the host), where
packets from the allowed source and from a stranger are sent to the SIP and RTP
ports: only the allowed source gets through.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from config import Config, parse_config
from sip.firewall import nftables_ruleset, systemd_dropin
from tests.switchboard.conftest import run_cli, write_config

REPO = Path(__file__).resolve().parents[2]
NFT = shutil.which("nft") or "/usr/sbin/nft"

CONFIG = """\
[site]
id = "fw"
default_region = "FR"

[pbx]
host = "127.0.0.1"
transport = "{transport}"
domain = "pbx.example.org"
allowed_sources = [{sources}]

[sip]
port_range_start = 25060
max_workers = 4
rtp_port_range = [30000, 30399]

[[lines]]
extension = "2001"
secret = "s"
role = "agent"

[store]
url = "sqlite+aiosqlite:///{tmp}/s.sqlite3"
"""


def _config(tmp_path: Path, *, sources: str, transport: str = "udp") -> Config:
    text = CONFIG.format(transport=transport, sources=sources, tmp=tmp_path)
    return parse_config(text, base_dir=tmp_path)


def _unshare(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["unshare", "-rn", *argv], capture_output=True, text=True, timeout=60, check=False
    )


def _nft_check(ruleset: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """``nft -c -f``: parsed and checked against the kernel, nothing changed. It needs
    CAP_NET_ADMIN: root has it; anyone else gets it in a user namespace."""
    path = tmp_path / "switchboard.nft"
    path.write_text(ruleset)
    argv = [NFT, "-c", "-f", str(path)]
    if os.geteuid() == 0:
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    return _unshare(*argv)


def test_ruleset_guards_the_sip_and_rtp_ports_of_the_config(tmp_path: Path) -> None:
    config = _config(tmp_path, sources='"192.0.2.10", "198.51.100.0/24", "2001:db8::/32"')
    ruleset = nftables_ruleset(config, source="/etc/switchboard/switchboard.toml")
    assert "from /etc/switchboard/switchboard.toml" in ruleset
    assert "elements = { 192.0.2.10, 198.51.100.0/24 }" in ruleset
    assert "elements = { 2001:db8::/32 }" in ruleset
    assert "udp dport 25060-25063 ip saddr @sip_sources_v4 accept" in ruleset
    assert "udp dport 25060-25063 counter drop" in ruleset
    assert "udp dport 30000-30399 ip saddr @rtp_sources_v4 accept" in ruleset
    assert "udp dport 30000-30399 counter drop" in ruleset
    assert "tcp dport" not in ruleset  # only the configured transport
    assert "policy accept;" in ruleset  # other traffic is the host firewall's business
    checked = _nft_check(ruleset, tmp_path)
    assert checked.returncode == 0, checked.stderr


def test_ruleset_for_a_tcp_pbx_and_separate_media_sources(tmp_path: Path) -> None:
    config = _config(
        tmp_path, sources='"10.0.0.0/8", "10.1.0.0/16", "::ffff:10.2.0.1"', transport="tcp"
    )
    ruleset = nftables_ruleset(config, rtp_sources=["203.0.113.0/24"])
    assert "tcp dport 25060-25063 ip saddr @sip_sources_v4 accept" in ruleset
    assert "udp dport 25060" not in ruleset
    # Overlapping networks are merged by nft; the IPv4-mapped address is IPv4.
    assert "elements = { 10.0.0.0/8, 10.1.0.0/16, 10.2.0.1 }" in ruleset
    rtp_set = ruleset.split("set rtp_sources_v4 {", 1)[1].split("}", 1)[0]
    assert "203.0.113.0/24" in rtp_set
    assert "10.0.0.0/8" not in rtp_set
    checked = _nft_check(ruleset, tmp_path)
    assert checked.returncode == 0, checked.stderr


def test_only_the_pbx_gets_through_the_loaded_ruleset(tmp_path: Path) -> None:
    config = _config(tmp_path, sources='"127.0.0.1"')
    path = tmp_path / "switchboard.nft"
    path.write_text(nftables_ruleset(config))
    probe = _unshare(
        sys.executable,
        "-m",
        "tests.sip.firewall_probe",
        str(path),
        "udp:25060",
        "udp:25063",
        "udp:30100",
        "tcp:25061",
        "udp:25064",
    )
    assert probe.returncode == 0, probe.stderr
    reached = json.loads(probe.stdout)
    assert reached["udp:25060"] == ["127.0.0.1"]
    assert reached["udp:25063"] == ["127.0.0.1"]
    assert reached["udp:30100"] == ["127.0.0.1"]
    # Not SIP ports of this config: left alone.
    assert reached["tcp:25061"] == ["127.0.0.1", "127.0.0.2", "::1"]
    assert reached["udp:25064"] == ["127.0.0.1", "127.0.0.2", "::1"]


def test_systemd_dropin_allows_localhost_the_pbx_and_the_given_peers(tmp_path: Path) -> None:
    config = _config(tmp_path, sources='"192.0.2.10", "2001:db8::1"')
    dropin = systemd_dropin(config, allow=["10.20.0.0/16"])
    lines = dropin.splitlines()
    assert "[Service]" in lines
    assert lines[lines.index("[Service]") + 1 :] == [
        "IPAddressDeny=any",
        "IPAddressAllow=localhost",
        "IPAddressAllow=192.0.2.10",
        "IPAddressAllow=2001:db8::1",
        "IPAddressAllow=10.20.0.0/16",
    ]
    assert "every socket of the service" in dropin  # the caveat travels with it


def test_firewall_command_prints_the_ruleset_of_the_config_file(tmp_path: Path) -> None:
    # The default first SIP port, written out: write_config picks a free one otherwise.
    cfg = write_config(tmp_path / "switchboard.toml", sip={"port_range_start": 25060})
    result = run_cli("--config", str(cfg), "firewall")
    assert result.returncode == 0, result.stderr
    assert f"from {cfg}" in result.stdout
    assert "udp dport 25060-25075 ip saddr @sip_sources_v4 accept" in result.stdout
    checked = _nft_check(result.stdout, tmp_path)
    assert checked.returncode == 0, checked.stderr

    systemd = run_cli(
        "--config", str(cfg), "firewall", "--format", "systemd", "--allow", "10.0.0.0/8"
    )
    assert systemd.returncode == 0, systemd.stderr
    assert "IPAddressAllow=10.0.0.0/8" in systemd.stdout

    bad = run_cli("--config", str(cfg), "firewall", "--rtp-source", "not-a-network")
    assert bad.returncode == 2
    assert "'not-a-network' is not an IP address or network" in bad.stderr


@pytest.fixture(autouse=True)
def _tools() -> None:
    """nft (Debian nftables, in the Makefile's packages) and unshare are required."""
    assert Path(NFT).exists(), "nft is missing: make system-deps installs nftables"
    assert shutil.which("unshare"), "unshare (util-linux) is missing"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_dropin_verifies_with_the_shipped_unit(tmp_path: Path) -> None:
    config = _config(tmp_path, sources='"192.0.2.10", "2001:db8::/32"')
    unit = tmp_path / "switchboard.service"
    unit.write_text(
        (REPO / "systemd" / "switchboard.service")
        .read_text()
        .replace("/opt/switchboard/venv/bin/switchboard", sys.executable)
    )
    dropin = tmp_path / "switchboard.service.d" / "ip-allow.conf"
    dropin.parent.mkdir()
    dropin.write_text(systemd_dropin(config, allow=["10.0.0.0/8", "fd00::/8"]))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    # systemd names the drop-in when it ignores one of its lines.
    assert "ip-allow.conf" not in result.stderr, result.stderr
