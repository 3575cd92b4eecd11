"""The revocation entries GET /revoked publishes, in both stores."""

from __future__ import annotations

import time

from mtlsauth.issuer.store import Store
from mtlsauth.issuer.store.base import client_revocation_id


async def test_revoked_tokens_and_clients(store: Store) -> None:
    now = time.time()
    await store.revoke_token("jti-live", "c1", now + 60)
    await store.revoke_token("jti-expired", "c1", now - 1)
    await store.revoke_client("c2", now + 600)
    first = {jti: (exp, at) for jti, exp, at in await store.revoked_tokens(now)}
    assert set(first) == {"jti-live", client_revocation_id("c2")}
    assert first["jti-live"][0] == now + 60
    assert now - 5 < first[client_revocation_id("c2")][1] <= time.time()
    # Removed again later (re-registered, then removed): the newer time counts.
    await store.revoke_client("c2", now + 1200)
    again = {jti: (exp, at) for jti, exp, at in await store.revoked_tokens(now)}
    assert again[client_revocation_id("c2")][0] == now + 1200
    assert again[client_revocation_id("c2")][1] >= first[client_revocation_id("c2")][1]
    assert not await store.is_token_revoked("c2")
