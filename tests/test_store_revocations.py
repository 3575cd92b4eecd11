"""The revocation entries GET /revoked publishes, in both stores."""

from __future__ import annotations

import json
import time

from mtlsauth.issuer.revocation_feed import MAX_TOKENS_PER_CLIENT, RevocationFeed
from mtlsauth.issuer.store import Store
from mtlsauth.issuer.store.base import client_revocation_id


async def test_revoked_tokens_and_clients(store: Store) -> None:
    now = time.time()
    await store.revoke_token("jti-live", "c1", now + 60)
    await store.revoke_token("jti-expired", "c1", now - 1)
    await store.revoke_client("c2", now + 600)
    first = {jti: (exp, at) for jti, _cid, exp, at in await store.revoked_tokens(now)}
    assert set(first) == {"jti-live", client_revocation_id("c2")}
    assert first["jti-live"][0] == now + 60
    assert now - 5 < first[client_revocation_id("c2")][1] <= time.time()
    # Removed again later (re-registered, then removed): the newer time counts.
    await store.revoke_client("c2", now + 1200)
    again = {jti: (exp, at) for jti, _cid, exp, at in await store.revoked_tokens(now)}
    assert again[client_revocation_id("c2")][0] == now + 1200
    assert again[client_revocation_id("c2")][1] >= first[client_revocation_id("c2")][1]
    assert not await store.is_token_revoked("c2")


async def test_one_client_cannot_grow_the_published_list(store: Store) -> None:
    """A client revoking many of its own tokens is published as one client entry, so the list
    every resource server polls stays small (the review: one client pushed it past the 4 MiB
    resource servers accept, and then no revocation reached them)."""
    now = time.time()
    for n in range(MAX_TOKENS_PER_CLIENT + 30):
        await store.revoke_token(f"flood-{n}", "mal", now + 600)
    await store.revoke_token("honest-1", "svc", now + 600)
    document = json.loads((await RevocationFeed(store, "https://issuer").current()).body)
    assert document["tokens"] == [{"jti": "honest-1", "exp": now + 600}]
    (cut,) = document["clients"]
    assert (cut["client_id"], cut["until"]) == ("mal", now + 600)
    assert cut["revoked_at"] >= now
    # Up to the limit, token ids are published one by one.
    for n in range(MAX_TOKENS_PER_CLIENT - 1):
        await store.revoke_token(f"few-{n}", "svc", now + 600)
    document = json.loads((await RevocationFeed(store, "https://issuer").current()).body)
    assert len(document["tokens"]) == MAX_TOKENS_PER_CLIENT
