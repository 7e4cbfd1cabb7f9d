"""The scale-out gateway (``switchboard gateway``) follows revocations in the store
as the daemon's gateway does: the affected sessions are closed with 4401."""

from __future__ import annotations

import asyncio
import time

from .test_gateway_process import Client, Scaleout
from .test_gateway_process import scaleout as scaleout  # the fixture


async def test_scaleout_gateway_closes_a_revoked_session_with_4401_within_a_second(
    scaleout: Scaleout,
) -> None:
    _, port = await scaleout.gateway()
    sue, _ = await Client.open(scaleout.stack, port, scaleout.tokens["sue"])
    alice, _ = await Client.open(scaleout.stack, port, scaleout.tokens["alice"])
    user = await scaleout.store.users.by_username("sue")
    assert user is not None
    [token] = await scaleout.store.users.list_tokens(user.id)
    await scaleout.store.users.revoke_token(token.id)
    started = time.monotonic()
    async with asyncio.timeout(1.0):
        await sue.ws.wait_closed()
    assert time.monotonic() - started < 1.0
    assert (sue.ws.close_code, sue.ws.close_reason) == (4401, "access revoked")
    assert alice.ws.close_code is None
