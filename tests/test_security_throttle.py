"""Throttling (D7) under attack, over real TLS: no lockout of a client by someone without its
credentials (directly or through a TLS-terminating nginx), bounded growth from unauthenticated
failures, and the same secret check for registered and unregistered client_ids."""

from __future__ import annotations

import base64
import dataclasses
import hmac
import json
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

import mtlsauth.issuer.http.app
import mtlsauth.issuer.secrets
from mtlsauth.issuer.clientauth import ASSERTION_TYPE
from mtlsauth.issuer.http.keys import GUARD
from mtlsauth.issuer.settings import ConfigError, Settings, load_settings
from mtlsauth.issuer.store import Store
from mtlsauth.issuer.throttle import (
    SOURCE_KEY_CACHE,
    UNKNOWN_CLIENT,
    Throttle,
    ThrottlePolicy,
    source_key,
)
from tests.conftest import ClientCert, Home, Service, client_context, running
from tests.proxies import ADDRESS_HEADER, CERT_HEADER, PROXY_ADDRESS, nginx
from tests.test_assertions import public_jwk

ATTACKER = "127.0.0.10"
VICTIM = "127.0.0.11"


def basic(client_id: str, secret: str) -> dict[str, str]:
    raw = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


async def post(
    url: str,
    home: Home,
    *,
    local: str = "127.0.0.1",
    cert: ClientCert | None = None,
    headers: dict[str, str] | None = None,
    fields: dict[str, str] | None = None,
    **form: str,
) -> tuple[int, Any]:
    """POST /token from ``local`` over a new TLS connection; (status, JSON body or text)."""
    connector = aiohttp.TCPConnector(local_addr=(local, 0))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post(
            f"{url}/token",
            data={"grant_type": "client_credentials", **(fields or {}), **form},
            headers=headers,
            ssl=client_context(home, cert),
        ) as resp,
    ):
        if resp.content_type != "application/json":
            return resp.status, await resp.text()
        return resp.status, await resp.json()


def error(result: tuple[int, Any]) -> tuple[int, str | None]:
    status, body = result
    return status, body.get("error") if isinstance(body, dict) else None


def proxied(home: Home, **overrides: Any) -> Settings:
    return dataclasses.replace(
        home.settings,
        trusted_proxies=(f"{PROXY_ADDRESS}/32",),
        client_cert_header=CERT_HEADER,
        client_cert_format="nginx",
        client_address_header=ADDRESS_HEADER,
        **overrides,
    )


@pytest.fixture
def parties(home: Home) -> dict[str, Any]:
    """billing (client_secret_basic), svc (tls_client_auth) and its certificate."""
    billing = home.add_client("--auth-method", "client_secret_basic", "--client-id", "billing")
    cert = home.issue("svc", dns=["svc.example"])
    home.add_client(
        "--auth-method", "tls_client_auth", "--san-dns", "svc.example", "--client-id", "svc"
    )
    return {"billing": billing["client_secret"], "cert": cert}


@pytest.fixture
async def behind_nginx(home: Home, tmp_path: Path) -> AsyncIterator[tuple[str, Service]]:
    """The token service behind a real nginx that appends the client's address."""
    settings = proxied(home, throttle_limit=3, throttle_window=60.0, throttle_block=60.0)
    async with running(home, settings) as service:
        with nginx(
            tmp_path / "nginx",
            upstream=service.url,
            server_cert=home.path / "tls" / "chain.pem",
            server_key=home.path / "tls" / "key.pem",
            client_ca=home.settings.client_ca,
            upstream_ca=home.ca_cert,
            forward_address=True,
        ) as url:
            yield url, service


# -- 1. no lockout by someone without the credentials ----------------------------------------


async def test_secret_flood_through_proxy_spares_other_addresses(
    home: Home, parties: dict[str, Any], behind_nginx: tuple[str, Service]
) -> None:
    url, _ = behind_nginx
    # The attacker even claims the victim's address: nginx appends the real one after it.
    spoof = {**basic("billing", "wrong"), ADDRESS_HEADER: VICTIM}
    results = [error(await post(url, home, local=ATTACKER, headers=spoof)) for _ in range(5)]
    assert results[:3] == [(401, "invalid_client")] * 3
    assert results[3:] == [(429, "slow_down")] * 2
    # The attacker's own address is throttled for billing, even with the right secret...
    right = basic("billing", parties["billing"])
    assert error(await post(url, home, local=ATTACKER, headers=right)) == (429, "slow_down")
    # ...but billing from another vouched address is served.
    status, body = await post(url, home, local=VICTIM, headers=right)
    assert status == 200, body


async def test_certificate_client_is_never_refused_before_authentication(
    home: Home, parties: dict[str, Any], behind_nginx: tuple[str, Service]
) -> None:
    url, _ = behind_nginx
    cert: ClientCert = parties["cert"]
    other = home.issue("intruder", dns=["intruder.example"])
    # Failures claiming svc from the attacker's address: no certificate, then a wrong one.
    results = [error(await post(url, home, local=ATTACKER, client_id="svc")) for _ in range(3)]
    results += [
        error(await post(url, home, local=ATTACKER, cert=other, client_id="svc")) for _ in range(2)
    ]
    assert results == [(401, "invalid_client")] * 3 + [(429, "slow_down")] * 2
    # The real svc, from the very same vouched address, authenticates and is served.
    for _ in range(2):
        status, body = await post(url, home, local=ATTACKER, cert=cert, client_id="svc")
        assert status == 200, body


async def test_private_key_jwt_client_is_never_refused_before_authentication(
    home: Home, tmp_path: Path
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [public_jwk(key, "k1")]}))
    await home.aadd_client(
        "--auth-method", "private_key_jwt", "--client-id", "pk", "--jwks", str(jwks)
    )
    intruder = ec.generate_private_key(ec.SECP256R1())

    def signed(with_key: Any) -> str:
        now = int(time.time())
        claims = {"iss": "pk", "sub": "pk", "aud": home.settings.issuer, "exp": now + 60,
                  "iat": now, "jti": secrets.token_urlsafe(16)}  # fmt: skip
        return jwt.encode(claims, with_key, algorithm="ES256", headers={"kid": "k1"})

    settings = dataclasses.replace(home.settings, throttle_limit=2, throttle_block=60.0)
    async with running(home, settings) as service:
        for _ in range(4):
            await post(
                service.url,
                home,
                client_assertion_type=ASSERTION_TYPE,
                client_assertion=signed(intruder),
            )
        assert error(
            await post(
                service.url,
                home,
                client_assertion_type=ASSERTION_TYPE,
                client_assertion=signed(intruder),
            )
        ) == (429, "slow_down")
        status, body = await post(
            service.url, home, client_assertion_type=ASSERTION_TYPE, client_assertion=signed(key)
        )
        assert status == 200, body


async def _from_proxy(service: Service, forwarded: str | None, secret: str | None = None) -> Any:
    """A request as the trusted proxy sends it: from its address, naming the client's."""
    headers = basic("billing", secret or "wrong")
    if forwarded is not None:
        headers[ADDRESS_HEADER] = forwarded
    return error(await post(service.url, service.home, local=PROXY_ADDRESS, headers=headers))


async def test_malformed_forwarded_address_from_the_proxy_is_400(
    home: Home, parties: dict[str, Any]
) -> None:
    async with running(home, proxied(home)) as service:
        for bad in (None, "", "not-an-ip", "192.0.2.1, garbage", "192.0.2.1,", "300.1.1.1"):
            assert await _from_proxy(service, bad) == (400, "invalid_request"), bad
        # Only the right-most entry (the proxy's own) is read; a client's junk before it is not.
        assert await _from_proxy(service, "garbage, 192.0.2.7") == (401, "invalid_client")
        assert await _from_proxy(service, "[2001:db8::1]") == (401, "invalid_client")


async def test_forwarded_address_from_a_direct_client_is_ignored(
    home: Home, parties: dict[str, Any]
) -> None:
    """A client that is not the proxy cannot pick the address it is counted under."""
    settings = proxied(home, throttle_limit=2)
    async with running(home, settings) as service:
        for n in range(4):
            headers = {**basic("billing", "wrong"), ADDRESS_HEADER: f"192.0.2.{n}"}
            await post(service.url, home, local=ATTACKER, headers=headers)
        right = {**basic("billing", parties["billing"]), ADDRESS_HEADER: "192.0.2.99"}
        assert error(await post(service.url, home, local=ATTACKER, headers=right)) == (
            429,
            "slow_down",
        )
        status, body = await post(service.url, home, local=VICTIM, headers=right)
        assert status == 200, body


async def test_ipv6_sources_count_per_64(home: Home, parties: dict[str, Any]) -> None:
    async with running(home, proxied(home, throttle_limit=3)) as service:
        # Every failure from a new address of the same /64: still one key.
        results = [await _from_proxy(service, f"2001:db8:0:1::{n:x}") for n in range(1, 5)]
        assert results == [(401, "invalid_client")] * 3 + [(429, "slow_down")]
        # Another /64 is another source.
        assert await _from_proxy(service, "2001:db8:0:2::1", parties["billing"]) == (200, None)


def test_source_key() -> None:
    assert source_key("192.0.2.1") == "192.0.2.1"
    assert source_key("2001:db8::1") == source_key("2001:db8::ffff:1") == "2001:db8::/64"
    assert source_key("2001:db8:0:1::1") == "2001:db8:0:1::/64"
    assert source_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert source_key("fe80::1%eth0") == "fe80::/64"
    assert source_key("unknown") == "unknown"


def test_source_keys_are_remembered_within_a_bound() -> None:
    """The per-request parse is cached (the hot path); a flood of sources cannot grow it."""
    assert source_key("2001:db8::7") == source_key("2001:db8::7") == "2001:db8::/64"
    for n in range(SOURCE_KEY_CACHE + 500):
        assert source_key(f"10.{n >> 16}.{(n >> 8) & 255}.{n & 255}").startswith("10.")
    assert source_key.cache_info().currsize <= SOURCE_KEY_CACHE
    assert source_key("2001:db8::7") == "2001:db8::/64"  # evicted, parsed again, same answer


def test_address_header_needs_trusted_proxies(home: Home) -> None:
    with pytest.raises(ConfigError, match="client_address_header"):
        load_settings(home.path, environ={"MTLSAUTH_CLIENT_ADDRESS_HEADER": "X-Forwarded-For"})
    with pytest.raises(ConfigError, match="client_address_header"):
        load_settings(
            home.path,
            environ={
                "MTLSAUTH_TRUSTED_PROXIES": "127.0.0.2",
                "MTLSAUTH_CLIENT_ADDRESS_HEADER": "X Forwarded",
            },
        )
    settings = load_settings(
        home.path,
        environ={
            "MTLSAUTH_TRUSTED_PROXIES": "127.0.0.2",
            "MTLSAUTH_CLIENT_ADDRESS_HEADER": "X-Forwarded-For",
        },
    )
    assert settings.proxy is not None
    assert settings.proxy.address_header == "X-Forwarded-For"


# -- 2. bounded growth ----------------------------------------------------------------------


def _failure_rows(home: Home) -> list[tuple[str, str]]:
    db = home.settings.database_url.get().removeprefix("sqlite:///")
    with sqlite3.connect(db) as conn:
        return [
            (cid, src) for cid, src in conn.execute("SELECT client_id, source FROM auth_failures")
        ]


def _audit_failures(home: Home) -> list[dict[str, Any]]:
    lines = (home.path / "audit.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["event"] == "auth.failed"]


FLOOD = 2000


async def test_random_client_ids_leave_bounded_state(
    home: Home, parties: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # One tally interval for the whole test, so the line count is exact.
    monkeypatch.setattr(mtlsauth.issuer.http.app, "AUDIT_TALLY_INTERVAL", 3600.0)
    settings = dataclasses.replace(home.settings, throttle_limit=100_000)
    async with running(home, settings) as service:
        connector = aiohttp.TCPConnector(limit=8)
        async with aiohttp.ClientSession(connector=connector) as session:
            for n in range(FLOOD):
                form: dict[str, str] = {"grant_type": "client_credentials"}
                headers = None
                if n % 2:
                    form |= {"client_id": secrets.token_hex(8), "client_secret": "x"}
                else:
                    headers = basic(secrets.token_hex(8), "x")
                async with session.post(
                    f"{service.url}/token", data=form, headers=headers, ssl=service.ssl_context()
                ) as resp:
                    assert resp.status == 401
        assert _failure_rows(home) == [(UNKNOWN_CLIENT, "127.0.0.1")]
        assert service.app[GUARD].throttle.sizes() == (0, 1)
    failures = _audit_failures(home)
    assert len(failures) == 1
    assert failures[0]["count"] == FLOOD
    assert (failures[0]["client_id"], failures[0]["reason"]) == (None, "unknown_client")


async def test_unknown_ids_are_throttled_together_and_real_ids_still_are(
    home: Home, parties: dict[str, Any]
) -> None:
    settings = dataclasses.replace(home.settings, throttle_limit=3)
    async with running(home, settings) as service:
        results = [
            error(await post(service.url, home, headers=basic(secrets.token_hex(8), "x")))
            for _ in range(5)
        ]
        assert results == [(401, "invalid_client")] * 3 + [(429, "slow_down")] * 2
        # A registered client from that address is counted on its own.
        wrong = basic("billing", "wrong")
        results = [error(await post(service.url, home, headers=wrong)) for _ in range(4)]
        assert results == [(401, "invalid_client")] * 3 + [(429, "slow_down")]
        right = basic("billing", parties["billing"])
        assert error(await post(service.url, home, headers=right)) == (429, "slow_down")
        status, body = await post(service.url, home, local=VICTIM, headers=right)
        assert status == 200, body
        assert sorted(_failure_rows(home)) == [
            (UNKNOWN_CLIENT, "127.0.0.1"),
            ("billing", "127.0.0.1"),
        ]


async def test_in_memory_maps_are_capped(store: Store) -> None:
    throttle = Throttle(store, ThrottlePolicy(limit=1, window=60.0, block=60.0, max_entries=10))
    for n in range(50):
        await throttle.failed(throttle.key("billing", f"192.0.2.{n}"))
    assert throttle.sizes() == (10, 10)
    await throttle.refresh()
    assert throttle.sizes() == (10, 10)
    # The newest failures are the ones kept, and they still block.
    with pytest.raises(Exception, match="throttled"):
        throttle.check(throttle.key("billing", "192.0.2.49"))


async def test_failure_rows_are_purged_when_their_window_ends(store: Store) -> None:
    await store.record_auth_failure("billing", "192.0.2.1", window=30.0, limit=10, block=60.0)
    await store.record_auth_failure("svc", "192.0.2.1", window=30.0, limit=1, block=600.0)
    await store.purge(time.time() + 31.0, failure_window=30.0)
    blocked = await store.blocked(time.time())
    assert list(blocked) == [("svc", "192.0.2.1")]  # a live block stays
    # The unblocked pair's row is gone: one new failure starts a fresh count.
    assert (
        await store.record_auth_failure("billing", "192.0.2.1", window=30.0, limit=2, block=60.0)
        is None
    )


# -- 3. the same secret check for registered and unregistered client_ids ------------------------


class CountingHmac(SimpleNamespace):
    """The hmac module as mtlsauth.issuer.secrets sees it, counting what the secret check does."""

    def __init__(self, real: Any) -> None:
        super().__init__(computed=0, compared=0)
        self._real = real

    def new(self, *args: Any, **kwargs: Any) -> Any:
        self.computed += 1
        return self._real.new(*args, **kwargs)

    def compare_digest(self, a: Any, b: Any) -> bool:
        self.compared += 1
        return bool(self._real.compare_digest(a, b))


@pytest.fixture
def counting(monkeypatch: pytest.MonkeyPatch) -> CountingHmac:
    counter = CountingHmac(hmac)
    monkeypatch.setattr(mtlsauth.issuer.secrets, "hmac", counter)
    return counter


async def test_unknown_and_known_client_do_the_same_secret_check(
    home: Home, counting: CountingHmac
) -> None:
    await home.aadd_client("--auth-method", "client_secret_post", "--client-id", "poster")
    await home.aadd_client("--auth-method", "client_secret_basic", "--client-id", "billing")
    settings = dataclasses.replace(home.settings, throttle_limit=1000)
    requests: dict[str, tuple[dict[str, str], dict[str, str] | None]] = {
        "basic, registered": ({}, basic("billing", "wrong")),
        "basic, unregistered": ({}, basic("nobody", "wrong")),
        "post, registered": ({"client_id": "poster", "client_secret": "wrong"}, None),
        "post, unregistered": ({"client_id": "nobody", "client_secret": "wrong"}, None),
    }
    work = {}
    async with running(home, settings) as service:
        for name, (form, headers) in requests.items():
            counting.computed = counting.compared = 0
            assert error(await post(service.url, home, headers=headers, fields=form)) == (
                401,
                "invalid_client",
            )
            work[name] = (counting.computed, counting.compared)
    assert set(work.values()) == {(1, 1)}, work
