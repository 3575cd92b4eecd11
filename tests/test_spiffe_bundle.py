"""SPIFFE bundle endpoints (SPIFFE Trust Domain and Bundle §4, SPIFFE Federation §5): the
bundle's X.509 authorities become the anchor's trust roots on a running server, a rotation
reaches it within the refresh interval, a lower spiffe_sequence is refused (also across a
restart, from the store), and a dead endpoint is tolerated until the staleness budget, then
fails closed, then recovers.

The trust domain (CAs, SVIDs, the bundle) is built with cryptography alone
(tests/spiffe_domain.py) and served over https with a trustme certificate.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp.test_utils import unused_port

from mtlsauth.issuer.clientauth import SPIFFE_ASSERTION_TYPE
from mtlsauth.issuer.settings import Settings
from mtlsauth.issuer.store import Store, open_store
from mtlsauth.issuer.trust.anchors import TrustAnchor
from mtlsauth.issuer.trust.bundle import BundleError, parse_spiffe_bundle
from tests.conftest import (
    ClientCert,
    Home,
    Service,
    cli_json,
    eventually,
    fresh_database,
    running,
)
from tests.foreign_pki import ForeignPKI
from tests.spiffe_domain import BundleServer, TrustDomain, trust_bundle_endpoint_ca
from tests.test_stores import use_postgres

TD = "acme.example"


@pytest.fixture
async def endpoint(home: Home) -> AsyncIterator[BundleServer]:
    ca = trustme.CA()
    trust_bundle_endpoint_ca(home, ca)
    # Refresh hints of 1 s are obeyed (the default floor is 30 s), by servers and the CLI.
    config = home.path / "mtlsauth.toml"
    config.write_text(config.read_text() + "spiffe_bundle_min_refresh = 0.5\n")
    async with BundleServer(TrustDomain.create(TD), ca).serving() as server:
        yield server


def fast(home: Home) -> Settings:
    return dataclasses.replace(home.settings, trust_fetch_timeout=1)


async def register(home: Home, url: str, *extra: str) -> dict[str, Any]:
    anchor: dict[str, Any] = await asyncio.to_thread(
        cli_json, ["trust", "add", "--home", str(home.path), "--name", "acme",
                   "--spiffe-bundle-url", url, "--spiffe-trust-domain", TD, *extra])  # fmt: skip
    await home.aadd_client("--auth-method", "tls_client_auth", "--client-id", "svc",
                           "--trust", "acme", "--spiffe-id", f"spiffe://{TD}/ns/prod/*")  # fmt: skip
    return anchor


async def outcome(service: Service, cert: ClientCert) -> int | str:
    """The token request's status, or "tls" when the handshake refused the certificate."""
    try:
        status, body = await service.token(cert=cert, client_id="svc")
    except aiohttp.ClientError:
        return "tls"
    if status == 401:
        assert body["error"] == "invalid_client"
    return status


async def becomes(service: Service, cert: ClientCert, wanted: set[int | str], within: float
                  ) -> None:  # fmt: skip
    async def check() -> bool:
        return await outcome(service, cert) in wanted

    await eventually(check, within=within)


async def show(home: Home) -> dict[str, Any]:
    shown: dict[str, Any] = await asyncio.to_thread(
        cli_json, ["trust", "show", "acme", "--home", str(home.path), "--json"]
    )
    return shown


async def test_x509_svids_of_the_bundle_get_tokens_and_trust_show_reports_it(
    home: Home, endpoint: BundleServer, tmp_path: Path
) -> None:
    added = await register(home, endpoint.url)
    assert added["spiffe_bundle_url"] == endpoint.url
    assert added["roots"] == []
    assert added["spiffe_bundle"]["fetched"] is False
    svid = endpoint.domain.svid(tmp_path / "api", "/ns/prod/sa/api")
    outside = endpoint.domain.svid(tmp_path / "dev", "/ns/dev/sa/api")
    async with running(home, fast(home)) as service:
        await becomes(service, svid, {200}, within=5)
        assert await outcome(service, outside) == 401
        state = (await show(home))["spiffe_bundle"]
    assert state["fetched"] is True
    assert state["stale"] is False
    assert state["sequence"] == 1
    assert state["x509_authorities"] == 1
    assert state["jwt_keys"] == 1
    assert state["last_refresh"] <= state["next_refresh"]


async def test_a_ca_dropped_from_the_bundle_is_refused_after_the_refresh(
    home: Home, endpoint: BundleServer, tmp_path: Path
) -> None:
    domain = endpoint.domain
    domain.cas.append(ForeignPKI.create("Acme second"))
    await register(home, endpoint.url)
    old = domain.svid(tmp_path / "old", "/ns/prod/sa/api", ca=0)
    new = domain.svid(tmp_path / "new", "/ns/prod/sa/api", ca=1)
    async with running(home, fast(home)) as service:
        await becomes(service, old, {200}, within=5)
        assert await outcome(service, new) == 200
        # A keep-alive connection made with the old SVID before the rotation...
        async with aiohttp.ClientSession() as session:
            form = {"grant_type": "client_credentials", "client_id": "svc"}
            ctx = service.ssl_context(old)
            async with session.post(service.url + "/token", data=form, ssl=ctx) as resp:
                assert resp.status == 200
            domain.cas.pop(0)
            domain.sequence += 1
            rotated_at = time.monotonic()
            # ...a new handshake: refused once the refresh (hint 1 s) reached the server.
            await becomes(service, old, {"tls", 401}, within=5)
            assert time.monotonic() - rotated_at < 4
            # ...and the open connection is refused on its next request.
            async with session.post(service.url + "/token", data=form, ssl=ctx) as resp:
                assert resp.status == 401
                assert (await resp.json())["error"] == "invalid_client"
        assert await outcome(service, new) == 200


async def test_a_lower_sequence_is_refused_also_after_a_restart(
    home: Home, endpoint: BundleServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    domain = endpoint.domain
    domain.sequence = 5
    await register(home, endpoint.url)
    current = domain.svid(tmp_path / "current", "/ns/prod/sa/api")
    async with running(home, fast(home)) as service:
        await becomes(service, current, {200}, within=5)
        # The endpoint goes back to sequence 4, with another CA: refused, the 5 stays.
        rollback = ForeignPKI.create("Rollback")
        domain.cas, domain.sequence = [rollback], 4
        smuggled = domain.svid(tmp_path / "smuggled", "/ns/prod/sa/api")
        hits = endpoint.hits
        with caplog.at_level(logging.ERROR, logger="mtlsauth.issuer.trust.bundles"):

            async def refetched() -> bool:
                return endpoint.hits >= hits + 2

            await eventually(refetched, within=5)
        assert any("lower than the 5 in force" in r.getMessage() for r in caplog.records)
        assert await outcome(service, current) == 200
        assert await outcome(service, smuggled) in ("tls", 401)
    assert (await show(home))["spiffe_bundle"]["sequence"] == 5
    # A restarted server starts from the stored bundle, and the floor still holds.
    async with running(home, fast(home)) as service:
        assert await outcome(service, current) == 200
        hits = endpoint.hits

        async def refetched_again() -> bool:
            return endpoint.hits >= hits + 2

        await eventually(refetched_again, within=5)
        assert await outcome(service, smuggled) in ("tls", 401)
        assert await outcome(service, current) == 200


async def test_a_dead_endpoint_is_tolerated_until_the_budget_then_fails_closed_then_recovers(
    home: Home, endpoint: BundleServer, tmp_path: Path
) -> None:
    await register(home, endpoint.url, "--max-stale", "2")
    await home.aadd_client("--auth-method", "spiffe_jwt", "--client-id", "jwt", "--trust",
                           "acme", "--spiffe-id", f"spiffe://{TD}/ns/prod/sa/api")  # fmt: skip
    svid = endpoint.domain.svid(tmp_path / "api", "/ns/prod/sa/api")
    jwt_svid = endpoint.domain.jwt_svid("/ns/prod/sa/api", home.settings.issuer)

    async def jwt_status(service: Service) -> int:
        status, _ = await service.token(client_id="jwt", client_assertion=jwt_svid,
                                        client_assertion_type=SPIFFE_ASSERTION_TYPE)  # fmt: skip
        return status

    async with running(home, fast(home)) as service:
        await becomes(service, svid, {200}, within=5)
        assert await jwt_status(service) == 200
        endpoint.up = False
        died = time.monotonic()
        # Within the budget (hint 1 s + --max-stale 2 s) issuance goes on, and never waits
        # for the dead endpoint.
        while time.monotonic() - died < 1.5:
            started = time.monotonic()
            assert await outcome(service, svid) == 200
            assert time.monotonic() - started < 0.5
            await asyncio.sleep(0.2)

        async def refused() -> bool:
            status, body = await service.token(cert=svid, client_id="svc")
            return status == 401 and "staleness budget" in body.get("error_description", "")

        await eventually(refused, within=4)
        assert time.monotonic() - died >= 3 - 0.5
        assert await jwt_status(service) == 401
        assert (await show(home))["spiffe_bundle"]["stale"] is True
        endpoint.up = True
        await becomes(service, svid, {200}, within=6)
        assert await jwt_status(service) == 200
    assert (await show(home))["spiffe_bundle"]["stale"] is False


async def test_the_bootstrap_ca_is_trusted_until_the_first_fetch(
    home: Home, endpoint: BundleServer, tmp_path: Path
) -> None:
    """--ca with a bundle URL: the out-of-band bootstrap bundle (SPIFFE Federation §5.2),
    replaced by the endpoint's authorities once fetched."""
    bootstrap = endpoint.domain.cas[0]
    endpoint.domain.cas = [ForeignPKI.create("Acme next")]
    await register(home, endpoint.url, "--ca", str(bootstrap.bundle(tmp_path / "boot.pem")))
    old = bootstrap.issue(tmp_path / "old", "w", uris=(f"spiffe://{TD}/ns/prod/sa/api",))
    new = endpoint.domain.svid(tmp_path / "new", "/ns/prod/sa/api")
    endpoint.up = False
    async with running(home, fast(home)) as service:
        assert await outcome(service, old) == 200
        assert await outcome(service, new) == "tls"
        endpoint.up = True
        await becomes(service, new, {200}, within=5)
        assert await outcome(service, old) in ("tls", 401)


async def test_a_restart_does_not_give_a_never_fetched_bootstrap_bundle_a_new_budget(
    home: Home, endpoint: BundleServer, tmp_path: Path
) -> None:
    """Attack: keep the bundle endpoint unreachable; every restart (or respawned worker) used
    to count the budget of the never-fetched bootstrap --ca from its own start, so the
    bootstrap authority stayed trusted forever. The budget counts from the anchor's
    registration: registered long ago and never fetched, the domain is refused at start."""
    bootstrap = endpoint.domain.cas[0]
    pem = bootstrap.bundle(tmp_path / "boot.pem").read_bytes()
    store = open_store(home.settings.database_url.get())
    await store.open()
    try:
        await store.add_trust_anchor(TrustAnchor.create(
            name="acme", bundle=pem, max_stale=1, spiffe_trust_domains=[TD],
            spiffe_bundle_url=endpoint.url, created_at=time.time() - 400))  # fmt: skip
    finally:
        await store.close()
    await home.aadd_client("--auth-method", "tls_client_auth", "--client-id", "svc",
                           "--trust", "acme", "--spiffe-id", f"spiffe://{TD}/ns/prod/*")  # fmt: skip
    old = bootstrap.issue(tmp_path / "old", "w", uris=(f"spiffe://{TD}/ns/prod/sa/api",))
    endpoint.up = False
    async with running(home, fast(home)) as service:
        status, body = await service.token(cert=old, client_id="svc")
        assert (status, body.get("error")) == (401, "invalid_client"), body
        assert "staleness budget" in body["error_description"]
        endpoint.up = True
        await becomes(service, old, {200}, within=5)


async def test_a_bundle_without_a_sequence_does_not_lower_the_floor(
    home: Home, endpoint: BundleServer, tmp_path: Path
) -> None:
    """Attack (sequence games): sequence 5 is in force; the endpoint then serves a bundle with
    no spiffe_sequence (another CA), then one with sequence 4. Both used to be taken: the
    floor went 5 → none → 4. Once a sequence is in force, a bundle without one is refused."""
    domain = endpoint.domain
    domain.sequence = 5
    await register(home, endpoint.url)
    current = domain.svid(tmp_path / "current", "/ns/prod/sa/api")
    async with running(home, fast(home)) as service:
        await becomes(service, current, {200}, within=5)
        domain.cas = [ForeignPKI.create("Rollback")]
        smuggled = domain.svid(tmp_path / "smuggled", "/ns/prod/sa/api")
        endpoint.document = {k: v for k, v in domain.bundle().items() if k != "spiffe_sequence"}
        hits = endpoint.hits

        async def refetched() -> bool:
            return endpoint.hits >= hits + 2

        await eventually(refetched, within=5)
        assert await outcome(service, smuggled) in ("tls", 401)
        assert await outcome(service, current) == 200
    assert (await show(home))["spiffe_bundle"]["sequence"] == 5


async def test_a_bundle_left_under_a_removed_anchors_name_is_not_trusted_by_a_new_one(
    home: Home, endpoint: BundleServer, tmp_path: Path
) -> None:
    """Attack (domain A mints for B): a fetch of anchor 'acme' (trust domain A) in flight when
    it is removed stores A's bundle after the removal; 'acme' is then added again for trust
    domain B (or the same endpoint, the README's way out of a sequence that went back). The
    new anchor started from the leftover row: A's authority was a root of B, and its SVIDs
    with B's IDs got tokens. Adding an anchor now forgets any bundle stored under its name."""
    other = TrustDomain.create("other.example")
    store = open_store(home.settings.database_url.get())
    await store.open()
    try:
        # What the in-flight fetch wrote after 'trust remove acme' deleted the anchor.
        await store.save_spiffe_bundle("acme", 99, json.dumps(other.bundle()), time.time())
    finally:
        await store.close()
    endpoint.up = False
    await register(home, endpoint.url)
    minted = other.cas[0].issue(tmp_path / "m", "w", uris=(f"spiffe://{TD}/ns/prod/sa/api",))
    assert (await show(home))["spiffe_bundle"]["fetched"] is False
    async with running(home, fast(home)) as service:
        assert await outcome(service, minted) in ("tls", 401)
        endpoint.up = True
        await becomes(service, endpoint.domain.svid(tmp_path / "ok", "/ns/prod/sa/api"), {200},
                      within=5)  # fmt: skip
        assert await outcome(service, minted) in ("tls", 401)


async def test_the_store_keeps_the_highest_sequence(store: Store) -> None:
    """SQLite and PostgreSQL: the floor is the database's, atomic for every worker."""
    first = await store.save_spiffe_bundle("acme", 5, '{"keys":[]}', 100.0)
    assert first.sequence == 5
    kept = await store.save_spiffe_bundle("acme", 4, '{"keys":[1]}', 200.0)
    assert kept == first
    newer = await store.save_spiffe_bundle("acme", 6, '{"keys":[2]}', 300.0)
    assert newer.sequence == 6
    assert newer.refreshed_at == 300.0
    same = await store.save_spiffe_bundle("acme", 6, '{"keys":[2]}', 400.0)
    assert same.refreshed_at == 400.0
    assert (await store.spiffe_bundles())["acme"].sequence == 6
    # No sequence never replaces one: the floor would be gone for the next bundle.
    assert await store.save_spiffe_bundle("acme", None, '{"keys":[3]}', 500.0) == same
    # A new anchor of that name starts from no bundle (nor the old one's sequence floor).
    await store.add_trust_anchor(TrustAnchor.create(
        name="acme", bundle=b"", spiffe_trust_domains=[TD],
        spiffe_bundle_url="https://spire.example/bundle"))  # fmt: skip
    assert "acme" not in await store.spiffe_bundles()


async def test_removing_the_anchor_forgets_its_bundle(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 's.db'}")
    await store.open()
    try:
        await store.save_spiffe_bundle("acme", 9, "{}", 1.0)
        await store.remove_trust_anchor("acme")
        assert await store.spiffe_bundles() == {}
    finally:
        await store.close()


def _doc(**changes: Any) -> dict[str, Any]:
    doc = TrustDomain.create(TD).bundle()
    doc.update(changes)
    return doc


def _with_key(**key: Any) -> dict[str, Any]:
    doc = _doc()
    doc["keys"][0].update(key)
    return doc


@pytest.mark.parametrize(
    ("doc", "error"),
    [
        pytest.param({"nokeys": []}, "no keys array", id="not a JWK Set"),
        pytest.param(_doc(spiffe_sequence=-1), "spiffe_sequence", id="negative sequence"),
        # Past a signed 64-bit integer: the store cannot keep it (SQLite raised OverflowError
        # on every refresh, a traceback each time, until the domain went stale).
        pytest.param(_doc(spiffe_sequence=2**63), "spiffe_sequence", id="sequence past int64"),
        pytest.param(_doc(spiffe_sequence="5"), "spiffe_sequence", id="sequence a string"),
        pytest.param(_doc(spiffe_refresh_hint=0), "refresh_hint", id="zero hint"),
        pytest.param(_doc(spiffe_refresh_hint=True), "refresh_hint", id="hint a boolean"),
        pytest.param(_with_key(x5c=[]), "exactly one x5c", id="no certificate"),
        pytest.param(_with_key(x5c=["AAAA", "AAAA"]), "exactly one x5c", id="two certificates"),
        pytest.param(_with_key(x5c=["not base64!"]), "base64 DER", id="not base64"),
        pytest.param(_doc(keys=[{"use": "jwt-svid", "kty": "EC"}]), "needs a kid", id="no kid"),
        pytest.param(
            _doc(keys=[{"use": "jwt-svid", "kty": "EC", "kid": "k", "d": "x"}]),
            "public",
            id="a private key",
        ),
    ],
)
def test_bundle_documents_that_break_the_format_are_refused(doc: dict[str, Any], error: str
                                                           ) -> None:  # fmt: skip
    with pytest.raises(BundleError, match=error):
        parse_spiffe_bundle(json.dumps(doc))


def test_a_leaf_as_x509_authority_is_refused(tmp_path: Path) -> None:
    leaf = TrustDomain.create(TD).svid(tmp_path / "leaf", "/a")
    doc = _with_key(x5c=[base64.b64encode(leaf.der).decode()])
    with pytest.raises(BundleError, match="not a CA"):
        parse_spiffe_bundle(json.dumps(doc))


def test_keys_of_other_uses_are_ignored() -> None:
    doc = _doc()
    doc["keys"].append({"use": "sig", "kty": "EC", "kid": "other"})
    # An unknown key type is ignored whole (§4.2.1), whatever else it holds.
    doc["keys"].append({"use": "x509-svid", "kty": "future", "x5c": []})
    doc["keys"].append({"use": "jwt-svid", "x": "no kty, no kid"})
    bundle = parse_spiffe_bundle(json.dumps(doc))
    assert len(bundle.authorities) == 1
    assert [k["kid"] for k in bundle.jwt_keys] == [k["kid"] for k in doc["keys"][1:2]]
    assert all("use" not in k for k in bundle.jwt_keys)


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_database() as url:
        yield url


async def test_two_servers_on_postgresql_share_the_sequence_floor(
    home: Home, endpoint: BundleServer, tmp_path: Path, pg_url: str
) -> None:
    """A second worker (another host, same PostgreSQL) that never saw sequence 5 refuses the
    endpoint's 4 all the same: the floor is the database's."""
    await asyncio.to_thread(use_postgres, home, pg_url)
    domain = endpoint.domain
    domain.sequence = 5
    await register(home, endpoint.url)
    current = domain.svid(tmp_path / "current", "/ns/prod/sa/api")
    async with running(home, fast(home)) as first:
        await becomes(first, current, {200}, within=5)
        domain.cas, domain.sequence = [ForeignPKI.create("Rollback")], 4
        smuggled = domain.svid(tmp_path / "smuggled", "/ns/prod/sa/api")
        other = dataclasses.replace(fast(home), port=unused_port())
        async with running(home, other) as second:
            hits = endpoint.hits

            async def refetched() -> bool:
                return endpoint.hits >= hits + 4

            await eventually(refetched, within=5)
            for server in (first, second):
                assert await outcome(server, current) == 200
                assert await outcome(server, smuggled) in ("tls", 401)
