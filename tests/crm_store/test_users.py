from __future__ import annotations

import pytest

from crm_store import Conflict, Role, Store


async def test_token_issue_authenticate_revoke(store: Store) -> None:
    user = await store.users.add("ada", "Ada", Role.AGENT, extension="1001")
    token, plaintext = await store.users.issue_token(user.id, "widget")
    assert plaintext.startswith("sbt_")
    assert len(plaintext) > 40

    authenticated = await store.users.authenticate(plaintext)
    assert authenticated == user
    [listed] = await store.users.list_tokens(user.id)
    assert listed.id == token.id
    # The check is a read; the use is written by the next flush, once a minute.
    assert listed.last_used_at is None
    assert await store.users.flush_last_used() == 1
    [listed] = await store.users.list_tokens(user.id)
    assert listed.last_used_at is not None
    assert await store.users.authenticate(plaintext) == user
    assert await store.users.flush_last_used() == 0

    revoked = await store.users.revoke_token(token.id)
    assert revoked.revoked_at is not None
    assert await store.users.authenticate(plaintext) is None


async def test_token_users_names_the_tokens_that_still_authenticate(store: Store) -> None:
    ada = await store.users.add("ada", "Ada", Role.AGENT)
    bob = await store.users.add("bob", "Bob", Role.SUPERVISOR)
    _, kept = await store.users.issue_token(ada.id, "a")
    revoked, gone = await store.users.issue_token(ada.id, "b")
    _, disabled = await store.users.issue_token(bob.id, "c")
    await store.users.revoke_token(revoked.id)
    await store.users.set_active(bob.id, False)
    found = await store.users.token_users([kept, gone, disabled, "sbt_unknown", "nope"])
    assert found == {kept: ada}
    demoted = await store.users.set_role(ada.id, Role.AGENT)
    assert (await store.users.token_users([kept]))[kept] == demoted


async def test_tokens_of_inactive_users_do_not_authenticate(store: Store) -> None:
    user = await store.users.add("bob", "Bob", Role.SUPERVISOR)
    _, plaintext = await store.users.issue_token(user.id, "feed")
    await store.users.set_active(user.id, False)
    assert await store.users.authenticate(plaintext) is None
    await store.users.set_active(user.id, True)
    assert await store.users.authenticate(plaintext) is not None


async def test_unknown_and_malformed_tokens_do_not_authenticate(store: Store) -> None:
    assert await store.users.authenticate("sbt_" + "x" * 43) is None
    assert await store.users.authenticate("not-a-token") is None


async def test_plaintext_token_is_not_stored(store: Store) -> None:
    user = await store.users.add("eve", "Eve", Role.ADMIN)
    _, plaintext = await store.users.issue_token(user.id, "cli")
    async with store.engine.connect() as conn:
        from sqlalchemy import text

        rows = (await conn.execute(text("SELECT token_hash FROM api_tokens"))).scalars().all()
        audit = (await conn.execute(text("SELECT changes FROM audit_log"))).scalars().all()
    assert plaintext not in rows
    assert all(plaintext not in str(changes) for changes in audit)


async def test_duplicate_username_conflicts(store: Store) -> None:
    await store.users.add("ada", "Ada")
    with pytest.raises(Conflict):
        await store.users.add("ada", "Another Ada")
    assert [u.username for u in await store.users.list()] == ["ada"]
    assert await store.users.by_username("nobody") is None
