"""The ASGI middleware behind real nginx and real uvicorn, with the usual X-Forwarded-For line.

uvicorn's default ``--proxy-headers`` replaces the proxy's address with the forwarded client's
before any app runs, so the proxy can no longer be told from a forger: the certificate header
is refused — fail closed — with a description that names that header (not Authorization) and a
log line that says why and what to do. Run with ``--no-proxy-headers``, the middleware judges
trust on the real peer and hands the app the client address the proxy vouches for.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from mtlsauth.client import TokenClient
from mtlsauth.core.peer import ProxyConfig, parse_networks
from mtlsauth.resource import JWKSCache, TokenVerifier, VerifierConfig
from mtlsauth.resource.asgi import BearerMiddleware
from tests.conftest import ClientCert, Home, client_context, running
from tests.proxies import ADDRESS_HEADER, CERT_HEADER, PROXY_ADDRESS, nginx
from tests.test_proxy import uvicorn_app


async def whoami(request: Request) -> JSONResponse:
    return JSONResponse({"client": request.client.host if request.client else None})


def proxy_for(home: Home, upstream: str, workdir: Path) -> Any:
    return nginx(
        workdir,
        upstream=upstream,
        server_cert=home.path / "tls" / "chain.pem",
        server_key=home.path / "tls" / "key.pem",
        client_ca=home.settings.client_ca,
        verify_client="optional",
        forward_address=True,
    )


async def get(url: str, home: Home, cert: ClientCert, token: str) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            url,
            headers={"Authorization": f"Bearer {token}", ADDRESS_HEADER: "198.51.100.9"},
            ssl=client_context(home, cert),
        ) as resp,
    ):
        return resp.status, await resp.json()


@pytest.mark.parametrize("proxy_headers", [True, False])
async def test_uvicorn_behind_nginx(
    home: Home, tmp_path: Path, caplog: pytest.LogCaptureFixture, proxy_headers: bool
) -> None:
    await home.aadd_client(
        "--auth-method", "tls_client_auth", "--client-id", "svc", "--san-dns", "svc"
    )  # fmt: skip
    cert = home.issue("svc", dns=["svc"])
    settings = home.settings
    keys = JWKSCache(issuer=settings.issuer, ssl_context=client_context(home, None))
    verifier = TokenVerifier(VerifierConfig(settings.issuer, settings.audience), keys)
    proxy = ProxyConfig(
        trusted=parse_networks([PROXY_ADDRESS]), header=CERT_HEADER, fmt="nginx",
        address_header=ADDRESS_HEADER,
    )  # fmt: skip
    app = BearerMiddleware(
        Starlette(routes=[Route("/whoami", whoami)]), verifier=verifier, proxy=proxy
    )
    try:
        async with running(home):
            async with TokenClient(
                issuer=settings.issuer, ssl_context=client_context(home, cert), client_id="svc"
            ) as client:
                token = await client.token()
            async with uvicorn_app(app, proxy_headers=proxy_headers) as upstream:
                with (
                    proxy_for(home, upstream, tmp_path / "nginx") as px,
                    caplog.at_level(logging.INFO, logger="mtlsauth.resource"),
                ):
                    status, body = await get(f"{px}/whoami", home, cert, token)
    finally:
        await keys.close()
    if proxy_headers:
        # Fail closed, and say which header and why.
        assert (status, body["error"]) == (400, "invalid_request")
        assert CERT_HEADER in body["error_description"]
        assert "Authorization" not in body["error_description"]
        assert "--no-proxy-headers" in caplog.text
    else:
        # The documented set-up: the proxy is recognised, and the app sees the client's
        # address as nginx saw it (the right-most X-Forwarded-For entry, not what the client
        # claimed to its left, not the proxy's).
        assert status == 200, body
        assert body["client"] == "127.0.0.1"
