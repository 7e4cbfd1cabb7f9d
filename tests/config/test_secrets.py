from __future__ import annotations

import os
from pathlib import Path

import pytest

from config import ConfigError, Secret, dump_redacted, load_config, parse_config

from .conftest import MINIMAL, WriteConfig

SECRET = "Xk9-very-secret-value"


def lines_with(secret_keys: str) -> str:
    return MINIMAL + f'\n[[lines]]\nextension = "2001"\nrole = "agent"\n{secret_keys}\n'


def messages(
    path: Path, environ: dict[str, str] | None = None
) -> list[tuple[int | None, str, str]]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ=environ or {})
    return [(i.line, i.path, i.message) for i in caught.value.issues]


def test_secret_read_from_file_relative_to_the_config(write_config: WriteConfig) -> None:
    path = write_config(lines_with('secret_file = "secrets/2001"'), secrets__2001=SECRET + "\n")

    cfg = load_config(path, environ={})

    assert cfg.line("2001").secret.reveal() == SECRET
    assert cfg.line("2001").secret_file == path.parent / "secrets" / "2001"


def test_secret_read_from_environment(write_config: WriteConfig) -> None:
    path = write_config(lines_with('secret_env = "LINE_2001_SECRET"'))

    cfg = load_config(path, environ={"LINE_2001_SECRET": SECRET})

    assert cfg.line("2001").secret == Secret(SECRET)


def test_secret_given_twice(write_config: WriteConfig) -> None:
    path = write_config(lines_with('secret = "a"\nsecret_env = "X"'))

    assert messages(path) == [(9, "lines[0].secret_env", "already given by secret")]


def test_secret_given_no_way(write_config: WriteConfig) -> None:
    path = write_config(lines_with(""))

    assert messages(path) == [(5, "lines[0]", "needs one of secret, secret_file or secret_env")]


def test_secret_file_unreadable(write_config: WriteConfig) -> None:
    path = write_config(lines_with('secret_file = "secrets/none"'))

    missing = path.parent / "secrets" / "none"
    assert messages(path) == [
        (8, "lines[0].secret_file", f"cannot read {missing}: no such file or directory")
    ]


def test_secret_file_empty(write_config: WriteConfig) -> None:
    path = write_config(lines_with('secret_file = "s"'), s="\n")

    assert messages(path) == [(8, "lines[0].secret_file", f"{path.parent / 's'} is empty")]


def test_secret_env_unset(write_config: WriteConfig) -> None:
    path = write_config(lines_with('secret_env = "NOT_SET_ANYWHERE"'))

    assert messages(path, {"OTHER": "x"}) == [
        (8, "lines[0].secret_env", "environment variable NOT_SET_ANYWHERE is not set")
    ]


def test_environ_defaults_to_the_process_environment(
    write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SWITCHBOARD_TEST_LINE_SECRET", SECRET)
    path = write_config(lines_with('secret_env = "SWITCHBOARD_TEST_LINE_SECRET"'))

    assert load_config(path).line("2001").secret.reveal() == SECRET
    assert os.environ["SWITCHBOARD_TEST_LINE_SECRET"] == SECRET


def test_secrets_never_printed(write_config: WriteConfig) -> None:
    text = lines_with(f'secret = "{SECRET}"') + (
        '\n[store]\nurl = "postgresql+asyncpg://sb@db.example/crm"\npassword_file = "pg"\n'
        '\n[bus]\nmqtt_url = "mqtts://sb@broker.example:8883"\nmqtt_password_env = "MQ"\n'
    )
    path = write_config(text, pg=SECRET + "-pg\n")

    cfg = load_config(path, environ={"MQ": SECRET + "-mq"})

    dumped = dump_redacted(cfg)
    for shown in (repr(cfg), str(cfg), repr(cfg.lines[0].secret), str(dumped)):
        assert SECRET not in shown
    assert dumped["lines"][0]["secret"] == "**********"
    assert dumped["store"]["url"] == "postgresql+asyncpg://sb:**********@db.example/crm"
    assert dumped["bus"]["mqtt_url"] == "mqtts://sb:**********@broker.example:8883"
    assert cfg.store.url == "postgresql+asyncpg://sb@db.example/crm"
    assert cfg.store.url_with_secret() == f"postgresql+asyncpg://sb:{SECRET}-pg@db.example/crm"
    assert cfg.bus.mqtt_password is not None
    assert cfg.bus.mqtt_password.reveal() == SECRET + "-mq"


def test_secrets_absent_from_errors() -> None:
    text = lines_with(f'secret = "{SECRET}"\ncaller_id = "{SECRET}"') + (
        f'\n[store]\nurl = "mysql://u:{SECRET}@db/x"\n'
    )

    with pytest.raises(ConfigError) as caught:
        parse_config(text)

    assert SECRET not in str(caught.value)
    assert SECRET not in repr(caught.value)
    # A chained pydantic error would print the offending input in the traceback.
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None or caught.value.__suppress_context__


def test_password_in_store_url_moves_out_of_it() -> None:
    cfg = parse_config(MINIMAL + '[store]\nurl = "postgresql+asyncpg://sb:p%40ss@db/crm"\n')

    assert cfg.store.url == "postgresql+asyncpg://sb@db/crm"
    assert cfg.store.password == Secret("p@ss")
    assert cfg.store.url_with_secret() == "postgresql+asyncpg://sb:p%40ss@db/crm"


def test_store_password_given_in_url_and_file() -> None:
    text = MINIMAL + '[store]\nurl = "postgresql+asyncpg://sb:pw@db/crm"\npassword_env = "PG"\n'

    with pytest.raises(ConfigError) as caught:
        parse_config(text, environ={"PG": "x"})

    assert [(i.path, i.message) for i in caught.value.issues] == [
        ("store.password_env", "already given by a password in url")
    ]


def test_store_password_needs_postgresql() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(MINIMAL + '[store]\npassword_env = "PG"\n', environ={"PG": "x"})

    assert [(i.path, i.message) for i in caught.value.issues] == [
        ("store.password_env", "only used with a postgresql+asyncpg url")
    ]


def test_mqtt_password_needs_mqtt_url() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(MINIMAL + '[bus]\nmqtt_password = "x"\n')

    assert [(i.path, i.message) for i in caught.value.issues] == [
        ("bus.mqtt_password", "only used with mqtt_url")
    ]


def test_relative_paths_resolve_against_the_config_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_dir = tmp_path / "etc"
    config_dir.mkdir()
    (config_dir / "switchboard.toml").write_text(
        MINIMAL
        + '[recording]\ndirectory = "rec"\n'
        + '[store]\nurl = "sqlite+aiosqlite:///data/sb.sqlite3"\n'
        + '[websocket]\ntls_cert = "tls/cert.pem"\ntls_key = "/abs/key.pem"\n',
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path)

    cfg = load_config("etc/switchboard.toml")

    assert cfg.recording.directory == config_dir / "rec"
    assert cfg.store.url == f"sqlite+aiosqlite:///{config_dir / 'data' / 'sb.sqlite3'}"
    assert cfg.websocket.tls_cert == config_dir / "tls" / "cert.pem"
    assert cfg.websocket.tls_key == Path("/abs/key.pem")


def test_default_store_sits_next_to_the_config(write_config: WriteConfig) -> None:
    path = write_config(MINIMAL)

    cfg = load_config(path)

    assert cfg.store.url == f"sqlite+aiosqlite:///{path.parent / 'switchboard.sqlite3'}"
    assert cfg.store.is_sqlite
    assert cfg.store.url_with_secret() == cfg.store.url
    assert cfg.recording.directory == path.parent / "recordings"


def test_gateway_secret_from_a_file_is_never_printed(write_config: WriteConfig) -> None:
    key = "f" * 64
    text = MINIMAL + '[bus]\nmqtt_url = "mqtt://broker"\ngateway_secret_file = "gw"\n'
    path = write_config(text, gw=key + "\n")

    cfg = load_config(path, environ={})

    assert cfg.bus.gateway_secret is not None
    assert cfg.bus.gateway_secret.reveal() == key
    assert key not in repr(cfg)
    assert dump_redacted(cfg)["bus"]["gateway_secret"] == "**********"


def test_bad_gateway_and_tls_settings_are_reported_with_their_keys() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(
            MINIMAL
            + '[bus]\nmqtt_url = "mqtt://broker"\ngateway_secret = "short"\n'
            + 'mqtt_ca_file = "ca.pem"\nmqtt_cert_file = "me.pem"\n'
        )

    assert sorted((i.path, i.message) for i in caught.value.issues) == [
        ("bus.gateway_secret", "must be at least 32 characters (`openssl rand -hex 32`)"),
        ("bus.mqtt_ca_file", "only used with an mqtts:// mqtt_url"),
        ("bus.mqtt_cert_file", "only used with an mqtts:// mqtt_url"),
    ]
    with pytest.raises(ConfigError) as caught:
        parse_config(MINIMAL + '[bus]\nmqtt_url = "mqtts://broker"\nmqtt_cert_file = "me.pem"\n')
    assert [(i.path, i.message) for i in caught.value.issues] == [
        ("bus.mqtt_key_file", "required when mqtt_cert_file is set")
    ]
