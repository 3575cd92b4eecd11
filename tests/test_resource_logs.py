"""The resource-server integrations log why a request got 401/403: the precise reason at INFO
(logger ``mtlsauth.resource``) with the request id the response carries in ``X-Request-Id``;
the client sees only the generic description."""

from __future__ import annotations

import logging
from urllib.parse import quote

import aiohttp
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from mtlsauth.core.peer import ProxyConfig, parse_networks
from mtlsauth.resource import JWKSCache, TokenVerifier, VerifierConfig
from mtlsauth.resource.asgi import BearerMiddleware
from tests.conftest import ClientCert, Home, client_context, running
from tests.test_proxy import uvicorn_app
from tests.test_resource import demo_api, get_token

CERT_HEADER = "X-SSL-Client-Cert"


@pytest.fixture
def svc(home: Home) -> tuple[ClientCert, ClientCert]:
    """The demo API's client with its certificate, and another certificate of the same CA."""
    home.add_client("--auth-method", "tls_client_auth", "--client-id", "demo",
                    "--san-dns", "demo", "--scope", "demo.read")  # fmt: skip
    return home.issue("demo", dns=["demo"]), home.issue("intruder", dns=["intruder"])


def refusals(caplog: pytest.LogCaptureFixture) -> dict[str, logging.LogRecord]:
    """The resource checker's refusal lines by request id."""
    return {
        r.request_id: r  # type: ignore[attr-defined]
        for r in caplog.records
        if r.name == "mtlsauth.resource" and r.levelno == logging.INFO
    }


async def test_aiohttp_refusal_is_logged(
    home: Home, svc: tuple[ClientCert, ClientCert], caplog: pytest.LogCaptureFixture
) -> None:
    right, intruder = svc
    async with running(home), demo_api(home) as api:
        token = await get_token(home, right)
        with caplog.at_level(logging.INFO, logger="mtlsauth.resource"):
            async with (
                aiohttp.ClientSession() as session,
                session.get(
                    f"{api}/hello",
                    headers={"Authorization": f"Bearer {token}", "X-Request-Id": "forged-id"},
                    ssl=client_context(home, intruder),
                ) as resp,
            ):
                assert resp.status == 401
                body = await resp.json()
                request_id = resp.headers["X-Request-Id"]
    assert body["error"] == "invalid_token"
    assert request_id != "forged-id"  # not a trusted proxy: its id is not believed
    record = refusals(caplog)[request_id]
    assert record.getMessage().endswith(
        f"the token is bound to another certificate (peer 127.0.0.1, request {request_id})"
    )
    assert record.status == 401  # type: ignore[attr-defined]
    assert record.error == "invalid_token"  # type: ignore[attr-defined]
    assert "another certificate" not in body["error_description"]
    assert token not in caplog.text


async def whoami(request: Request) -> JSONResponse:
    return JSONResponse({"client": request.client.host if request.client else None})


async def test_asgi_refusal_is_logged(
    home: Home, svc: tuple[ClientCert, ClientCert], caplog: pytest.LogCaptureFixture
) -> None:
    right, _intruder = svc
    settings = home.settings
    keys = JWKSCache(issuer=settings.issuer, ssl_context=client_context(home, None))
    verifier = TokenVerifier(VerifierConfig(settings.issuer, settings.audience), keys)
    # The test client stands in for the proxy (127.0.0.1), so its header and its id count.
    proxy = ProxyConfig(trusted=parse_networks(["127.0.0.1"]), header=CERT_HEADER, fmt="nginx")
    app = BearerMiddleware(
        Starlette(routes=[Route("/whoami", whoami)]),
        verifier=verifier,
        scopes=("demo.admin",),
        proxy=proxy,
    )
    try:
        async with running(home), uvicorn_app(app) as upstream:
            token = await get_token(home, right)
            headers = {
                "Authorization": f"Bearer {token}",
                CERT_HEADER: quote(right.cert.read_text(), safe=""),
                "X-Request-Id": "proxy-7f3a",
            }
            with caplog.at_level(logging.INFO, logger="mtlsauth.resource"):
                async with (
                    aiohttp.ClientSession() as session,
                    session.get(f"{upstream}/whoami", headers=headers) as resp,
                ):
                    assert resp.status == 403
                    body = await resp.json()
                    assert resp.headers["X-Request-Id"] == "proxy-7f3a"
                async with (
                    aiohttp.ClientSession() as session,
                    session.get(f"{upstream}/whoami") as resp,
                ):
                    assert resp.status == 401
                    missing_id = resp.headers["X-Request-Id"]
    finally:
        await keys.close()
    assert body["error"] == "insufficient_scope"
    logged = refusals(caplog)
    assert "lacks scope(s) ['demo.admin']" in logged["proxy-7f3a"].getMessage()
    assert logged["proxy-7f3a"].path == "/whoami"  # type: ignore[attr-defined]
    assert "no Authorization header" in logged[missing_id].getMessage()
    assert token not in caplog.text
