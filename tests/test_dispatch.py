"""The dispatcher (mtlsauth.issuer.http.dispatch) answers every request as aiohttp's
``web.Application`` path did: the same status, OAuth error, Allow header, no-store headers and
request id, over real TLS through the service's own listener (GuardedSite).

Each request goes to two listeners of the same home in one test: one served by
``ServiceRunner`` (what ``mtlsauth serve`` runs) and one by a plain ``web.AppRunner`` (the
application's router and middleware chain), and each answer is also pinned to what it must be,
so a mistake shared by both paths fails too.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import unused_port

from mtlsauth.cli.serve import connection_policy
from mtlsauth.issuer.http.app import create_app, create_tls
from mtlsauth.issuer.http.connections import ConnectionCounter, GuardedSite
from mtlsauth.issuer.http.dispatch import Dispatcher, ServiceRunner
from mtlsauth.issuer.http.keys import METRICS
from tests.conftest import Home, client_context


@dataclasses.dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    #: An interim 100 Continue came first.
    continued: bool

    @property
    def error(self) -> str | None:
        if not self.body or not self.headers.get("content-type", "").startswith("application/json"):
            return None
        value = json.loads(self.body).get("error")
        return value if isinstance(value, str) else None

    def comparable(self) -> tuple[Any, ...]:
        """Everything both paths must agree on (the request id differs by design)."""
        h = self.headers
        return (
            self.status,
            self.error,
            h.get("allow"),
            h.get("content-type"),
            h.get("cache-control"),
            "x-request-id" in h,
            self.continued,
            self.body if self.status != 200 else len(self.body) > 0,
        )


@contextlib.asynccontextmanager
async def served(home: Home, runner_class: type[web.AppRunner]) -> AsyncIterator[tuple[int, Any]]:
    """The service on a free port through GuardedSite, run by ``runner_class``."""
    settings = dataclasses.replace(home.settings, port=unused_port())
    tls = create_tls(settings)
    app = create_app(settings, tls)
    runner = runner_class(app, handle_signals=False)
    await runner.setup()
    policy = connection_policy(settings)
    try:
        site = GuardedSite(
            runner, "127.0.0.1", settings.port,
            policy=policy, counter=ConnectionCounter(policy), ssl_context=tls.optional,
        )  # fmt: skip
        await site.start()
        yield settings.port, runner
    finally:
        await runner.cleanup()


async def exchange(home: Home, port: int, request: bytes) -> Answer:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=client_context(home), server_hostname="localhost"
    )
    try:
        writer.write(request)
        async with asyncio.timeout(10):
            data = await reader.read(-1)
    finally:
        writer.close()
    continued = data.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
    if continued:
        data = data.removeprefix(b"HTTP/1.1 100 Continue\r\n\r\n")
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Answer(int(lines[0].split()[1]), headers, body, continued)


def raw(method: str, target: str, *extra: str, body: bytes = b"") -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: localhost", "Connection: close", *extra]
    if body or method == "POST":
        lines += ["Content-Type: application/x-www-form-urlencoded", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


FORM = b"grant_type=client_credentials&client_id=nobody"

#: (request, status, OAuth error or None, Allow header or None)
CASES = {
    "token-post": (raw("POST", "/token", body=FORM), 401, "invalid_client", None),
    "token-get": (raw("GET", "/token"), 405, "invalid_request", "POST"),
    "token-options": (raw("OPTIONS", "/token"), 405, "invalid_request", "POST"),
    "token-head": (raw("HEAD", "/token"), 405, None, "POST"),
    "jwks-get": (raw("GET", "/jwks"), 200, None, None),
    "jwks-head": (raw("HEAD", "/jwks"), 200, None, None),
    "jwks-post": (raw("POST", "/jwks", body=FORM), 405, "invalid_request", "GET,HEAD"),
    "jwks-query": (raw("GET", "/jwks?x=%2F&y"), 200, None, None),
    # The router matches the percent-decoded path (an encoded slash stays one).
    "token-encoded": (raw("POST", "/%74oken", body=FORM), 401, "invalid_client", None),
    "jwks-encoded-get": (raw("GET", "/%6Awks"), 200, None, None),
    "jwks-encoded-slash": (raw("GET", "/jwks%2F"), 404, "invalid_request", None),
    "token-trailing-slash": (raw("POST", "/token/", body=FORM), 404, "invalid_request", None),
    "token-double-slash": (raw("POST", "//token", body=FORM), 404, "invalid_request", None),
    "token-upper": (raw("POST", "/TOKEN", body=FORM), 404, "invalid_request", None),
    "nowhere": (raw("GET", "/nowhere"), 404, "invalid_request", None),
    "crl-dynamic": (raw("GET", "/crl/none.crl"), 404, "invalid_request", None),
    "metadata": (raw("GET", "/.well-known/oauth-authorization-server"), 200, None, None),
    "continue": (
        raw("POST", "/token", "Expect: 100-continue", body=FORM), 401, "invalid_client", None
    ),
    "expect-unknown": (raw("POST", "/token", "Expect: 999-odd", body=FORM), 417, "invalid_request",
                       None),
    "too-big": (
        raw("POST", "/token", body=FORM + b"&pad=" + b"a" * (64 * 1024)), 413,
        "invalid_request", None,
    ),
}  # fmt: skip


async def test_the_dispatcher_answers_as_the_application_did(home: Home) -> None:
    async with served(home, ServiceRunner) as (lean, _), served(home, web.AppRunner) as (full, _):
        for name, (request, status, error, allow) in CASES.items():
            ours, theirs = await exchange(home, lean, request), await exchange(home, full, request)
            assert ours.comparable() == theirs.comparable(), name
            assert (ours.status, ours.error, ours.headers.get("allow")) == (status, error, allow), (
                name
            )
            if name.endswith("-head"):
                assert ours.body == b"", name
            if status != 417:  # refused before any middleware runs, on both paths
                assert "x-request-id" in ours.headers, name
            if status >= 400:
                assert ours.headers["cache-control"] == "no-store", name
        assert home.settings.max_body_bytes < 64 * 1024  # so too-big is over the limit


async def test_requests_are_counted_under_the_matched_route(home: Home) -> None:
    async with served(home, ServiceRunner) as (port, runner):
        assert isinstance(runner.server.request_handler, Dispatcher)
        for request in (raw("GET", "/jwks"), raw("HEAD", "/%6Awks"), raw("GET", "/nowhere")):
            await exchange(home, port, request)
        text = runner.app[METRICS].render().decode()
    assert 'endpoint="jwks",status="200"} 2.0' in text
    assert 'endpoint="unmatched",status="404"} 1.0' in text


def test_every_fixed_route_skips_the_router(home: Home) -> None:
    app = create_app(home.settings, create_tls(home.settings))
    with pytest.raises(RuntimeError):
        Dispatcher(app)  # not started: routes may still change
    app.freeze()
    fixed = Dispatcher(app).fixed_routes
    assert {("POST", "/token"), ("GET", "/jwks"), ("HEAD", "/jwks"), ("GET", "/health")} <= fixed
    assert not any(path.startswith("/crl/") for _, path in fixed)  # dynamic: the router's
