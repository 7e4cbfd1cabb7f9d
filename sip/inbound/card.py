"""Who is calling: the caller looked up (or made a lead), and the card shown when
an inbound call rings."""

from __future__ import annotations

from typing import Any

import phonenumbers
import structlog

from crm_store import CallerMatch, LeadSource, Store, StoreError, Visibility

__all__ = ["caller_card", "identify", "warm_up"]

log = structlog.get_logger(__name__)


def caller_card(match: CallerMatch | None, *, created: bool = False) -> dict[str, Any] | None:
    """The caller's card for ``CallRinging.card``: plain JSON values, or None.

    Always ``kind`` (``client``/``lead``), ``id``, ``display_name``, ``phone``
    (E.164) and ``created`` (the lead was created by this call); a client adds
    ``client_kind``, ``company``, ``tags``, ``responsible_user_id``; a lead
    ``status``, ``source``, ``owner_user_id``, ``tags`` (see ``docs/protocol.md``).

    The event goes to every principal who may see the call, not only those who
    may open the client: a private client's card is therefore only ``client``,
    its id and the number (``private`` true, ``display_name`` empty), and the
    widget asks the HTTP API for the rest, which answers only those allowed.
    """
    if match is None:
        return None
    card: dict[str, Any] = {
        "kind": match.kind,
        "id": str(match.id),
        "display_name": match.display_name,
        "phone": match.phone,
        "created": created,
    }
    if match.client is not None and match.client.visibility is Visibility.PRIVATE:
        card["display_name"] = ""
        card["private"] = True
        card["tags"] = []
    elif match.client is not None:
        client = match.client
        card["client_kind"] = client.kind.value
        card["company"] = client.company_name
        card["tags"] = list(client.tags)
        card["responsible_user_id"] = (
            str(client.responsible_user_id) if client.responsible_user_id is not None else None
        )
    elif match.lead is not None:
        lead = match.lead
        card["status"] = lead.status.value
        card["source"] = lead.source.value
        card["owner_user_id"] = str(lead.owner_user_id) if lead.owner_user_id is not None else None
        card["tags"] = []  # leads have no tags (yet); the key is there for the widget
    return card


async def identify(
    store: Store, number: str, *, create_lead: bool
) -> tuple[CallerMatch | None, bool]:
    """The client or lead with the E.164 ``number``, and whether this call created it.

    With ``create_lead`` an unknown number becomes a lead (source
    ``incoming_call``). A store error is logged and gives no match: the call
    matters more than its card, it rings on without one.
    """
    try:
        match = await store.lookup_caller(number)
        if match is None and create_lead:
            return await store.leads.find_or_create_for_number(number, LeadSource.INCOMING_CALL)
    except StoreError as exc:
        log.error("inbound.lookup_failed", error=str(exc))
        return None, False
    return match, False


async def warm_up(store: Store, region: str) -> None:
    """Look an example number of ``region`` up, so that the first caller lookup of
    the process does not pay for opening the store's reader connection."""
    example = phonenumbers.example_number(region)
    if example is None:
        return
    number = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)
    try:
        await store.lookup_caller(number)
    except StoreError as exc:
        log.warning("inbound.warm_up_failed", error=str(exc))
