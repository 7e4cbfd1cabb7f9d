"""Import, export and call lists through the HTTP API, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile
from typing import Any

import openpyxl  # type: ignore[import-untyped]
from sqlalchemy import func, select

from crm_store import ClientKind, Visibility
from crm_store import _models as m
from tests.crm_store._import_files import cyrillic_clients

from .conftest import Env


async def _clients(env: Env) -> int:
    async with env.store.engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(m.clients)) or 0)


def _upload(
    data: bytes, options: dict[str, Any] | None = None, name: str = "base.csv"
) -> dict[str, Any]:
    return {
        "files": {"file": (name, data, "application/octet-stream")},
        "data": {"options": json.dumps(options or {})},
    }


async def test_import_is_previewed_refused_with_its_bad_rows_then_confirmed_and_undone(
    env: Env,
) -> None:
    sheet = cyrillic_clients(1000)
    sue = env.auth("sue")
    preview = await env.client.post("/api/imports/preview", headers=sue, **_upload(sheet.data))
    assert preview.status_code == 200, preview.text
    body = preview.json()
    assert (body["format"], body["encoding"], body["delimiter"]) == ("csv", "windows-1251", ";")
    assert body["columns"] == ["Фамилия", "Имя", "Телефон", "Эл. почта", "Город"]
    assert body["mapping"] == {
        "0": "last_name",
        "1": "first_name",
        "2": "phone",
        "3": "email",
        "4": "city",
    }
    assert body["sample"][0][:2] == ["Иванов-0", "Иван"]
    assert body["counts"] == {"rows": 1000, "create": 997, "update": 0, "skip": 0, "bad": 3}
    assert [r["line"] for r in body["bad_rows"]] == sorted(sheet.bad)
    assert await _clients(env) == 0

    refused = await env.client.post("/api/imports", headers=sue, **_upload(sheet.data))
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["message"].startswith("nothing was imported: line ")
    assert [r["line"] for r in error["details"]["rows"]] == sorted(sheet.bad)
    assert await _clients(env) == 0

    done = await env.client.post(
        "/api/imports", headers=sue, **_upload(sheet.data, {"skip_bad_rows": True})
    )
    assert done.status_code == 201, done.text
    result = done.json()
    assert result["record"]["created"] == 997
    assert [r["line"] for r in result["bad_rows"]] == sorted(sheet.bad)
    assert await _clients(env) == 997

    history = (await env.client.get("/api/imports", headers=sue)).json()["imports"]
    assert [h["id"] for h in history] == [result["record"]["id"]]
    assert history[0]["filename"] == "base.csv"
    undo = await env.client.post(f"/api/imports/{history[0]['id']}/undo", headers=sue)
    assert undo.status_code == 200
    assert undo.json()["undone_at"] is not None
    assert await _clients(env) == 0
    again = await env.client.post(f"/api/imports/{history[0]['id']}/undo", headers=sue)
    assert again.status_code == 409


async def test_import_needs_a_supervisor_and_bad_options_name_their_field(env: Env) -> None:
    data = "name,phone\nLéa Roux,0612345678\n".encode()
    agent = await env.client.post(
        "/api/imports/preview", headers=env.auth("alice"), **_upload(data)
    )
    assert agent.status_code == 403
    sue = env.auth("sue")
    bad = await env.client.post(
        "/api/imports/preview", headers=sue, **_upload(data, {"duplicates": "merge"})
    )
    assert bad.status_code == 400
    assert bad.json()["error"]["details"]["path"] == "options.duplicates"
    unmapped = await env.client.post(
        "/api/imports", headers=sue, **_upload(data, {"mapping": {"0": "colour"}})
    )
    assert unmapped.status_code == 400
    assert unmapped.json()["error"]["details"]["path"] == "options.mapping"
    assert "unknown field 'colour'" in unmapped.json()["error"]["message"]
    empty = await env.client.post("/api/imports/preview", headers=sue, **_upload(b""))
    assert empty.status_code == 400
    assert empty.json()["error"]["details"]["path"] == "file"
    assert await _clients(env) == 0


def _bomb() -> bytes:
    """A few kilobytes declaring the whole A1:XFD1048576 grid, with a cell in its last row."""
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["name", "phone"])
    sheet.append(["Léa", "0612345678"])
    saved = io.BytesIO()
    book.save(saved)
    out = io.BytesIO()
    last = b'<row r="1048576"><c r="XFD1048576" t="inlineStr"><is><t>x</t></is></c></row>'
    with (
        zipfile.ZipFile(io.BytesIO(saved.getvalue())) as src,
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst,
    ):
        for info in src.infolist():
            part = src.read(info.filename)
            if info.filename == "xl/worksheets/sheet1.xml":
                part = re.sub(
                    rb'<dimension ref="[^"]*" ?/>', b'<dimension ref="A1:XFD1048576"/>', part
                )
                part = part.replace(b"</sheetData>", last + b"</sheetData>")
            dst.writestr(info.filename, part)
    return out.getvalue()


async def test_xlsx_bomb_is_refused_with_the_limit_it_hit(env: Env) -> None:
    bomb = _bomb()
    assert len(bomb) < 10_000
    answer = await env.client.post(
        "/api/imports/preview", headers=env.auth("sue"), **_upload(bomb, name="bomb.xlsx")
    )
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["message"] == "the file cannot be read: line 100001: more than 100000 rows"
    assert error["details"]["rows"] == [{"line": 100001, "message": "more than 100000 rows"}]


async def test_export_shows_what_the_user_may_see_and_neutralises_formulas(env: Env) -> None:
    alice, bob = env.users["alice"], env.users["bob"]
    await env.store.clients.create(
        ClientKind.PERSON,
        first_name="Anne",
        last_name="Shared",
        phones=["0612345678"],
        tags=["vip"],
    )
    await env.store.clients.create(
        ClientKind.PERSON,
        first_name="Bruno",
        last_name="Private",
        phones=["0612345679"],
        responsible_user_id=bob.id,
        visibility=Visibility.PRIVATE,
        tags=["vip"],
    )
    await env.store.clients.create(
        ClientKind.COMPANY,
        name='=HYPERLINK("http://evil")',
        phones=["0612345670"],
        responsible_user_id=alice.id,
        visibility=Visibility.PRIVATE,
    )
    answer = await env.client.get("/api/exports/clients", headers=env.auth("alice"))
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/csv; charset=utf-8"
    assert 'filename="clients-' in answer.headers["content-disposition"]
    assert answer.content.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(answer.content.decode("utf-8-sig"))))
    assert rows[0][:6] == ["name", "kind", "first_name", "last_name", "company", "phones"]
    assert [r[0] for r in rows[1:]] == ['\'=HYPERLINK("http://evil")', "Anne Shared"]
    assert rows[2][5] == "'+33612345678"

    as_bob = await env.client.get(
        "/api/exports/clients", params={"format": "xlsx", "tag": "vip"}, headers=env.auth("bob")
    )
    assert as_bob.status_code == 200
    book = openpyxl.load_workbook(io.BytesIO(as_bob.content), read_only=True)
    values = [[c.value for c in row] for row in book.worksheets[0].iter_rows()]
    assert [v[0] for v in values[1:]] == ["Anne Shared", "Bruno Private"]
    raw = zipfile.ZipFile(io.BytesIO(as_bob.content)).read("xl/worksheets/sheet1.xml")
    assert b"<f>" not in raw

    sue = await env.client.get("/api/exports/clients", headers=env.auth("sue"))
    assert len(list(csv.reader(io.StringIO(sue.content.decode("utf-8-sig"))))) == 4

    # A private client shared with alice is in her export, as in her list.
    await env.store.clients.create(
        ClientKind.PERSON,
        first_name="Chloe",
        last_name="Shared",
        phones=["0612345671"],
        responsible_user_id=bob.id,
        visibility=Visibility.PRIVATE,
        shared_with=[alice.id],
    )
    again = await env.client.get("/api/exports/clients", headers=env.auth("alice"))
    names = [r[0] for r in csv.reader(io.StringIO(again.content.decode("utf-8-sig")))][1:]
    assert names == ['\'=HYPERLINK("http://evil")', "Anne Shared", "Chloe Shared"]
    bad = await env.client.get(
        "/api/exports/clients", params={"format": "pdf"}, headers=env.auth("alice")
    )
    assert bad.status_code == 400
    assert bad.json()["error"]["details"]["path"] == "query.format"


async def test_call_list_from_a_filter_and_the_do_not_call_list(env: Env) -> None:
    bob = env.users["bob"]
    await env.store.clients.create(
        ClientKind.PERSON, first_name="Anne", phones=["0612345678", "0145454545"], tags=["relance"]
    )
    await env.store.clients.create(
        ClientKind.PERSON,
        first_name="Bruno",
        phones=["0612345679"],
        tags=["relance"],
        responsible_user_id=bob.id,
        visibility=Visibility.PRIVATE,
    )
    made = await env.client.post(
        "/api/call-lists",
        json={"name": "Relance", "source": "clients", "tags": ["relance"]},
        headers=env.auth("alice"),
    )
    assert made.status_code == 201, made.text
    assert made.json()["contacts"] == 1
    assert made.json()["added"] == 2
    bad = await env.client.post(
        "/api/call-lists", json={"name": "", "source": "clients"}, headers=env.auth("alice")
    )
    assert bad.status_code == 400
    assert bad.json()["error"]["details"]["path"] == "name"

    sue = env.auth("sue")
    refused = await env.client.post(
        "/api/do-not-call", json={"number": "0612345678"}, headers=env.auth("alice")
    )
    assert refused.status_code == 403
    added = await env.client.post(
        "/api/do-not-call", json={"number": "06 12 34 56 78", "reason": "asked"}, headers=sue
    )
    assert added.status_code == 201
    assert added.json()["number"] == "+33612345678"
    prefix = await env.client.post(
        "/api/do-not-call", json={"number": "+3389", "prefix": True}, headers=sue
    )
    assert prefix.status_code == 201
    wrong = await env.client.post(
        "/api/do-not-call", json={"number": "33x", "prefix": True}, headers=sue
    )
    assert wrong.status_code == 400
    assert wrong.json()["error"]["details"]["path"] == "number"
    twice = await env.client.post("/api/do-not-call", json={"number": "0612345678"}, headers=sue)
    assert twice.status_code == 409
    listed = (await env.client.get("/api/do-not-call", headers=env.auth("alice"))).json()
    assert [(e["number"], e["prefix"]) for e in listed] == [
        ("+33612345678", False),
        ("+3389", True),
    ]
    gone = await env.client.delete(f"/api/do-not-call/{listed[0]['id']}", headers=sue)
    assert gone.status_code == 204
    assert len((await env.client.get("/api/do-not-call", headers=sue)).json()) == 1
