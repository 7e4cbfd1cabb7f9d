"""The demo's generated configuration: the example, pointed at a lab."""

from __future__ import annotations

import tomllib
from pathlib import Path

from config import LineRole, load_config
from lab.demo import EXAMPLE, demo_config, dump_toml


def test_demo_config_is_the_example_pointed_at_the_lab(tmp_path: Path) -> None:
    path = tmp_path / "switchboard.toml"
    path.write_text(dump_toml(demo_config(EXAMPLE, pbx_port=45678, run_dir=tmp_path)))
    cfg = load_config(path)
    example = load_config(EXAMPLE)
    assert cfg.pbx.port == 45678
    assert cfg.store.url == f"sqlite+aiosqlite:///{tmp_path / 'switchboard.sqlite3'}"
    assert Path(cfg.recording.directory) == tmp_path / "recordings"
    assert [line.extension for line in cfg.lines] == [line.extension for line in example.lines]
    assert [line.secret for line in cfg.lines] == [line.secret for line in example.lines]
    assert [a.name for a in cfg.agents] == [a.name for a in example.agents]
    assert len(cfg.lines_by_role(LineRole.AGENT)) == 3


def test_dump_toml_round_trips_through_tomllib() -> None:
    data = {
        "top": 1,
        "section": {"text": 'a "quoted" \\ path', "flag": True, "ratio": 0.5, "items": [1, 2]},
        "rows": [{"name": "x"}, {"name": "y"}],
    }
    assert tomllib.loads(dump_toml(data)) == data


async def test_demo_store_has_the_agents_users_and_a_working_token(tmp_path: Path) -> None:
    from crm_store import Store
    from lab.demo import prepare_store

    path = tmp_path / "switchboard.toml"
    data = demo_config(EXAMPLE, pbx_port=45678, run_dir=tmp_path)
    path.write_text(dump_toml(data))
    token = await prepare_store(path, data)
    assert token is not None
    async with await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'switchboard.sqlite3'}") as store:
        user = await store.users.authenticate(token)
        assert user is not None
        assert user.username == "alice"
        assert {u.username for u in await store.users.list()} == {
            a["user"] for a in data["agents"] if a.get("user")
        }
