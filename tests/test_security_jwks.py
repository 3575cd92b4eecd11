"""Fetching clients' jwks_uri (and the resource checker's issuer keys) cannot be turned against
the server: no redirects, only permitted addresses, bounded time, count and size.

Every fetch here goes to a real https server on 127.0.0.1 with a certificate from the home's CA;
every failure must come out of /token as 401 invalid_client over real TLS.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import json
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.test_utils import unused_port
from cryptography.hazmat.primitives.asymmetric import ec

from mtlsauth.bench.demo_api import demo_api_ssl_context
from mtlsauth.core import jwks as core_jwks
from mtlsauth.core.errors import InvalidClient, TemporarilyUnavailable
from mtlsauth.core.fetch import AddressPolicy, FetchError, FilteringResolver, fetch_json
from mtlsauth.issuer.clientauth.remote_jwks import RemoteJWKS
from mtlsauth.issuer.http.keys import GUARD
from mtlsauth.issuer.settings import ConfigError, Settings, load_settings
from mtlsauth.resource import JWKSCache
from mtlsauth.resource.jwks import WELL_KNOWN
from tests.conftest import Home, client_context, running
from tests.test_assertions import assertion, public_jwk, token_with

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
LOOPBACK = ("127.0.0.0/8", "::1")


@contextlib.asynccontextmanager
async def https_server(
    home: Home, routes: dict[str, Handler], *, host: str = "127.0.0.1"
) -> AsyncIterator[tuple[str, list[str]]]:
    """An https server (the home's server certificate: localhost, 127.0.0.1, ::1) answering
    ``routes``; yields its base URL and the list of paths it was asked for."""
    hits: list[str] = []

    @web.middleware
    async def count(request: web.Request, handler: Handler) -> web.StreamResponse:
        hits.append(request.path)
        return await handler(request)

    app = web.Application(middlewares=[count])
    for path, handler in routes.items():
        app.router.add_get(path, handler)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    port = unused_port()
    await web.TCPSite(runner, host, port, ssl_context=demo_api_ssl_context(home.settings)).start()
    try:
        yield f"https://{f'[{host}]' if ':' in host else host}:{port}", hits
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def http_server(routes: dict[str, Handler]) -> AsyncIterator[tuple[str, list[str]]]:
    """A plain-http server on 127.0.0.1 (the internal service an attacker aims at)."""
    hits: list[str] = []

    @web.middleware
    async def count(request: web.Request, handler: Handler) -> web.StreamResponse:
        hits.append(request.path)
        return await handler(request)

    app = web.Application(middlewares=[count])
    for path, handler in routes.items():
        app.router.add_get(path, handler)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    port = unused_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}", hits
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def silent_server() -> AsyncIterator[tuple[str, list[int]]]:
    """A TCP server that accepts and never answers (not even the TLS handshake); yields its
    https URL and a list with one item per connection it accepted."""
    connections: list[int] = []
    held: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"https://127.0.0.1:{port}/jwks", connections
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


def settings_for(home: Home, **overrides: Any) -> Settings:
    """The home's settings trusting its CA for jwks_uri, with many failures allowed (they are
    on purpose) and loopback allowed unless the test says otherwise."""
    values: dict[str, Any] = {
        "jwks_uri_cafile": home.ca_cert,
        "jwks_uri_allow_private": LOOPBACK,
        "throttle_limit": 1000,
    }
    return dataclasses.replace(home.settings, **(values | overrides))


def serve_json(document: Any) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response(document)

    return handler


@pytest.fixture
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


async def add_remote_client(home: Home, client_id: str, uri: str) -> None:
    await home.aadd_client("--auth-method", "private_key_jwt", "--client-id", client_id,
                           "--jwks-uri", uri)  # fmt: skip


# --- 1. redirects -------------------------------------------------------------------------


async def test_redirect_to_plain_http_is_refused(
    home: Home, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    """The attack: an https jwks_uri that redirects to an internal plain-http service."""
    jwks = {"keys": [public_jwk(ec_key, "k1")]}
    async with http_server({"/jwks": serve_json(jwks)}) as (internal, internal_hits):

        async def redirect(request: web.Request) -> web.Response:
            raise web.HTTPFound(f"{internal}/jwks")

        async with https_server(home, {"/jwks": redirect}) as (base, hits):
            await add_remote_client(home, "redir", f"{base}/jwks")
            async with running(home, settings_for(home)) as service:
                status, body = await token_with(service, assertion(home, "redir", ec_key, "ES256"))
    assert (status, body["error"]) == (401, "invalid_client")
    assert hits == ["/jwks"]
    assert internal_hits == []  # the redirect was not followed


async def test_redirect_even_to_https_is_refused(
    home: Home, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    jwks = {"keys": [public_jwk(ec_key, "k1")]}

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect("/real")

    async with https_server(home, {"/jwks": redirect, "/real": serve_json(jwks)}) as (base, hits):
        await add_remote_client(home, "redir2", f"{base}/jwks")
        async with running(home, settings_for(home)) as service:
            status, body = await token_with(service, assertion(home, "redir2", ec_key, "ES256"))
    assert (status, body["error"]) == (401, "invalid_client")
    assert hits == ["/jwks"]


# --- 2. where the fetch may go ------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_loopback_jwks_uri_is_refused_by_default(
    home: Home, ec_key: ec.EllipticCurvePrivateKey, host: str
) -> None:
    """A literal loopback address and a name that resolves to one are both refused, before any
    connection, when jwks_uri_allow_private is off (the default); allowed, the same URI works."""
    jwks = {"keys": [public_jwk(ec_key, "k1")]}
    async with https_server(home, {"/jwks": serve_json(jwks)}) as (base, hits):
        uri = f"{base}/jwks".replace("127.0.0.1", host)
        await add_remote_client(home, "internal", uri)
        async with running(home, settings_for(home, jwks_uri_allow_private=())) as service:
            status, body = await token_with(service, assertion(home, "internal", ec_key, "ES256"))
        assert (status, body["error"]) == (401, "invalid_client")
        assert hits == []
        async with running(home, settings_for(home)) as service:
            status, body = await token_with(service, assertion(home, "internal", ec_key, "ES256"))
        assert status == 200, body
        assert hits == ["/jwks"]


async def test_ipv6_loopback_refused_unless_allowed(
    home: Home, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    jwks = {"keys": [public_jwk(ec_key, "k1")]}
    async with https_server(home, {"/jwks": serve_json(jwks)}, host="::1") as (base, hits):
        await add_remote_client(home, "v6", f"{base}/jwks")
        only_v4 = settings_for(home, jwks_uri_allow_private=("127.0.0.0/8",))
        async with running(home, only_v4) as service:
            status, body = await token_with(service, assertion(home, "v6", ec_key, "ES256"))
        assert (status, body["error"]) == (401, "invalid_client")
        assert hits == []
        async with running(home, settings_for(home)) as service:
            status, body = await token_with(service, assertion(home, "v6", ec_key, "ES256"))
        assert status == 200, body
        assert hits == ["/jwks"]


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1",
        "0.0.0.0",  # noqa: S104 (an address to refuse, not to bind)
        "224.0.0.1", "255.255.255.255", "::1", "::", "fe80::1", "fc00::1",
        "::ffff:127.0.0.1", "::ffff:10.0.0.1", "not an address",
        # IPv4 inside IPv6 (found by the review): NAT64 and 6to4 reach the embedded address.
        "64:ff9b::a00:1", "64:ff9b::7f00:1", "64:ff9b:1::a00:1", "2002:7f00:1::1",
        "2002:a00:1::1",
    ],
)  # fmt: skip
def test_non_global_addresses_are_refused(address: str) -> None:
    assert not AddressPolicy().permits(address)


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "64:ff9b::808:808", "2002:808:808::1"]
)
def test_global_unicast_addresses_are_permitted(address: str) -> None:
    assert AddressPolicy().permits(address)


def test_the_allow_list_opens_only_its_networks() -> None:
    settings_policy = AddressPolicy(allowed=(ipaddress.ip_network("10.0.0.0/8"),))
    assert settings_policy.permits("10.9.9.9")
    assert settings_policy.permits("::ffff:10.9.9.9")
    assert not settings_policy.permits("192.168.0.1")
    assert not settings_policy.permits("127.0.0.1")


class _Rebinding(AbstractResolver):
    """A DNS that answers a global address and a loopback one (a rebinding attacker)."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.asked.append(host)
        return [
            ResolveResult(hostname=host, host=a, port=port, family=socket.AF_INET, proto=0, flags=0)
            for a in ("127.0.0.1", "192.0.2.1")
        ]

    async def close(self) -> None:
        pass


async def test_the_resolver_drops_refused_addresses() -> None:
    """The filter applies to the addresses the connector will use, not to the name."""
    inner = _Rebinding()
    resolver = FilteringResolver(AddressPolicy(), inner)
    with pytest.raises(OSError, match="refused addresses"):
        await resolver.resolve("jwks.example", 443)
    assert inner.asked == ["jwks.example"]
    allowed = FilteringResolver(
        AddressPolicy(allowed=(ipaddress.ip_network("192.0.2.0/24"),)), inner
    )
    assert [r["host"] for r in await allowed.resolve("jwks.example", 443)] == ["192.0.2.1"]


async def test_http_jwks_uri_is_refused_at_fetch() -> None:
    """Registration refuses http; the fetch refuses it too (a row written by other means)."""
    async with aiohttp.ClientSession() as session:
        with pytest.raises(FetchError, match="not an https URL"):
            await fetch_json(
                session, "http://192.0.2.1/jwks", ssl_context=ssl.create_default_context()
            )


# --- 3. time, count and back-off ----------------------------------------------------------


async def test_a_silent_jwks_uri_costs_one_connection_and_then_backs_off(
    home: Home, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    """The attack: many requests naming a client whose jwks_uri never answers. They share one
    fetch (one connection at the server), fail within the timeout instead of queueing, and a
    request during the back-off fails at once without any connection."""
    async with silent_server() as (uri, connections):
        await add_remote_client(home, "silent", uri)
        settings = settings_for(home, jwks_uri_timeout=1.0)
        async with running(home, settings) as service:
            started = time.monotonic()
            results = await asyncio.gather(
                *(token_with(service, assertion(home, "silent", ec_key, "ES256")) for _ in range(8))
            )
            elapsed = time.monotonic() - started
            assert [(s, b["error"]) for s, b in results] == [(401, "invalid_client")] * 8
            assert len(connections) == 1
            assert elapsed < 3.0, elapsed  # one 1 s timeout, not eight in a row

            started = time.monotonic()
            status, body = await token_with(service, assertion(home, "silent", ec_key, "ES256"))
            assert (status, body["error"]) == (401, "invalid_client")
            assert time.monotonic() - started < 0.5
            assert len(connections) == 1  # within the back-off: no new fetch


async def test_back_off_ends_and_a_recovered_uri_is_fetched(
    home: Home, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    jwks = {"keys": [public_jwk(ec_key, "k1")]}
    answers: list[int] = [503]

    async def flaky(request: web.Request) -> web.Response:
        if answers[-1] != 200:
            return web.Response(status=answers[-1])
        return web.json_response(jwks)

    async with https_server(home, {"/jwks": flaky}) as (base, hits):
        await add_remote_client(home, "flaky", f"{base}/jwks")
        async with running(home, settings_for(home)) as service:
            remote = service.app[GUARD].context.remote_jwks
            assert remote is not None
            remote.min_refetch = 0.3  # the back-off base (10 s), shortened for the test
            for _ in range(3):
                status, body = await token_with(service, assertion(home, "flaky", ec_key, "ES256"))
                assert (status, body["error"]) == (401, "invalid_client")
            assert hits == ["/jwks"]
            answers.append(200)
            await asyncio.sleep(0.4)
            status, body = await token_with(service, assertion(home, "flaky", ec_key, "ES256"))
            assert status == 200, body
            assert hits == ["/jwks", "/jwks"]


async def test_unknown_kid_refetch_is_rate_limited(
    home: Home, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    jwks = {"keys": [public_jwk(ec_key, "k1")]}
    async with https_server(home, {"/jwks": serve_json(jwks)}) as (base, hits):
        await add_remote_client(home, "kids", f"{base}/jwks")
        async with running(home, settings_for(home)) as service:
            status, body = await token_with(service, assertion(home, "kids", ec_key, "ES256"))
            assert status == 200, body
            for n in range(5):
                status, body = await token_with(
                    service, assertion(home, "kids", ec_key, "ES256", kid=f"nope{n}")
                )
                assert (status, body["error"]) == (401, "invalid_client")
            assert hits == ["/jwks"]  # cached; unknown kids refetch at most every 10 s


async def test_remembered_uris_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    """Failure records and cached documents are bounded (least recently used go first)."""
    monkeypatch.setattr(core_jwks, "MAX_URIS", 3)
    remote = RemoteJWKS(ssl.create_default_context(), timeout=1.0)
    try:
        for n in range(10):
            # Refused by the address policy before any connection: a recorded failure.
            with pytest.raises(InvalidClient):
                await remote.keys(f"https://10.0.0.{n}/jwks", kid=None)
        assert len(remote._failures) == 3
        assert list(remote._failures) == [f"https://10.0.0.{n}/jwks" for n in (7, 8, 9)]
    finally:
        await remote.close()


async def test_fetches_in_flight_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    """While the cap of concurrent fetches is reached, another URI fails at once, unfetched."""
    monkeypatch.setattr(core_jwks, "MAX_IN_FLIGHT", 1)
    allow = AddressPolicy(allowed=(ipaddress.ip_network("127.0.0.0/8"),))
    async with silent_server() as (uri, connections), silent_server() as (other, others):
        remote = RemoteJWKS(ssl.create_default_context(), policy=allow, timeout=2.0)
        try:
            first = asyncio.create_task(remote.keys(uri, kid=None))
            await asyncio.sleep(0.2)
            assert len(connections) == 1
            started = time.monotonic()
            with pytest.raises(InvalidClient):
                await remote.keys(other, kid=None)
            assert time.monotonic() - started < 0.5
            assert others == []
            with pytest.raises(InvalidClient):
                await first
        finally:
            await remote.close()


# --- 4. the body --------------------------------------------------------------------------


def chunked(document: bytes, pieces: int) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        step = -(-len(document) // pieces)
        for i in range(0, len(document), step):
            await resp.write(document[i : i + step])
            await asyncio.sleep(0.02)  # separate TCP segments, separate reads
        await resp.write_eof()
        return resp

    return handler


async def test_a_jwks_sent_in_several_chunks_is_accepted(
    home: Home, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    document = json.dumps({"keys": [public_jwk(ec_key, "k1")]}).encode()
    async with https_server(home, {"/jwks": chunked(document, 4)}) as (base, hits):
        await add_remote_client(home, "chunks", f"{base}/jwks")
        async with running(home, settings_for(home)) as service:
            status, body = await token_with(service, assertion(home, "chunks", ec_key, "ES256"))
    assert status == 200, body
    assert hits == ["/jwks"]


@pytest.mark.parametrize("mode", ["content-length", "chunked"])
async def test_a_too_large_jwks_is_refused(
    home: Home, ec_key: ec.EllipticCurvePrivateKey, mode: str
) -> None:
    """A valid JWK Set padded beyond the 64 KiB limit is a failed fetch, however it is sent."""
    padding = [{"kty": "oct", "kid": f"pad{n}", "k": "A" * 100} for n in range(700)]
    document = json.dumps({"keys": [public_jwk(ec_key, "k1"), *padding]}).encode()
    assert len(document) > 65536
    handler = serve_json(json.loads(document)) if mode == "content-length" else chunked(document, 8)
    async with https_server(home, {"/jwks": handler}) as (base, _):
        await add_remote_client(home, "large", f"{base}/jwks")
        async with running(home, settings_for(home)) as service:
            status, body = await token_with(service, assertion(home, "large", ec_key, "ES256"))
    assert (status, body["error"]) == (401, "invalid_client")


# --- the resource checker's issuer keys ---------------------------------------------------


@pytest.mark.parametrize("keys_path", ["/moved", "/large"])
async def test_resource_checker_refuses_redirects_and_large_keys(
    home: Home, keys_path: str
) -> None:
    """The checker's issuer JWKS follows the same rules: a redirect or an oversized document
    is a failed fetch (no keys: temporarily unavailable), a chunked one is read whole."""
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = public_jwk(key, "sig1") | {"alg": "ES256"}
    document = json.dumps({"keys": [jwk]}).encode()
    large = json.dumps({"keys": [jwk], "pad": "x" * 70000}).encode()
    state = {"jwks_path": keys_path}

    async def metadata(request: web.Request) -> web.Response:
        base = f"https://{request.host}"
        return web.json_response({"issuer": base, "jwks_uri": base + state["jwks_path"]})

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPFound("/keys")

    routes: dict[str, Handler] = {
        WELL_KNOWN: metadata,
        "/keys": chunked(document, 4),
        "/moved": moved,
        "/large": chunked(large, 8),
    }
    async with https_server(home, routes) as (base, hits):
        cache = JWKSCache(issuer=base, ssl_context=client_context(home, None))
        try:
            with pytest.raises(TemporarilyUnavailable):
                await cache.key("sig1")
            assert hits == [WELL_KNOWN, keys_path]  # the redirect target was never asked for
        finally:
            await cache.close()
        state["jwks_path"] = "/keys"
        cache = JWKSCache(issuer=base, ssl_context=client_context(home, None))
        try:
            assert (await cache.key("sig1")).key_id == "sig1"
        finally:
            await cache.close()


def test_settings_jwks_uri_allow_private_and_timeout(home: Home) -> None:
    settings = load_settings(
        home.path,
        environ={"MTLSAUTH_JWKS_URI_ALLOW_PRIVATE": "10.0.0.0/8, fd00::/8",
                 "MTLSAUTH_JWKS_URI_TIMEOUT": "2"},
    )  # fmt: skip
    assert settings.jwks_uri_allow_private == ("10.0.0.0/8", "fd00::/8")
    assert settings.jwks_uri_timeout == 2.0
    assert settings.jwks_uri_policy.permits("10.1.1.1")
    assert not settings.jwks_uri_policy.permits("127.0.0.1")
    assert load_settings(home.path, environ={}).jwks_uri_allow_private == ()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MTLSAUTH_JWKS_URI_ALLOW_PRIVATE": "10.0.0.0/33"}, "'jwks_uri_allow_private'"),
        ({"MTLSAUTH_JWKS_URI_ALLOW_PRIVATE": "loopback"}, "'jwks_uri_allow_private'"),
        ({"MTLSAUTH_JWKS_URI_TIMEOUT": "0"}, "'jwks_uri_timeout' must be a number from 0.5 to 30"),
        ({"MTLSAUTH_JWKS_URI_TIMEOUT": "soon"}, "'jwks_uri_timeout'"),
    ],
)
def test_bad_jwks_uri_settings_are_named(home: Home, env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_settings(home.path, environ=env)
    assert message in str(excinfo.value)
