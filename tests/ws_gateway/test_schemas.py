"""The published schemas: complete, in sync with the code, and checking what they should."""

from __future__ import annotations

import json
import typing

import pytest

from bus import EVENT_TYPES
from ws_gateway import COMMANDS, CloseCode
from ws_gateway._schemagen import SCHEMA_DIR, build_schemas, render
from ws_gateway.exceptions import BadRequest
from ws_gateway.protocol import parse_auth, parse_command


def test_every_bus_event_type_has_a_data_schema() -> None:
    files = {p.name for p in SCHEMA_DIR.glob("*.json")}
    missing = {t for t in EVENT_TYPES if f"event.{t}.json" not in files}
    assert not missing, "run `python -m ws_gateway._schemagen`"


def test_every_command_has_an_args_schema() -> None:
    files = {p.name for p in SCHEMA_DIR.glob("*.json")}
    assert {n for n in COMMANDS if f"command.{n}.json" not in files} == set()


def test_schema_files_match_the_event_dataclasses_and_commands() -> None:
    built = build_schemas()
    on_disk = {p.name: p.read_text(encoding="utf-8") for p in SCHEMA_DIR.glob("*.json")}
    assert set(on_disk) == set(built), "run `python -m ws_gateway._schemagen`"
    stale = [name for name, schema in built.items() if on_disk[name] != render(schema)]
    assert stale == [], "run `python -m ws_gateway._schemagen`"


def test_event_schemas_list_exactly_the_dataclass_fields() -> None:
    for type_, cls in EVENT_TYPES.items():
        schema = json.loads((SCHEMA_DIR / f"event.{type_}.json").read_text())
        fields = [f for f in typing.get_type_hints(cls) if f not in ("TYPE", "VERSION")]
        assert sorted(schema["properties"]) == sorted(fields), type_


def test_close_codes_schema_lists_every_close_code() -> None:
    schema = json.loads((SCHEMA_DIR / "close_codes.json").read_text())
    assert {c["const"] for c in schema["oneOf"]} == {int(c) for c in CloseCode}


def test_auth_message_is_parsed_and_its_token_never_shown() -> None:
    auth = parse_auth('{"type":"auth","token":"sbt_secret","resume_from":4}')
    assert auth.resume_from == 4
    assert "sbt_secret" not in repr(auth)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"type":"auth","token":"x"}',
        "[]",
        '{"type":"auth"}',
        '{"type":"auth","token":"x","extra":1}',
        '{"type":"auth","token":"x","resume_from":-1}',
    ],
)
def test_malformed_auth_is_a_bad_request(raw: str | bytes) -> None:
    with pytest.raises(BadRequest):
        parse_auth(raw)


def test_command_args_are_checked_against_their_schema_and_the_id_kept() -> None:
    with pytest.raises(BadRequest) as refused:
        parse_command(
            '{"type":"command","id":"7","name":"call.transfer",'
            '"args":{"call_id":"0190c6d2-0000-7000-8000-000000000000","to":"3000"}}'
        )
    assert refused.value.details["id"] == "7"
    command = parse_command('{"type":"command","id":"8","name":"admin.users.list"}')
    assert (command.name, command.args) == ("admin.users.list", {})


def _doc_examples() -> list[dict[str, object]]:
    text = (SCHEMA_DIR.parents[1] / "docs" / "protocol.md").read_text(encoding="utf-8")
    out: list[dict[str, object]] = []
    for block in text.split("```json\n")[1:]:
        body = block.split("```", 1)[0]
        try:
            out.append(json.loads(body))
        except ValueError:
            out.extend(json.loads(line) for line in body.splitlines() if line.strip())
    return out


def test_every_example_in_the_protocol_doc_is_valid() -> None:
    from .conftest import validate_server_message

    examples = _doc_examples()
    assert {e["type"] for e in examples} >= {
        "auth",
        "command",
        "auth.ok",
        "snapshot",
        "event",
        "result",
        "error",
    }
    for example in examples:
        if example["type"] == "auth":
            parse_auth(json.dumps(example))
        elif example["type"] == "command":
            parse_command(json.dumps(example))
        else:
            validate_server_message(example)
