"""Builds the JSON Schemas of the protocol, written to ``ws_gateway/schemas/``.

The files are the published contract; this module is how they are made, so
that the event schemas follow the ``bus.events`` dataclasses and the command
schemas follow :data:`ws_gateway.rights.COMMANDS`. A test fails when the files
differ from what this builds. After changing an event or a command, run::

    python -m ws_gateway._schemagen
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from bus import EVENT_TYPES, Event

from .exceptions import ERROR_CODES
from .protocol import CLOSE_CODE_MEANINGS, RESUME_REASONS, CloseCode
from .rights import COMMANDS

__all__ = ["BASE_URI", "SCHEMA_DIR", "build_schemas", "main"]

BASE_URI = "https://switchboard.example/schemas/ws/"
SCHEMA_DIR = Path(__file__).parent / "schemas"
DRAFT = "https://json-schema.org/draft/2020-12/schema"

_UUID = {
    "type": "string",
    "format": "uuid",
    "pattern": "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
}
_SEQ = {"type": "integer", "minimum": 0, "description": "The gateway stream's sequence number."}
_NUMBER = {
    "type": "string",
    "pattern": "^\\+?[0-9*#]{1,32}$",
    "description": "A phone number or extension: digits, * and #, optional leading +.",
}
_AGENT = {"type": "string", "minLength": 1, "maxLength": 128}
_TEXT = {"type": "string", "minLength": 1, "maxLength": 4000}
_ID = {"type": "string", "minLength": 1, "maxLength": 64}


def _obj(
    properties: dict[str, Any], required: list[str] | None = None, **extra: Any
) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": required if required is not None else list(properties),
        "additionalProperties": False,
        **extra,
    }


def _doc(name: str, title: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"$schema": DRAFT, "$id": BASE_URI + name, "title": title, **body}


# --- commands ----------------------------------------------------------------

_CALL = {"call_id": _UUID}
_AGENT_OPT = {"agent": _AGENT}

COMMAND_ARGS: dict[str, tuple[str, dict[str, Any]]] = {
    "call.originate": (
        "Click-to-call: ring the agent's phone, then dial `to`.",
        _obj(
            {**_AGENT_OPT, "to": _NUMBER, "client_id": _UUID, "lead_id": _UUID},
            ["to"],
        ),
    ),
    "call.answer": ("Answer a ringing call.", _obj(_CALL)),
    "call.hangup": ("Hang up a call.", _obj(_CALL)),
    "call.hold": ("Put the customer on hold.", _obj(_CALL)),
    "call.resume": ("Take the customer off hold.", _obj(_CALL)),
    "call.transfer": (
        "Transfer the customer to `to`: `blind` at once, `attended` after a consult call "
        "(then `call.transfer.complete` or `call.transfer.cancel`).",
        _obj(
            {**_CALL, "to": _NUMBER, "mode": {"enum": ["blind", "attended"]}},
            ["call_id", "to", "mode"],
        ),
    ),
    "call.transfer.complete": ("Complete an attended transfer.", _obj(_CALL)),
    "call.transfer.cancel": ("Cancel an attended transfer, back to the customer.", _obj(_CALL)),
    "call.dtmf": (
        "Send DTMF digits on the customer's leg.",
        _obj({**_CALL, "digits": {"type": "string", "pattern": "^[0-9*#A-D]{1,32}$"}}),
    ),
    "call.note": ("Add a note to the call record.", _obj({**_CALL, "text": _TEXT})),
    "call.disposition": (
        "Set the call's outcome (wrap-up), also after the hang-up.",
        _obj(
            {
                **_CALL,
                "disposition": {"type": "string", "minLength": 1, "maxLength": 64},
                "note": _TEXT,
            },
            ["call_id", "disposition"],
        ),
    ),
    "call.create_client": (
        "Create a client from the call's caller (number taken from the call).",
        _obj(
            {
                **_CALL,
                "display_name": {"type": "string", "minLength": 1, "maxLength": 200},
                "kind": {"enum": ["person", "company"]},
                "email": {"type": "string", "maxLength": 320},
            },
            ["call_id", "display_name"],
        ),
    ),
    "call.create_lead": (
        "Create a lead from the call's caller (number taken from the call).",
        _obj(
            {**_CALL, "name": {"type": "string", "maxLength": 200}, "note": _TEXT},
            ["call_id"],
        ),
    ),
    "dialer.start": (
        "Start the agent's dialer session on a call list.",
        _obj({**_AGENT_OPT, "call_list_id": _UUID}, ["call_list_id"]),
    ),
    "dialer.pause": ("Pause the agent's dialer session.", _obj(_AGENT_OPT, [])),
    "dialer.resume": ("Resume the agent's dialer session.", _obj(_AGENT_OPT, [])),
    "dialer.stop": ("Stop the agent's dialer session.", _obj(_AGENT_OPT, [])),
    "dialer.skip": (
        "Skip the current number: the one waiting for the gap (not dialed), or the one "
        "ringing or talking (hung up).",
        _obj(_AGENT_OPT, []),
    ),
    "agent.state.set": (
        "Set the agent's state; `paused` needs a reason.",
        _obj(
            {
                **_AGENT_OPT,
                "state": {"enum": ["available", "paused", "offline"]},
                "reason": {"type": "string", "minLength": 1, "maxLength": 200},
            },
            ["state"],
            **{
                "if": {"properties": {"state": {"const": "paused"}}},
                "then": {"required": ["reason"]},
            },
        ),
    ),
    "supervisor.listen": ("Listen to a call, unheard.", _obj(_CALL)),
    "supervisor.whisper": ("Talk to the agent only.", _obj(_CALL)),
    "supervisor.barge": ("Join the call: everyone hears everyone.", _obj(_CALL)),
    "admin.users.list": ("List the users.", _obj({})),
    "admin.users.add": (
        "Create a user.",
        _obj(
            {
                "username": {"type": "string", "pattern": "^[a-z0-9._-]{1,64}$"},
                "display_name": {"type": "string", "minLength": 1, "maxLength": 200},
                "role": {"enum": ["agent", "supervisor", "admin"]},
                "extension": {"type": "string", "pattern": "^[0-9]{1,16}$"},
            },
            ["username", "display_name", "role"],
        ),
    ),
    "admin.users.token": (
        "Issue an API token for a user; the plaintext is in the result, once.",
        _obj(
            {
                "username": {"type": "string", "pattern": "^[a-z0-9._-]{1,64}$"},
                "label": {"type": "string", "minLength": 1, "maxLength": 200},
            }
        ),
    ),
    "admin.users.revoke": ("Revoke an API token.", _obj({"token_id": _UUID})),
}


# --- events --------------------------------------------------------------------


# The caller's card in ``call.ringing`` (the only ``dict[str, Any]`` event field):
# the keys every card has are fixed, the rest depends on the kind.
_CARD: dict[str, Any] = {
    "type": "object",
    "required": ["kind", "id", "display_name", "phone", "created"],
    "properties": {
        "kind": {"enum": ["client", "lead"]},
        "id": _UUID,
        "display_name": {"type": "string"},
        "phone": {"type": "string"},
        "created": {"type": "boolean"},
    },
}


def _type_schema(tp: Any) -> dict[str, Any]:
    origin = typing.get_origin(tp)
    if origin is dict:
        return dict(_CARD)
    if origin in (types.UnionType, typing.Union):
        options = [_type_schema(a) for a in typing.get_args(tp)]
        return {"anyOf": options}
    if origin is tuple or origin is list:
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return {"type": "array", "items": _type_schema(args[0])}
    if tp is type(None):
        return {"type": "null"}
    if tp is uuid.UUID:
        return dict(_UUID)
    if tp is datetime:
        return {"type": "string", "format": "date-time"}
    if tp is bool:
        return {"type": "boolean"}
    if tp is int:
        return {"type": "integer"}
    if tp is float:
        # to_data() passes floats through, and JSON may write 3.0 as 3.
        return {"type": "number"}
    if tp is str:
        return {"type": "string"}
    raise TypeError(f"no JSON Schema for {tp!r}: extend _type_schema")


def event_data_schema(cls: type[Event]) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    props = {f.name: _type_schema(hints[f.name]) for f in dataclasses.fields(cls)}
    doc = (cls.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
    return _doc(
        f"event.{cls.TYPE}.json",
        f"{cls.TYPE} (v{cls.VERSION}) data",
        {"description": doc, **_obj(props)},
    )


# --- messages ------------------------------------------------------------------


def _client_auth() -> dict[str, Any]:
    return _doc(
        "client.auth.json",
        "auth (client → server, first message)",
        _obj(
            {
                "type": {"const": "auth"},
                "token": {"type": "string", "minLength": 1, "maxLength": 512},
                "resume_from": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "The last seq received on a previous connection.",
                },
                "stream": {
                    "type": "string",
                    "maxLength": 64,
                    "description": "The stream of that connection (from its auth.ok).",
                },
            },
            ["type", "token"],
        ),
    )


def _client_command() -> dict[str, Any]:
    return _doc(
        "client.command.json",
        "command (client → server)",
        {
            **_obj(
                {
                    "type": {"const": "command"},
                    "id": _ID,
                    "name": {"enum": sorted(COMMANDS)},
                    "args": {"type": "object"},
                },
                ["type", "id", "name"],
            ),
            "allOf": [
                {
                    "if": {"properties": {"name": {"const": name}}, "required": ["name"]},
                    "then": {"properties": {"args": {"$ref": f"command.{name}.json"}}},
                }
                for name in sorted(COMMANDS)
            ],
        },
    )


_CALL_ITEM = _obj(
    {
        "call_id": _UUID,
        "origin": {"type": "string"},
        "direction": {"type": "string"},
        "from_number": {"type": "string"},
        "to_number": {"type": "string"},
        "line": {"type": "string"},
        "agent": {"type": ["string", "null"]},
        "state": {"enum": ["created", "dialing", "ringing", "answered", "bridged"]},
        "leg": {"type": ["string", "null"]},
        "recording": {"type": "boolean"},
        "created_at": {"type": "string", "format": "date-time"},
        "updated_at": {"type": "string", "format": "date-time"},
    }
)
_AGENT_ITEM = _obj(
    {
        "agent": {"type": "string"},
        "user": {"type": ["string", "null"]},
        "state": {"type": "string"},
        "reason": {"type": ["string", "null"]},
        "since": {"type": "string", "format": "date-time"},
    }
)


def _server_messages() -> dict[str, dict[str, Any]]:
    stream = {"type": "string", "minLength": 1, "maxLength": 64}
    out = {
        "server.auth.ok.json": _doc(
            "server.auth.ok.json",
            "auth.ok (server → client)",
            _obj(
                {
                    "type": {"const": "auth.ok"},
                    "seq": _SEQ,
                    "stream": stream,
                    "session": {"type": "string"},
                    "user": {"type": "string"},
                    "display_name": {"type": "string"},
                    "role": {"enum": ["agent", "supervisor", "admin"]},
                    "agents": {"type": "array", "items": {"type": "string"}},
                    "resumed": {
                        "type": "boolean",
                        "description": "Present when resume_from was sent: true if the "
                        "missed events follow, false if a fresh snapshot follows.",
                    },
                },
                ["type", "seq", "stream", "session", "user", "display_name", "role", "agents"],
            ),
        ),
        "server.snapshot.json": _doc(
            "server.snapshot.json",
            "snapshot (server → client)",
            _obj(
                {
                    "type": {"const": "snapshot"},
                    "seq": _SEQ,
                    "stream": stream,
                    "calls": {"type": "array", "items": _CALL_ITEM},
                    "agents": {"type": "array", "items": _AGENT_ITEM},
                    "dialer": {"type": "array", "items": {"type": "object"}},
                    "resumed": {"const": False},
                    "reason": {"enum": list(RESUME_REASONS)},
                },
                ["type", "seq", "stream", "calls", "agents", "dialer"],
            ),
        ),
        "server.event.json": _doc(
            "server.event.json",
            "event (server → client)",
            _obj(
                {
                    "type": {"const": "event"},
                    "seq": _SEQ,
                    "event": {
                        **_obj(
                            {
                                "type": {"type": "string"},
                                "v": {"type": "integer", "minimum": 1},
                                "origin": {"type": "string"},
                                "seq": {
                                    "type": "integer",
                                    "description": "The origin's own sequence number.",
                                },
                                "at": {"type": "string", "format": "date-time"},
                                "data": {"type": "object"},
                            }
                        ),
                        "allOf": [
                            {
                                "if": {
                                    "properties": {"type": {"const": t}},
                                    "required": ["type"],
                                },
                                "then": {"properties": {"data": {"$ref": f"event.{t}.json"}}},
                            }
                            for t in sorted(EVENT_TYPES)
                        ],
                    },
                }
            ),
        ),
        "server.result.json": _doc(
            "server.result.json",
            "result (server → client): a command succeeded",
            _obj({"type": {"const": "result"}, "seq": _SEQ, "id": _ID, "data": {"type": "object"}}),
        ),
        "server.error.json": _doc(
            "server.error.json",
            "error (server → client): a command or message was refused",
            _obj(
                {
                    "type": {"const": "error"},
                    "seq": _SEQ,
                    "id": {
                        "anyOf": [_ID, {"type": "null"}],
                        "description": "The command's id; null if the message had none.",
                    },
                    "code": {"enum": list(ERROR_CODES)},
                    "message": {"type": "string"},
                    "details": {"type": "object"},
                }
            ),
        ),
        "close_codes.json": _doc(
            "close_codes.json",
            "Close codes of the websocket connection",
            {
                "type": "integer",
                "oneOf": [
                    {
                        "const": int(code),
                        "title": code.name,
                        "description": CLOSE_CODE_MEANINGS[code],
                    }
                    for code in CloseCode
                ],
            },
        ),
    }
    return out


def build_schemas() -> dict[str, dict[str, Any]]:
    """Every schema file, by file name."""
    out: dict[str, dict[str, Any]] = {
        "client.auth.json": _client_auth(),
        "client.command.json": _client_command(),
    }
    for name in sorted(COMMANDS):
        title, body = COMMAND_ARGS[name]
        out[f"command.{name}.json"] = _doc(
            f"command.{name}.json", f"{name} args", {"description": title, **body}
        )
    out.update(_server_messages())
    for t in sorted(EVENT_TYPES):
        out[f"event.{t}.json"] = event_data_schema(EVENT_TYPES[t])
    return out


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def main() -> None:
    """Rewrite ``ws_gateway/schemas/`` from the code, removing stale files."""
    schemas = build_schemas()
    SCHEMA_DIR.mkdir(exist_ok=True)
    for stale in SCHEMA_DIR.glob("*.json"):
        if stale.name not in schemas:
            stale.unlink()
    for name, schema in schemas.items():
        (SCHEMA_DIR / name).write_text(render(schema), encoding="utf-8")


if __name__ == "__main__":
    main()
