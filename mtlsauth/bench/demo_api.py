"""A small protected API for demos and end-to-end tests: ``mtlsauth demo-api``.

``GET /hello`` needs a valid token bound to the presented certificate with scope
``demo.read``; ``GET /health`` is public. It trusts the home's CA for the issuer's TLS and the
home's client CA for client certificates (asked for, not required, so a missing certificate
gets an RFC 6750 answer instead of a failed handshake).
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from mtlsauth.core.peer import ProxyConfig
from mtlsauth.issuer.settings import Settings
from mtlsauth.issuer.tls.contexts import ServerTLSConfig, build_server_context
from mtlsauth.resource import JWKSCache, TokenVerifier, VerifierConfig
from mtlsauth.resource.aiohttp import CLAIMS, PROXY, VERIFIER, require_token

__all__ = ["DEMO_SCOPE", "create_demo_api", "demo_api_ssl_context"]

DEMO_SCOPE = "demo.read"
JWKS = web.AppKey("demo_jwks", JWKSCache)


@require_token(DEMO_SCOPE)
async def hello(request: web.Request) -> web.Response:
    claims = request[CLAIMS]
    return web.json_response(
        {
            "message": f"hello, {claims['sub']}",
            "client_id": claims["client_id"],
            "scope": claims.get("scope", ""),
            "cnf": claims.get("cnf"),
        }
    )


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def create_demo_api(
    *,
    issuer: str,
    audience: str,
    issuer_ca: Path,
    min_refetch_interval: float = 10.0,
    proxy: ProxyConfig | None = None,
) -> web.Application:
    app = web.Application()
    if proxy is not None:
        app[PROXY] = proxy
    jwks = JWKSCache(
        issuer=issuer,
        ssl_context=ssl.create_default_context(cafile=str(issuer_ca)),
        min_refetch_interval=min_refetch_interval,
    )
    app[JWKS] = jwks
    app[VERIFIER] = TokenVerifier(VerifierConfig(issuer=issuer, audience=audience), jwks)

    async def close_jwks(app: web.Application) -> AsyncIterator[None]:
        yield
        await app[JWKS].close()

    app.cleanup_ctx.append(close_jwks)
    app.router.add_get("/hello", hello)
    app.router.add_get("/health", health)
    return app


def demo_api_ssl_context(settings: Settings) -> ssl.SSLContext:
    """The home's server certificate; client certificates from the home's client CA."""
    config = ServerTLSConfig(
        cert=settings.tls_cert, key=settings.tls_key, client_ca=settings.client_ca
    )
    return build_server_context(config, require_cert=False)
