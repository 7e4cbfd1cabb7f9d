"""What the dialer stores: do-not-call entries, sessions, attempts, list building."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest

from crm_store import (
    CallEndReason,
    CallListItemState,
    ClientKind,
    Conflict,
    ImportRejected,
    InvalidPhone,
    LeadStatus,
    Store,
    read_numbers,
)

NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


async def test_do_not_call_matches_numbers_and_prefixes(store: Store) -> None:
    number = await store.dialer.add_do_not_call("06 12 34 56 78", reason="asked")
    assert number.number == "+33612345678"
    await store.dialer.add_do_not_call("0033 1 42", prefix=True)
    with pytest.raises(Conflict):
        await store.dialer.add_do_not_call("+33612345678")
    with pytest.raises(InvalidPhone):
        await store.dialer.add_do_not_call("33x", prefix=True)

    match = await store.dialer.do_not_call_match("+33612345678")
    assert match is not None
    assert (match.number, match.prefix, match.reason) == ("+33612345678", False, "asked")
    prefix = await store.dialer.do_not_call_match("+33142685300")
    assert prefix is not None
    assert (prefix.number, prefix.prefix) == ("+33142", True)
    assert await store.dialer.do_not_call_match("+33612345679") is None

    await store.dialer.remove_do_not_call(number.id)
    assert await store.dialer.do_not_call_match("+33612345678") is None
    assert [e.number for e in await store.dialer.do_not_call()] == ["+33142"]


async def test_sessions_are_stored_and_listed_by_origin_and_state(store: Store) -> None:
    call_list, _ = await store.call_lists.create_list("l", None, ["0612345678"])
    one = await store.dialer.create_session("alice", call_list.id, origin="paris")
    await store.dialer.create_session("bob", call_list.id, origin="lyon")
    await store.dialer.update_session(one.id, state="paused", dialed=3, answered=1)
    active = await store.dialer.sessions(origin="paris", states=("running", "paused"))
    assert [(s.agent, s.state, s.dialed, s.answered) for s in active] == [("alice", "paused", 3, 1)]


async def test_attempt_is_written_with_its_call_and_recovered_from_it(store: Store) -> None:
    call_list, _ = await store.call_lists.create_list("l", None, ["0612345678", "0612345679"])
    first = await store.call_lists.claim_next(call_list.id, None, now=NOW)
    second = await store.call_lists.claim_next(call_list.id, None, now=NOW)
    assert first is not None
    assert second is not None
    call = await store.dialer.start_attempt(
        first.id,
        from_number="2001",
        to_number="+33612345678",
        agent_user_id=None,
        client_id=None,
        lead_id=None,
        origin="t",
        worker_id="t/agent-2001",
        line="2001",
    )
    assert call.dialer_item_id == first.id
    with pytest.raises(Conflict):
        await store.dialer.start_attempt(
            first.id,
            from_number="2001",
            to_number="+33612345678",
            agent_user_id=None,
            client_id=None,
            lead_id=None,
            origin="t",
            worker_id="t/agent-2001",
            line="2001",
        )
    # A restart: the claimed item goes back, the dialing one keeps its call.
    assert await store.dialer.release_claims(call_list.id, None) == 1
    pending = await store.dialer.pending_attempts(call_list.id)
    assert [(p.item.id, p.call.id if p.call else None) for p in pending] == [(first.id, call.id)]
    assert await store.dialer.remaining(call_list.id) == 2
    await store.call_lists.record_result(first.id, CallEndReason.BUSY, call.id)
    assert await store.dialer.remaining(call_list.id) == 1


async def test_defer_and_release_one_item(store: Store) -> None:
    call_list, _ = await store.call_lists.create_list("l", None, ["0612345678"])
    item = await store.call_lists.claim_next(call_list.id, None, now=NOW)
    assert item is not None
    later = NOW + timedelta(hours=3)
    deferred = await store.dialer.defer(item.id, later, "outside_calling_hours: Sun")
    assert deferred.state is CallListItemState.PENDING
    assert deferred.skip_reason == "outside_calling_hours: Sun"
    assert await store.call_lists.claim_next(call_list.id, None, now=NOW) is None
    assert await store.dialer.next_due(call_list.id) == later
    again = await store.call_lists.claim_next(call_list.id, None, now=later)
    assert again is not None
    assert await store.dialer.release_item(again.id)
    assert not await store.dialer.release_item(again.id)


async def test_lists_are_built_from_client_and_lead_filters(store: Store) -> None:
    owner = await store.users.add("alice", "Alice")
    vip = await store.clients.create(
        ClientKind.PERSON,
        first_name="A",
        phones=["0612345678"],
        tags=["vip", "paris"],
        responsible_user_id=owner.id,
    )
    await store.clients.create(
        ClientKind.PERSON, first_name="B", phones=["0612345679"], tags=["vip"]
    )
    entries = await store.dialer.entries_from_clients(tags=["vip", "paris"])
    assert [(e.number, e.client_id) for e in entries] == [("+33612345678", vip.id)]
    assert len(await store.dialer.entries_from_clients(tags=["vip"])) == 2
    assert len(await store.dialer.entries_from_clients(owner=owner.id)) == 1
    future = datetime.now(UTC) + timedelta(days=1)
    assert await store.dialer.entries_from_clients(created_from=future) == []

    lead = await store.leads.create(first_name="L", phones=["0612345670"], owner_user_id=owner.id)
    await store.leads.create(first_name="M", phones=["0612345671"], status=LeadStatus.DONE)
    open_leads = await store.dialer.entries_from_leads(
        statuses=[LeadStatus.UNPROCESSED, LeadStatus.IN_PROGRESS]
    )
    assert [(e.number, e.lead_id) for e in open_leads] == [("+33612345670", lead.id)]
    _list, report = await store.call_lists.create_list("vip", None, entries)
    assert report.added == 1


def test_csv_column_is_read_by_name() -> None:
    data = b"name;phone\nAnn;06 12 34 56 78\n\nBob;+33 1 42 68 53 00\nEve;nope\n"
    entries = read_numbers(data, column="Phone")
    assert [e.number for e in entries] == ["06 12 34 56 78", "+33 1 42 68 53 00", "nope"]


def test_bad_csv_rows_are_reported_by_line_and_nothing_is_read() -> None:
    data = b"name,phone\nAnn,0612345678\nBob\nCid,0612345679\nDan\n"
    with pytest.raises(ImportRejected) as rejected:
        read_numbers(data, column="phone")
    assert [(e.line, e.message) for e in rejected.value.errors] == [
        (3, "1 fields, no column 2"),
        (5, "1 fields, no column 2"),
    ]
    with pytest.raises(ImportRejected, match="no column named 'mobile'"):
        read_numbers(data, column="mobile")
    with pytest.raises(ImportRejected, match="line 2: not UTF-8"):
        read_numbers(b"phone\n\xff\xfe\n", column=0)


def test_xlsx_numbers_stored_as_numbers_keep_their_digits() -> None:
    # openpyxl reads XLSX imports; it is not a dependency of the package yet.
    openpyxl = pytest.importorskip("openpyxl")
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["Name", "Phone"])
    sheet.append(["Ann", 33612345678])
    sheet.append(["Bob", "06 12 34 56 79"])
    buffer = io.BytesIO()
    book.save(buffer)
    entries = read_numbers(buffer.getvalue(), format="xlsx", column="phone")
    assert [e.number for e in entries] == ["33612345678", "06 12 34 56 79"]
    with pytest.raises(ImportRejected, match="not an XLSX workbook"):
        read_numbers(b"not a zip", format="xlsx")


async def test_import_then_create_list_is_all_or_nothing(store: Store) -> None:
    good = b"phone\n+33612345678\n0612345678\n12\n"
    call_list, report = await store.call_lists.create_list(
        "import", None, read_numbers(good, column="phone")
    )
    assert (report.total, report.added, report.duplicates) == (3, 2, 1)
    assert report.invalid == (("12", "too short"),)
    items = await store.call_lists.items(call_list.id)
    assert [i.state for i in items] == [CallListItemState.PENDING, CallListItemState.INVALID]
