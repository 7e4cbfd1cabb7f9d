"""A small, believable CRM data set for the demo and the browser tests.

:func:`seed` writes into a migrated store: the users (the example configuration's
agents, a supervisor and an admin) with the passwords given, companies and people
with phones, e-mails, tags and responsible users (one of them private to one
agent), leads waiting in the pool, open tasks, a call list of lab customers who
answer, and a short history of past calls — some missed, some with a disposition
and a note, some with a recording written as a real one is (a WAV file named after
the call in the recordings directory, attached to the call record).

Seeding is idempotent: every record is looked up before it is written (users by
name, contacts by phone number, tasks by title, the list by name, calls by a fixed
id), so a second run writes nothing and leaves existing passwords alone.

Numbers of known contacts belong to the lab's number plan (``+4930199...``,
behaviour "answer"), so calling a card's number from the widget reaches a lab
customer who answers, and a lab customer calling with that number is recognised.
"""

from __future__ import annotations

import asyncio
import math
import os
import secrets
import struct
import uuid
import wave
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from crm_store import (
    CallDirection,
    CallEndReason,
    CallListEntry,
    ClientKind,
    CustomFieldType,
    NotFound,
    PhoneKind,
    Role,
    Store,
    TaskKind,
    Visibility,
)
from lab.customers import Behaviour, customer_number

__all__ = [
    "CALL_LIST_NAME",
    "DEMO_AGENTS",
    "RECEPTION",
    "SeedAgent",
    "SeedReport",
    "SeedUser",
    "call_list_numbers",
    "demo_users",
    "known_numbers",
    "load_or_create_passwords",
    "seed",
    "unknown_number",
]

#: The reception line of the example configuration: customers' calls arrive there.
RECEPTION = "2100"
CALL_LIST_NAME = "Spring campaign"
#: Fixed ids of the seeded calls derive from this namespace (idempotence).
_CALLS_NS = uuid.UUID("6f1c4e2a-5b3d-4c8e-9a7f-2d1e0b9c8a75")
_RATE = 8000


@dataclass(frozen=True, slots=True)
class SeedAgent:
    """An ``[[agents]]`` table's user: user name, display name, desk phone extension."""

    user: str
    name: str
    extension: str


@dataclass(frozen=True, slots=True)
class SeedUser:
    user: str
    name: str
    role: Role
    extension: str | None = None


#: The example configuration's agents (config/examples/switchboard.toml).
DEMO_AGENTS = (
    SeedAgent("alice", "Alice", "1001"),
    SeedAgent("bob", "Bob", "1002"),
    SeedAgent("chloe", "Chloé", "1003"),
)
_OTHERS = (
    SeedUser("samira", "Samira Haddad", Role.SUPERVISOR),
    SeedUser("admin", "Administrator", Role.ADMIN),
)


def demo_users(agents: Sequence[SeedAgent] = DEMO_AGENTS) -> tuple[SeedUser, ...]:
    """Every user the seed creates: the agents, then a supervisor and an admin."""
    return (*(SeedUser(a.user, a.name, Role.AGENT, a.extension) for a in agents), *_OTHERS)


def _answering(suffix: int) -> str:
    """A lab customer who answers after a second and talks until hung up on."""
    return customer_number(Behaviour.ANSWER, ring=1, talk=0, suffix=str(suffix))


def known_numbers() -> dict[str, str]:
    """Display name → phone of the seeded people and leads, all lab customers who
    answer (so a simulated caller with one of them is recognised)."""
    return {name: phone for name, phone, *_ in _PEOPLE} | {
        name: phone for name, phone, *_ in _LEADS
    }


def unknown_number(n: int) -> str:
    """A lab customer's number the seed does not know (``n`` makes it unique)."""
    return customer_number(Behaviour.ANSWER, ring=1, talk=0, suffix=f"9{n % 10000:04d}")


def call_list_numbers() -> list[str]:
    """The call list's numbers: lab customers who answer after 2 s and talk 12 s."""
    return [
        customer_number(Behaviour.ANSWER, ring=2, talk=12, suffix=str(300 + i)) for i in range(5)
    ]


# Companies: name, switchboard phone, e-mail, tags, responsible user.
_COMPANIES = (
    ("Boulangerie Petitjean", "+33142685300", "contact@petitjean.example",
     ("bakery", "vip"), "alice"),
    ("Atelier Moreau SARL", "+33478925610", "atelier@moreau.example", ("workshop",), "bob"),
    ("Kessler Logistik GmbH", "+493055512300", "info@kessler.example",
     ("logistics", "export"), "alice"),
)  # fmt: skip
# People: name, phone, (first, last), company or None, e-mail, tags, responsible, private.
_PEOPLE = (
    ("Camille Petitjean", _answering(101), ("Camille", "Petitjean"), "Boulangerie Petitjean",
     "camille@petitjean.example", ("vip",), "alice", False),
    ("Hugo Moreau", _answering(102), ("Hugo", "Moreau"), "Atelier Moreau SARL",
     "hugo@moreau.example", ("decision-maker",), "bob", False),
    ("Jonas Kessler", _answering(103), ("Jonas", "Kessler"), "Kessler Logistik GmbH",
     "jonas@kessler.example", ("export",), "alice", False),
    ("Léa Fontaine", _answering(104), ("Léa", "Fontaine"), None,
     "lea.fontaine@mail.example", ("friend-of-the-house",), "bob", True),
    ("Nadia Benali", _answering(105), ("Nadia", "Benali"), None,
     "nadia.benali@mail.example", ("newsletter",), "chloe", False),
)  # fmt: skip
# Leads in the pool (no owner): name, phone, (first, last), company, note.
_LEADS = (
    ("Théo Garnier", _answering(201), ("Théo", "Garnier"), "Garnier Paysage",
     "Asked for a quote at the trade fair."),
    ("Inès Roussel", _answering(202), ("Inès", "Roussel"), None, "Filled in the web form."),
    ("Marco Bianchi", _answering(203), ("Marco", "Bianchi"), "Bianchi Import",
     "Met at the Lyon show; imports Italian ovens."),
)  # fmt: skip
# Open tasks: title, kind, contact name, assignee, due in hours.
_TASKS = (
    ("Call back about the spring order", TaskKind.CALL, "Camille Petitjean", "alice", 20),
    ("Send the signed quote", TaskKind.EMAIL, "Hugo Moreau", "bob", 44),
    ("Plan a visit of the warehouse", TaskKind.MEETING, "Jonas Kessler", "alice", 70),
    ("Qualify the lead", TaskKind.CALL, "Théo Garnier", "chloe", 26),
)


@dataclass(frozen=True, slots=True)
class _PastCall:
    key: str
    direction: CallDirection
    agent: str
    contact: str | None  # a seeded name, or None for an unknown number
    hours_ago: float
    talk: int  # seconds; 0: not answered
    reason: CallEndReason
    disposition: str | None = None
    note: str | None = None
    recorded: bool = False


_CALLS = (
    _PastCall("c01", CallDirection.INBOUND, "alice", "Camille Petitjean", 2.5, 74,
              CallEndReason.COMPLETED, "interested", "Wants the spring catalogue.", True),
    _PastCall("c02", CallDirection.OUTBOUND, "alice", "Jonas Kessler", 5, 181,
              CallEndReason.COMPLETED, "callback", "Call again after the inventory.", True),
    _PastCall("c03", CallDirection.INBOUND, "alice", None, 7, 0, CallEndReason.CANCELLED),
    _PastCall("c04", CallDirection.INBOUND, "alice", "Nadia Benali", 22, 0,
              CallEndReason.NO_ANSWER),
    _PastCall("c05", CallDirection.OUTBOUND, "alice", "Théo Garnier", 26, 95,
              CallEndReason.COMPLETED, "sale", "Ordered two planters.", True),
    _PastCall("c06", CallDirection.INBOUND, "bob", "Hugo Moreau", 3, 48,
              CallEndReason.COMPLETED, "interested", None, True),
    _PastCall("c07", CallDirection.OUTBOUND, "bob", "Léa Fontaine", 27, 0, CallEndReason.BUSY),
    _PastCall("c08", CallDirection.INBOUND, "bob", None, 30, 0, CallEndReason.CANCELLED),
    _PastCall("c09", CallDirection.OUTBOUND, "chloe", "Marco Bianchi", 4, 132,
              CallEndReason.COMPLETED, "not interested", "Has a supplier already."),
    _PastCall("c10", CallDirection.INBOUND, "chloe", "Inès Roussel", 50, 37,
              CallEndReason.COMPLETED, "wrong number"),
)  # fmt: skip

_AGENT_LINES = {"alice": "2001", "bob": "2002", "chloe": "2003"}


@dataclass
class SeedReport:
    """How many records of each kind one run of :func:`seed` wrote (all zero when
    everything was there already)."""

    created: dict[str, int] = field(default_factory=dict)

    def add(self, kind: str) -> None:
        self.created[kind] = self.created.get(kind, 0) + 1

    @property
    def total(self) -> int:
        return sum(self.created.values())


def load_or_create_passwords(path: Path, usernames: Sequence[str]) -> dict[str, str]:
    """The demo users' passwords, kept in ``path`` (``user<TAB>password`` lines).

    Passwords already in the file are kept; missing users get a new random one and
    the file is rewritten. The file is created with mode 0600 and its mode is set
    to 0600 again on each rewrite (it holds plaintext passwords).
    """
    known: dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            user, sep, password = line.partition("\t")
            if sep and user and password:
                known[user] = password
    missing = [u for u in usernames if u not in known]
    if missing or not path.exists():
        for user in missing:
            known[user] = secrets.token_urlsafe(12)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write("".join(f"{u}\t{p}\n" for u, p in known.items()))
    return known


async def seed(
    store: Store,
    *,
    passwords: Mapping[str, str],
    recordings: Path,
    agents: Sequence[SeedAgent] = DEMO_AGENTS,
    now: datetime | None = None,
) -> SeedReport:
    """Write the demo data set into ``store`` (migrated) where it is missing.

    ``passwords`` gives each new user's password (a user who exists keeps theirs;
    a user without an entry gets none and cannot log in). Recordings are written
    into ``recordings`` (created if needed) as ``<call id>.wav``. ``now`` anchors
    the past calls and the tasks' due dates (default: the current time); it only
    matters for records that are created. Not atomic: a cancelled seed leaves what
    it wrote, and the next run completes it.
    """
    now = now or datetime.now(UTC)
    report = SeedReport()
    users = await _users(store, demo_users(agents), passwords, report)
    await _definitions(store, report)
    contacts = await _contacts(store, users, report)
    await _tasks(store, users, contacts, now, report)
    await _call_list(store, users, report)
    await _calls(store, users, contacts, recordings, now, report)
    return report


async def _users(
    store: Store, wanted: Sequence[SeedUser], passwords: Mapping[str, str], report: SeedReport
) -> dict[str, uuid.UUID]:
    ids: dict[str, uuid.UUID] = {}
    for spec in wanted:
        user = await store.users.by_username(spec.user)
        if user is None:
            user = await store.users.add(spec.user, spec.name, spec.role, spec.extension)
            if spec.user in passwords:
                await store.users.set_password(user.id, passwords[spec.user])
            report.add("users")
        ids[spec.user] = user.id
    return ids


_Contact = tuple[str, uuid.UUID]  # ("client" | "lead", id)

# The client fields admins define: key, label, type, choices.
_FIELDS = (
    ("segment", "Segment", CustomFieldType.CHOICE, ("retail", "wholesale", "industry")),
    ("contract_value", "Contract value", CustomFieldType.NUMBER, ()),
    ("renewal", "Renewal", CustomFieldType.DATE, ()),
)


async def _definitions(store: Store, report: SeedReport) -> None:
    """The seeded clients' tags as defined tags, and the custom fields."""
    wanted = sorted(
        {t for *_, tags, _o in _COMPANIES for t in tags}
        | {t for _n, _p, _f, _c, _e, tags, _o, _v in _PEOPLE for t in tags}
    )
    have = set(await store.definitions.tags())
    for tag in wanted:
        if tag not in have:
            await store.definitions.define_tag(tag)
            report.add("tags")
    keys = {f.key for f in await store.definitions.fields()}
    for key, label, kind, choices in _FIELDS:
        if key not in keys:
            await store.definitions.define_field(key, label, kind, choices=choices)
            report.add("custom_fields")


async def _contacts(
    store: Store, users: Mapping[str, uuid.UUID], report: SeedReport
) -> dict[str, _Contact]:
    found: dict[str, _Contact] = {}
    companies: dict[str, uuid.UUID] = {}
    for name, phone, email, tags, owner in _COMPANIES:
        match = await store.lookup_caller(phone)
        if match is None:
            client = await store.clients.create(
                ClientKind.COMPANY,
                name=name,
                emails=[email],
                phones=[(phone, PhoneKind.WORK)],
                tags=tags,
                responsible_user_id=users.get(owner),
            )
            report.add("clients")
            companies[name] = client.id
        else:
            companies[name] = match.id
        found[name] = ("client", companies[name])
    for name, phone, (first, last), company, email, tags, owner, private in _PEOPLE:
        match = await store.lookup_caller(phone)
        if match is None:
            client = await store.clients.create(
                ClientKind.PERSON,
                first_name=first,
                last_name=last,
                company_id=companies.get(company) if company else None,
                emails=[email],
                phones=[(phone, PhoneKind.MOBILE)],
                tags=tags,
                responsible_user_id=users.get(owner),
                visibility=Visibility.PRIVATE if private else Visibility.SHARED,
            )
            report.add("clients")
            found[name] = ("client", client.id)
        else:
            found[name] = (match.kind, match.id)
    for name, phone, (first, last), company, note in _LEADS:
        match = await store.lookup_caller(phone)
        if match is None:
            lead = await store.leads.create(
                first_name=first,
                last_name=last,
                company_name=company,
                phones=[(phone, PhoneKind.MOBILE)],
                note=note,
            )
            report.add("leads")
            found[name] = ("lead", lead.id)
        else:
            found[name] = (match.kind, match.id)
    return found


async def _tasks(
    store: Store,
    users: Mapping[str, uuid.UUID],
    contacts: Mapping[str, _Contact],
    now: datetime,
    report: SeedReport,
) -> None:
    for title, kind, contact, assignee, due_in in _TASKS:
        which, contact_id = contacts[contact]
        client_id = contact_id if which == "client" else None
        lead_id = contact_id if which == "lead" else None
        existing = await store.tasks.for_entity(client_id=client_id, lead_id=lead_id)
        if any(t.title == title for t in existing):
            continue
        due = (now + timedelta(hours=due_in)).replace(minute=0, second=0, microsecond=0)
        await store.tasks.create(
            title,
            kind=kind,
            due_at=due,
            assignee_user_id=users.get(assignee),
            client_id=client_id,
            lead_id=lead_id,
        )
        report.add("tasks")


async def _call_list(store: Store, users: Mapping[str, uuid.UUID], report: SeedReport) -> None:
    if any(name == CALL_LIST_NAME for _, name, _, _ in await store.contacts.call_list_progress()):
        return
    entries = [CallListEntry(n) for n in call_list_numbers()]
    await store.call_lists.create_list(CALL_LIST_NAME, users.get("alice"), entries)
    report.add("call_lists")


def _call_id(key: str) -> uuid.UUID:
    return uuid.uuid5(_CALLS_NS, key)


async def _calls(
    store: Store,
    users: Mapping[str, uuid.UUID],
    contacts: Mapping[str, _Contact],
    recordings: Path,
    now: datetime,
    report: SeedReport,
) -> None:
    phones = {name: phone for name, phone, *_ in _PEOPLE} | {
        name: phone for name, phone, *_ in _LEADS
    }
    for n, spec in enumerate(_CALLS):
        call_id = _call_id(spec.key)
        try:
            await store.calls.get(call_id)
            continue
        except NotFound:
            pass
        line = _AGENT_LINES.get(spec.agent, RECEPTION)
        number = phones[spec.contact] if spec.contact else unknown_number(n + 1)
        inbound = spec.direction is CallDirection.INBOUND
        client_id = lead_id = None
        if spec.contact:
            which, contact_id = contacts[spec.contact]
            if which == "client":
                client_id = contact_id
            else:
                lead_id = contact_id
        start = now - timedelta(hours=spec.hours_ago)
        start = start.replace(microsecond=0)
        await store.calls.create(
            spec.direction,
            number if inbound else line,
            RECEPTION if inbound else number,
            agent_user_id=users.get(spec.agent),
            client_id=client_id,
            lead_id=lead_id,
            line=RECEPTION if inbound else line,
            at=start,
            call_id=call_id,
        )
        ringing = start + timedelta(seconds=1)
        await store.calls.mark_ringing(call_id, ringing)
        ring_for = 6 + n % 5
        if spec.talk:
            answered = ringing + timedelta(seconds=ring_for)
            await store.calls.mark_answered(call_id, answered)
            ended = answered + timedelta(seconds=spec.talk)
        else:
            ended = ringing + timedelta(seconds=ring_for + 14)
        await store.calls.end(call_id, spec.reason, ended)
        if spec.disposition:
            await store.calls.set_disposition(call_id, spec.disposition)
        if spec.note:
            await store.calls.set_note(call_id, spec.note)
        if spec.recorded:
            path = recordings / f"{call_id}.wav"
            seconds = 8.0 + n % 4
            await asyncio.to_thread(write_conversation_wav, path, seconds, seed=n)
            await store.calls.attach_recording(call_id, str(path), seconds)
        report.add("calls")


def write_conversation_wav(path: Path, seconds: float, *, seed: int = 0) -> None:
    """A 16-bit mono 8 kHz WAV of ``seconds``: two voices taking turns (two tones
    with a syllable-like envelope), in place of a real call's audio. Written to a
    hidden partial name and renamed, as the SIP workers do."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = bytearray()
    turn = 1.6 + (seed % 3) * 0.3
    for i in range(int(seconds * _RATE)):
        t = i / _RATE
        speaker = int(t / turn) % 2
        hz = (440.0, 620.0)[speaker] * (1 + 0.03 * math.sin(2 * math.pi * 0.7 * t))
        envelope = max(0.0, math.sin(2 * math.pi * 3.1 * t)) * (0.15 if t % turn > 0.2 else 0)
        frames += struct.pack("<h", int(32767 * envelope * math.sin(2 * math.pi * hz * t)))
    partial = path.with_name(f".{path.stem}.part.wav")
    with wave.open(str(partial), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(_RATE)
        wav.writeframes(bytes(frames))
    partial.replace(path)
