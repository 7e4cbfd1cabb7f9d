from __future__ import annotations

from pathlib import Path

import pytest

from config import Config, ConfigError, ConfigIssue, Secret, load_config, parse_config

from .conftest import MINIMAL, WriteConfig

LINE = """
[[lines]]
extension = "{ext}"
secret = "pw-{ext}"
role = "{role}"
"""
AGENT = """
[[agents]]
name = "{name}"
extension = "{phone}"
line = "{line}"
"""


def issues_of(text: str, **kwargs: object) -> list[tuple[int | None, str, str]]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source="switchboard.toml", **kwargs)  # type: ignore[arg-type]
    return [(issue.line, issue.path, issue.message) for issue in caught.value.issues]


def test_five_mistakes_reported_together(write_config: WriteConfig) -> None:
    path: Path = write_config(
        """\
[site]
timezone = "Mars/Olympus_Mons"

[pbx]
host = "127.0.0.1"
domain = "switchboard.lab"
prot = 5060

[[lines]]
extension = "2001"
secret = "pw-2001"
role = "agent"

[[lines]]
extension = "2001"
secret = "pw-2001-again"
role = "reception"

[[agents]]
name = "Alice"
extension = "1001"
line = "2009"

[websocket]
port = "8765"
"""
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})

    source = str(path)
    assert caught.value.issues == (
        ConfigIssue("site.timezone", "must be an IANA time zone, like Europe/Paris", 2, source),
        ConfigIssue("pbx.prot", "unknown key", 7, source),
        ConfigIssue("lines[1].extension", "duplicate of lines[0]", 15, source),
        ConfigIssue("agents[0].line", "no line 2009 in [[lines]]", 22, source),
        ConfigIssue("websocket.port", "must be an integer", 25, source),
    )
    assert str(caught.value).splitlines() == [
        f"{source}:2: site.timezone: must be an IANA time zone, like Europe/Paris",
        f"{source}:7: pbx.prot: unknown key",
        f"{source}:15: lines[1].extension: duplicate of lines[0]",
        f"{source}:22: agents[0].line: no line 2009 in [[lines]]",
        f"{source}:25: websocket.port: must be an integer",
    ]


def test_toml_syntax_error_is_one_issue_with_its_line() -> None:
    text = MINIMAL + "\n[sip]\nmax_workers = = 3\n"

    assert issues_of(text) == [
        (6, "", "toml syntax: invalid value (column 15)"),
    ]


def test_issue_format_leaves_out_unknown_parts() -> None:
    assert ConfigIssue("a.b", "required", 3, "f.toml").format() == "f.toml:3: a.b: required"
    assert ConfigIssue("a.b", "required", None, "f.toml").format() == "f.toml: a.b: required"
    assert ConfigIssue("", "toml syntax: x", 9, "f.toml").format() == "f.toml:9: toml syntax: x"


def test_unreadable_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "missing.toml")

    assert [issue.message for issue in caught.value.issues] == [
        "cannot read: no such file or directory"
    ]


def test_unknown_keys_at_every_level() -> None:
    text = "colour = 1\n" + MINIMAL + "[logging]\nlevle = 'debug'\n"

    assert issues_of(text) == [
        (1, "colour", "unknown key"),
        (6, "logging.levle", "unknown key"),
    ]


def test_missing_pbx_table_is_required() -> None:
    assert issues_of("") == [(None, "pbx", "required: add a [pbx] table")]


def test_missing_required_key_points_at_its_table() -> None:
    assert issues_of('[site]\nid = "a"\n\n[pbx]\nhost = "10.0.0.1"\n') == [
        (4, "pbx.domain", "required"),
    ]


@pytest.mark.parametrize(
    ("snippet", "path", "message"),
    [
        ("[pbx]\nport = 70000", "pbx.port", "must be at most 65535"),
        ("[pbx]\ntransport = 'sctp'", "pbx.transport", "must be one of: udp, tcp"),
        (
            "[pbx]\ntransport = 'tls'",
            "pbx.transport",
            "tls is not supported by the SIP workers yet (no certificate settings); "
            "use udp or tcp (over a VPN or a private network to the PBX)",
        ),
        ("[pbx]\nregister_expires = 10", "pbx.register_expires", "must be at least 60"),
        ("[pbx]\nregister_expires = 60.5", "pbx.register_expires", "must be an integer"),
        (
            "[pbx]\noutbound_caller_id = '+33 1'",
            "pbx.outbound_caller_id",
            "must be digits, optionally with a leading +",
        ),
        (
            "[pbx]\nallowed_sources = ['10.0.0.0/8', '10.0.0.300']",
            "pbx.allowed_sources[1]",
            "must be an IP address or a network in CIDR form",
        ),
        ("[site]\nid = 'Main Site'", "site.id", "must be lowercase letters, digits and -"),
        (
            "[site]\ndefault_region = 'XX'",
            "site.default_region",
            "must be a two-letter region code known to phonenumbers, like FR",
        ),
        (
            "[site]\nworking_days = ['mon', 'funday']",
            "site.working_days[1]",
            "must be one of: mon, tue, wed, thu, fri, sat, sun",
        ),
        ("[site]\nworking_days = ['mon', 'mon']", "site.working_days", "must not list a day twice"),
        (
            "[site]\nworking_hours = '19:00-09:00'",
            "site.working_hours",
            "must start before it ends",
        ),
        (
            "[site]\nworking_hours = '9h-19h'",
            "site.working_hours",
            'must be "HH:MM-HH:MM", like "09:00-19:00"',
        ),
        ("[sip]\ncalls_per_worker = 5", "sip.calls_per_worker", "must be at most 4"),
        ("[sip]\naccounts_per_worker = 9", "sip.accounts_per_worker", "must be at most 8"),
        ("[sip]\nbind_address = 'localhost'", "sip.bind_address", "must be an IP address"),
        ("[sip]\ncodecs = []", "sip.codecs", "must not be empty"),
        (
            "[sip]\ncodecs = ['PCMA', 'g.711 alaw']",
            "sip.codecs",
            '\'g.711 alaw\' is not a codec name like "PCMA" or "speex/16000"',
        ),
        ("[sip]\ncodecs = ['PCMA', 'pcma']", "sip.codecs", "must not list a codec twice"),
        (
            "[sip]\nbridge_clock_rate = 11025",
            "sip.bridge_clock_rate",
            'must be "auto" or one of 8000, 16000, 32000, 48000',
        ),
        ("[sip]\necho_canceller_tail = -1", "sip.echo_canceller_tail", "must be at least 0"),
        ("[sip]\nvad = 'no'", "sip.vad", "must be true or false"),
        ("[sip]\nresample_quality = 11", "sip.resample_quality", "must be at most 10"),
        ("[sip]\njitter_buffer_max = 5", "sip.jitter_buffer_max", "must be at least 20"),
        (
            "[sip]\nrtp_port_range = [31000, 30000]",
            "sip.rtp_port_range",
            "first port must be below last port",
        ),
        (
            "[sip]\nrtp_port_range = [30000]",
            "sip.rtp_port_range",
            "must be two ports: [first, last]",
        ),
        (
            "[sip]\nrtp_port_range = [25000, 26000]",
            "sip.rtp_port_range",
            "overlaps the workers' SIP ports 25060-25075",
        ),
        ("[recording]\nenabled = 'yes'", "recording.enabled", "must be true or false"),
        ("[recording]\nformat = 'mp3'", "recording.format", "must be one of: wav"),
        ("[recording]\ndirectory = 3", "recording.directory", "must be a string (a path)"),
        (
            "[store]\nurl = 'mysql+aiomysql://db/x'",
            "store.url",
            "scheme must be one of: sqlite+aiosqlite, postgresql+asyncpg",
        ),
        ("[store]\npool_size = 0", "store.pool_size", "must be at least 1"),
        (
            "[bus]\nmqtt_url = 'http://broker'",
            "bus.mqtt_url",
            "must be mqtt://host[:port] or mqtts://host[:port]",
        ),
        (
            "[bus]\ntopic_prefix = 'a/#'",
            "bus.topic_prefix",
            "must be topic levels without + # or blanks",
        ),
        (
            "[websocket]\ntls_cert = 'cert.pem'",
            "websocket.tls_key",
            "required when tls_cert is set",
        ),
        ("[websocket]\ntls_key = 'key.pem'", "websocket.tls_key", "needs tls_cert as well"),
        (
            "[websocket]\nallowed_origins = ['http://crm.example/app']",
            "websocket.allowed_origins[0]",
            "must be an origin like https://crm.example.com",
        ),
        ("[websocket]\nport = 8080", "websocket.port", "same as http.port"),
        (
            "[logging]\nlevel = 'verbose'",
            "logging.level",
            "must be one of: debug, info, warning, error",
        ),
        ("[logging]\nformat = 'xml'", "logging.format", "must be one of: console, json"),
        ("[dialer]\ngap_seconds = -1", "dialer.gap_seconds", "must be at least 0"),
        ("[dialer]\nring_timeout = 0", "dialer.ring_timeout", "must be more than 0"),
        (
            "[dialer]\nagent_leg = 'sometimes'",
            "dialer.agent_leg",
            "must be one of: persistent, per_call",
        ),
        ("dialer = 3", "dialer", "must be a table"),
        ("lines = 3", "lines", "must be an array of tables: [[lines]]"),
    ],
)
def test_bad_value_is_reported_with_a_short_message(snippet: str, path: str, message: str) -> None:
    if snippet.startswith("[pbx]"):
        text = MINIMAL + snippet.removeprefix("[pbx]") + "\n"
    elif snippet.startswith("["):
        text = MINIMAL + "\n" + snippet + "\n"
    else:
        text = snippet + "\n" + MINIMAL

    assert [(p, m) for _, p, m in issues_of(text)] == [(path, message)]


def test_pbx_host_name_needs_allowed_sources() -> None:
    text = '[pbx]\nhost = "pbx.example"\ndomain = "example"\n'

    assert issues_of(text) == [
        (1, "pbx.allowed_sources", "required when host is a name, not an IP address")
    ]


def test_log_level_is_case_insensitive() -> None:
    cfg = parse_config(MINIMAL + "[logging]\nlevel = 'WARNING'\n")

    assert cfg.logging.level == "warning"


def line(ext: str, role: str = "agent") -> str:
    return LINE.format(ext=ext, role=role)


def agent(name: str, phone: str, line_ext: str) -> str:
    return AGENT.format(name=name, phone=phone, line=line_ext)


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        (line("2001") + line("2001"), [("lines[1].extension", "duplicate of lines[0]")]),
        (
            line("2001") + agent("Alice", "1001", "2002"),
            [("agents[0].line", "no line 2002 in [[lines]]")],
        ),
        (
            line("2100", "reception") + agent("Alice", "1001", "2100"),
            [("agents[0].line", "line 2100 has role reception, not agent")],
        ),
        (
            line("2001") + agent("Alice", "1001", "2001") + agent("Bob", "1002", "2001"),
            [("agents[1].line", "line 2001 already used by agents[0]")],
        ),
        (
            line("2001")
            + line("2002")
            + agent("Alice", "1001", "2001")
            + agent("Bob", "1001", "2002"),
            [("agents[1].extension", "duplicate of agents[0]")],
        ),
        (
            line("2001")
            + line("2002")
            + agent("Alice", "1001", "2001")
            + agent("alice", "1002", "2002"),
            [("agents[1].name", "duplicate of agents[0]")],
        ),
        (
            line("2001") + agent("Alice", "2001", "2001"),
            [
                (
                    "agents[0].extension",
                    "is a switchboard line; give the agent's own phone extension",
                )
            ],
        ),
    ],
    ids=[
        "duplicate-line",
        "undeclared-line",
        "line-not-agent-role",
        "line-shared",
        "duplicate-phone",
        "duplicate-name",
        "phone-is-a-line",
    ],
)
def test_cross_entry_check(entries: str, expected: list[tuple[str, str]]) -> None:
    assert [(p, m) for _, p, m in issues_of(MINIMAL + entries)] == expected


def test_invalid_line_is_not_reported_again_by_agents() -> None:
    text = (
        MINIMAL
        + line("2001").replace('role = "agent"', 'role = "boss"')
        + agent("Alice", "1001", "2001")
    )

    assert [(p, m) for _, p, m in issues_of(text)] == [
        ("lines[0].role", "must be one of: agent, reception, dialer")
    ]


def test_entry_line_numbers_count_array_tables() -> None:
    text = (
        MINIMAL
        + line("2001")
        + line("2002")
        + agent("A", "1001", "2001")
        + agent("B", "10x2", "2002")
    )

    assert issues_of(text) == [(22, "agents[1].extension", "must be digits")]


def test_config_is_frozen() -> None:
    cfg = parse_config(MINIMAL + line("2001"))

    with pytest.raises(ValueError, match="frozen"):
        cfg.pbx.port = 5070  # type: ignore[misc]
    with pytest.raises(ValueError, match="frozen"):
        cfg.lines = ()  # type: ignore[misc]
    assert isinstance(cfg.lines, tuple)
    assert isinstance(cfg.site.working_days, tuple)


def test_models_built_in_code_run_the_same_checks() -> None:
    cfg = parse_config(MINIMAL + line("2001"))

    with pytest.raises(ValueError, match=r"lines\[1\].extension: duplicate of lines\[0\]"):
        Config(pbx=cfg.pbx, lines=(cfg.lines[0], cfg.lines[0]))


def test_secret_prints_masked() -> None:
    secret = Secret("hunter2")

    assert repr(secret) == "'**********'"
    assert str(secret) == "**********"
    assert f"{secret}" == "**********"
    assert secret.reveal() == "hunter2"


def test_pbx_accepts_only_allowed_sources() -> None:
    cfg = parse_config(MINIMAL + 'allowed_sources = ["10.1.0.0/16", "127.0.0.1"]\n')

    assert cfg.pbx.accepts("10.1.2.3")
    assert cfg.pbx.accepts("127.0.0.1")
    assert not cfg.pbx.accepts("10.2.0.1")
    assert not cfg.pbx.accepts("not-an-ip")


def test_minimal_config_takes_defaults() -> None:
    cfg = parse_config(MINIMAL)

    assert cfg.site.id == "main"
    assert cfg.site.default_region == "FR"
    assert cfg.sip.calls_per_worker == 4
    assert cfg.sip.accounts_per_worker == 8
    assert cfg.sip.sip_port(3) == 25063
    assert cfg.pbx.allowed_sources == ("127.0.0.1",)
    assert cfg.lines == ()
    assert cfg.websocket.allowed_origins == ("http://127.0.0.1:8080", "http://localhost:8080")
    assert cfg.dialer.gap_seconds == 5.0
