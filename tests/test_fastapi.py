"""The FastAPI dependency: a FastAPI app under uvicorn behind a real nginx that terminates
mutual TLS, with a live token service; and its OpenAPI description."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from pathlib import Path
from typing import Annotated, Any

import aiohttp
import pytest
from fastapi import Depends, FastAPI

from mtlsauth.core.peer import ProxyConfig, parse_networks
from mtlsauth.core.thumbprint import x5t_s256
from mtlsauth.resource import Claims, JWKSCache, RevocationList, TokenVerifier, VerifierConfig
from mtlsauth.resource.fastapi import SCHEME_NAME, install, require_token
from tests.conftest import ClientCert, Home, client_context, running
from tests.proxies import CERT_HEADER, PROXY_ADDRESS, nginx
from tests.test_gate import issue
from tests.test_proxy import uvicorn_app


def make_app(verifier: TokenVerifier) -> FastAPI:
    app = FastAPI()
    install(
        app,
        verifier,
        proxy=ProxyConfig(trusted=parse_networks([PROXY_ADDRESS]), header=CERT_HEADER, fmt="nginx"),
    )

    @app.get("/invoices")
    async def invoices(
        claims: Annotated[Claims, Depends(require_token("demo.read"))],
    ) -> dict[str, Any]:
        return {"client_id": claims["client_id"], "cnf": claims["cnf"]}

    @app.get("/admin")
    async def admin(
        claims: Annotated[Claims, Depends(require_token("demo.admin"))],
    ) -> dict[str, Any]:
        return {"client_id": claims["client_id"]}

    return app


async def get(url: str, home: Home, cert: ClientCert | None, token: str | None,
              request_id: str = "") -> tuple[int, str, Any]:  # fmt: skip
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if request_id:
        headers["X-Request-Id"] = request_id
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, headers=headers, ssl=client_context(home, cert)) as resp,
    ):
        return resp.status, resp.headers.get("WWW-Authenticate", ""), await resp.json()


@pytest.fixture
def certs(home: Home) -> tuple[ClientCert, ClientCert]:
    home.add_client("--auth-method", "tls_client_auth", "--client-id", "svc", "--san-dns", "svc",
                    "--scope", "demo.read")  # fmt: skip
    return home.issue("svc", dns=["svc"]), home.issue("other", dns=["other"])


async def test_fastapi_behind_nginx(
    home: Home,
    tmp_path: Path,
    certs: tuple[ClientCert, ClientCert],
    caplog: pytest.LogCaptureFixture,
) -> None:
    right, other = certs
    settings = home.settings
    ctx = client_context(home, None)
    keys = JWKSCache(issuer=settings.issuer, ssl_context=ctx)
    revocations = RevocationList(issuer=settings.issuer, ssl_context=ctx, interval=0.3)
    verifier = TokenVerifier(
        VerifierConfig(settings.issuer, settings.audience), keys, revocations=revocations
    )
    caplog.set_level(logging.INFO, logger="mtlsauth.resource")
    try:
        async with running(home) as service, uvicorn_app(make_app(verifier)) as upstream:
            token = await issue(home, right)
            with nginx(
                tmp_path / "nginx", upstream=upstream, server_cert=home.path / "tls" / "chain.pem",
                server_key=home.path / "tls" / "key.pem", client_ca=settings.client_ca,
            ) as proxy:  # fmt: skip
                status, _, body = await get(f"{proxy}/invoices", home, right, token)
                assert status == 200, body
                assert body == {"client_id": "svc", "cnf": {"x5t#S256": x5t_s256(right.der)}}
                for cert in (other, None):
                    status, challenge, body = await get(f"{proxy}/invoices", home, cert, token)
                    assert (status, body["error"]) == (401, "invalid_token")
                    assert 'error="invalid_token"' in challenge
                status, challenge, body = await get(f"{proxy}/admin", home, right, token, "r-7")
                assert (status, body["error"]) == (403, "insufficient_scope")
                assert 'scope="demo.admin"' in challenge
                # The client sees the generic description; the log has the reason and the id.
                assert "demo.admin" not in body["error_description"]
                assert any(
                    "-> 403 insufficient_scope" in r.getMessage()
                    and "request r-7)" in r.getMessage()
                    and "lacks scope" in r.getMessage()
                    for r in caplog.records
                )
                assert all(token not in r.getMessage() for r in caplog.records)
                # Revoked at the issuer: refused by the library within the poll interval.
                status, _, _ = await service.post(
                    "/revoke", data={"token": token, "client_id": "svc"}, cert=right
                )
                assert status == 200
                revoked_at = time.monotonic()
                while (await get(f"{proxy}/invoices", home, right, token))[0] == 200:
                    assert time.monotonic() - revoked_at < 5, "the revocation did not arrive"
                    await asyncio.sleep(0.1)
                status, _, body = await get(f"{proxy}/invoices", home, right, token)
                assert (status, body["error"]) == (401, "invalid_token")
    finally:
        await revocations.close()
        await keys.close()


def test_openapi_shows_what_each_route_needs() -> None:
    keys = JWKSCache(issuer="https://issuer.example", ssl_context=ssl.create_default_context())
    verifier = TokenVerifier(VerifierConfig("https://issuer.example", "api"), keys)
    spec = make_app(verifier).openapi()
    scheme = spec["components"]["securitySchemes"][SCHEME_NAME]
    assert (scheme["type"], scheme["scheme"], scheme["bearerFormat"]) == ("http", "bearer", "JWT")
    assert spec["paths"]["/invoices"]["get"]["security"] == [{SCHEME_NAME: ["demo.read"]}]
    assert spec["paths"]["/admin"]["get"]["security"] == [{SCHEME_NAME: ["demo.admin"]}]
