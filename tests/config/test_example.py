from __future__ import annotations

from pathlib import Path

from config import LineRole, LogFormat, load_config
from config._docs import render_markdown

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "examples" / "switchboard.toml"


def test_shipped_example_is_valid_with_an_empty_environment() -> None:
    cfg = load_config(EXAMPLE, environ={})

    assert cfg.site.id == "lab"
    assert cfg.site.timezone == "Europe/Paris"
    assert cfg.pbx.host == "127.0.0.1"
    assert cfg.pbx.port == 5060
    assert cfg.pbx.domain == "switchboard.lab"
    assert cfg.pbx.allowed_sources == ("127.0.0.1",)
    assert [line.extension for line in cfg.lines_by_role(LineRole.AGENT)] == [
        "2001",
        "2002",
        "2003",
    ]
    assert [line.extension for line in cfg.lines_by_role("reception")] == ["2100"]
    assert [line.extension for line in cfg.lines_by_role("dialer")] == ["2200"]
    assert cfg.line("2001").secret.reveal() == "lab-demo-2001-not-for-production"
    assert cfg.line("2001").secret_file == EXAMPLE.parent / "secrets" / "2001"
    assert [(a.name, a.extension, a.line) for a in cfg.agents] == [
        ("Alice", "1001", "2001"),
        ("Bob", "1002", "2002"),
        ("Chloé", "1003", "2003"),
    ]
    chloe = cfg.agent_for_line("2003")
    assert chloe is not None
    assert chloe.supervisor
    assert not any(agent.supervisor for agent in cfg.agents[:2])
    assert cfg.agent_for_line("2100") is None
    assert cfg.store.url == f"sqlite+aiosqlite:///{EXAMPLE.parent / 'switchboard.sqlite3'}"
    assert cfg.recording.directory == EXAMPLE.parent / "recordings"
    assert cfg.logging.format is LogFormat.CONSOLE
    assert cfg.dialer.agent_leg == "persistent"


def test_committed_reference_matches_the_models() -> None:
    committed = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")

    assert committed == render_markdown(), (
        "regenerate: python -m config.docs > docs/configuration.md"
    )


def test_reference_documents_every_key() -> None:
    text = render_markdown()

    for key in ("allowed_sources", "secret_env", "url", "agent_leg", "replay_buffer"):
        assert f"| `{key}` |" in text
    assert "PJSUA_MAX_CALLS = 4" in text
    assert EXAMPLE.read_text(encoding="utf-8").strip() in text
