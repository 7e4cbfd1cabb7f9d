"""Customers hang up on callers whose Contact carries a display name.

Desk phones and Switchboard's lines send ``"Name" <sip:...>``; the customers must
address their in-dialog requests to the bare URI, or Kamailio refuses the BYE.
"""

from __future__ import annotations

import pytest

from lab.customers import Behaviour, customer_number
from lab.phones import PhoneSpec
from lab.runner import Lab


@pytest.fixture
def lab_phones() -> list[str | PhoneSpec]:
    return [PhoneSpec("1001", display_name="Desk 1001")]


async def test_customer_hangs_up_on_a_caller_with_a_display_name(lab: Lab) -> None:
    phone = lab.phones["1001"]
    call = await phone.call(lab.uri(customer_number(Behaviour.ANSWER, ring=0, talk=1, suffix=11)))
    ended = await phone.wait_call_ended(timeout=8)
    assert call.answered
    # The customer's BYE reached the phone: a normal clearing, not a timeout.
    assert ended.data["reason"] == "Normal call clearing"


async def test_inbound_customer_hangs_up_on_a_callee_with_a_display_name(lab: Lab) -> None:
    phone = lab.phones["1001"]
    call = await lab.customers.call("1001", "+33612345678", talk_seconds=1)
    assert await call.wait(timeout=10)
    ended = await phone.wait_call_ended(timeout=5)
    assert ended.data["reason"] == "Normal call clearing"
