"""Every integration logs why it refused a request, at INFO, with a request id; the client gets
only the generic RFC 6750 description."""

from __future__ import annotations

import logging
import ssl
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from mtlsauth.resource import JWKSCache, TokenVerifier, VerifierConfig
from mtlsauth.resource.aiohttp import VERIFIER, require_token
from mtlsauth.resource.asgi import BearerMiddleware


def verifier() -> TokenVerifier:
    keys = JWKSCache(issuer="https://issuer.example", ssl_context=ssl.create_default_context())
    return TokenVerifier(VerifierConfig("https://issuer.example", "api"), keys)


def refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "mtlsauth.resource"]


async def test_aiohttp_logs_the_reason(
    aiohttp_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mtlsauth.resource")

    @require_token("read")
    async def handler(_: web.Request) -> web.Response:
        return web.Response()

    app = web.Application()
    app[VERIFIER] = verifier()
    app.router.add_get("/", handler)
    client: TestClient[Any, Any] = await aiohttp_client(app)
    resp = await client.get("/", headers={"Authorization": "Basic abc", "X-Request-Id": "a-1"})
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"] == 'Bearer realm="mtlsauth"'
    assert refusals(caplog) == [
        "refused aiohttp request a-1: 401 invalid_token: Authorization scheme 'Basic' is not Bearer"
    ]


async def test_asgi_logs_the_reason(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mtlsauth.resource")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("refused requests never reach the app")

    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "path": "/",
        "headers": [(b"authorization", b"Bearer a b"), (b"x-request-id", b"b-2")],
        "client": ("127.0.0.1", 5000),
    }
    await BearerMiddleware(app, verifier=verifier())(scope, None, send)  # type: ignore[arg-type]
    assert sent[0]["status"] == 400
    body = sent[1]["body"]
    assert b"not one token" not in body  # the reason stays in the log
    (line,) = refusals(caplog)
    assert line.startswith("refused asgi request b-2: 400 invalid_request:")
    assert "not one token" in line
