"""Planning workers from the configuration, and the restart backoff; no processes."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import pytest

from bus import Bus
from config import Config, ConfigError, parse_config
from crm_store import Store
from sip.exceptions import PoolConfigError, UnknownLine
from sip.pool import Backoff, SipPool, plan_workers

BASE = """\
[site]
id = "paris"
[pbx]
host = "192.0.2.10"
domain = "pbx.example.org"
[sip]
port_range_start = 25060
max_workers = {max_workers}
accounts_per_worker = {accounts}
calls_per_worker = 4
rtp_port_range = [30000, 30999]
"""


def _config(
    tmp_path: Path,
    lines: dict[str, str],
    *,
    max_workers: int = 16,
    accounts: int = 8,
    extra: str = "",
) -> Config:
    text = BASE.format(max_workers=max_workers, accounts=accounts) + extra
    for ext, role in lines.items():
        text += f'[[lines]]\nextension = "{ext}"\nrole = "{role}"\nsecret = "s-{ext}"\n'
    agent_lines = [ext for ext, role in lines.items() if role == "agent"]
    for n, ext in enumerate(agent_lines):
        text += f'[[agents]]\nname = "Agent {n}"\nextension = "10{n:02d}"\nline = "{ext}"\n'
    return parse_config(text, base_dir=tmp_path)


def test_one_worker_per_line_with_its_own_ports(tmp_path: Path) -> None:
    config = _config(
        tmp_path, {"2001": "agent", "2002": "agent", "2100": "reception", "2200": "dialer"}
    )
    plans = plan_workers(config)
    assert [p.worker_id for p in plans] == [
        "paris/agent-2001",
        "paris/agent-2002",
        "paris/reception-2100",
        "paris/dialer-2200",
    ]
    assert [p.settings.sip_port for p in plans] == [25060, 25061, 25062, 25063]
    starts = [p.settings.rtp_port_start for p in plans]
    assert starts == [30000, 30062, 30124, 30186]  # 1000 ports / 16 workers = 62 each
    assert all(p.settings.rtp_port_count == 62 for p in plans)
    first = plans[0]
    assert first.agent is not None
    assert first.agent.line == "2001"
    assert plans[2].agent is None
    assert first.settings.allowed_sources == ("192.0.2.10",)
    assert (first.settings.max_calls, first.settings.max_accounts) == (4, 8)
    assert first.settings.domain == "pbx.example.org"


def test_reception_and_dialer_lines_share_workers_when_short(tmp_path: Path) -> None:
    lines = {"2001": "agent", "2002": "agent"}
    lines |= {f"22{n:02d}": "dialer" for n in range(9)}
    config = _config(tmp_path, lines, max_workers=4)
    plans = plan_workers(config)
    assert [len(p.lines) for p in plans] == [1, 1, 7, 2]  # 7 = 8 accounts - the worker's own
    assert [p.worker_id for p in plans][2:] == ["paris/dialer-2200", "paris/dialer-2207"]
    # Without agents, reception lines share workers the same way.
    config = _config(tmp_path, {f"21{n:02d}": "reception" for n in range(9)}, max_workers=2)
    assert [len(p.lines) for p in plan_workers(config)] == [7, 2]


def test_every_line_is_registered_by_its_own_worker_only(tmp_path: Path) -> None:
    # One registration per line: whatever the PBX (a forking proxy or a B2BUA), a
    # call to a reception line reaches Switchboard as one INVITE.
    lines = {
        "2001": "agent",
        "2002": "agent",
        "2100": "reception",
        "2101": "reception",
        "2200": "dialer",
    }
    config = _config(tmp_path, lines)
    plans = plan_workers(config)
    registered = [line.extension for plan in plans for line in plan.registered_lines]
    assert sorted(registered) == sorted(lines)
    pool = SipPool(config, bus=Bus("paris"), store=cast(Store, None))
    assert pool.worker_for_line("2100") == "paris/reception-2100"
    assert pool.worker_for_line("2001") == "paris/agent-2001"
    with pytest.raises(UnknownLine):
        pool.worker_for_line("9999")
    # Many reception lines need no room on the agent workers any more.
    many = {"2001": "agent"} | {f"21{n:02d}": "reception" for n in range(6)}
    assert len(plan_workers(_config(tmp_path, many, accounts=2))) == 7


def test_too_many_lines_for_the_workers_is_refused(tmp_path: Path) -> None:
    config = _config(tmp_path, {"2001": "agent", "2002": "agent", "2003": "agent"}, max_workers=2)
    with pytest.raises(PoolConfigError, match="3 workers are needed"):
        plan_workers(config)


def test_tls_is_refused_by_the_configuration_before_any_worker_is_planned(
    tmp_path: Path,
) -> None:
    # The workers do not speak TLS yet: the configuration says so, with its key path,
    # so that check-config refuses it rather than the daemon exiting at start.
    text = BASE.format(max_workers=16, accounts=8).replace(
        'domain = "pbx.example.org"', 'domain = "pbx.example.org"\ntransport = "tls"'
    )
    with pytest.raises(ConfigError) as refused:
        parse_config(text, base_dir=tmp_path)
    (issue,) = refused.value.issues
    assert "pbx.transport: tls is not supported by the SIP workers yet" in issue.format()


def test_plan_carries_the_realm_defaulting_to_the_domain(tmp_path: Path) -> None:
    (plan,) = plan_workers(_config(tmp_path, {"2001": "agent"}))
    assert plan.settings.realm is None  # the worker uses the domain
    assert plan.settings.domain == "pbx.example.org"
    text = BASE.format(max_workers=16, accounts=8).replace(
        'domain = "pbx.example.org"', 'domain = "pbx.example.org"\nrealm = "asterisk"'
    )
    text += '[[lines]]\nextension = "2001"\nrole = "reception"\nsecret = "s"\n'
    (plan,) = plan_workers(parse_config(text, base_dir=tmp_path))
    assert plan.settings.realm == "asterisk"
    assert plan.settings.pbx_transport == "udp"


def test_plan_carries_server_media_settings_with_the_bridge_rate_following_the_codecs(
    tmp_path: Path,
) -> None:
    (plan,) = plan_workers(_config(tmp_path, {"2001": "agent"}))
    s = plan.settings
    # Defaults: no echo canceller, no silence detection, the small resampling filter,
    # and G.711 preferred, so an 8 kHz bridge.
    assert (s.echo_tail_ms, s.vad, s.resample_quality, s.jitter_buffer_max_ms) == (0, False, 4, -1)
    assert (s.clock_rate, s.bridge_rate) == (0, 8000)
    wide = 'codecs = ["G722", "PCMA"]\n'
    (plan,) = plan_workers(_config(tmp_path, {"2001": "agent"}, extra=wide))
    assert plan.settings.bridge_rate == 16000
    fixed = (
        "bridge_clock_rate = 16000\necho_canceller_tail = 128\nvad = true\n"
        "resample_quality = 10\njitter_buffer_max = 200\n"
    )
    (plan,) = plan_workers(_config(tmp_path, {"2001": "agent"}, extra=fixed))
    s = plan.settings
    assert (s.bridge_rate, s.echo_tail_ms, s.vad) == (16000, 128, True)
    assert (s.resample_quality, s.jitter_buffer_max_ms) == (10, 200)


def test_backoff_starts_immediate_doubles_caps_and_resets() -> None:
    backoff = Backoff(maximum=5.0, stable_after=60.0)
    backoff.started(0.0)
    delays = [backoff.next_delay(1.0 + n) for n in range(6)]
    assert delays == [0.0, 1.0, 2.0, 4.0, 5.0, 5.0]
    backoff.started(100.0)
    assert backoff.next_delay(200.0) == 0.0  # up long enough: start over
    backoff.started(200.0)
    assert backoff.next_delay(201.0) == 1.0
