"""GET /jwks: the public signing keys (RFC 7517 §5) — next, active and recently retired."""

from __future__ import annotations

from aiohttp import web

from mtlsauth.issuer.http.keys import SIGNING_KEYS

__all__ = ["jwks"]


async def jwks(request: web.Request) -> web.Response:
    return web.Response(
        body=request.app[SIGNING_KEYS].jwks_bytes(),
        content_type="application/jwk-set+json",
        headers={"Cache-Control": "public, max-age=60"},
    )
