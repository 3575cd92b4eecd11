"""GET /jwks: the public signing keys (RFC 7517 §5); never any private member."""

from __future__ import annotations

from aiohttp import web

from mtlsauth.keys import jwks as jwk_set
from mtlsauth.server.keys import SIGNING_KEYS

__all__ = ["jwks"]


async def jwks(request: web.Request) -> web.Response:
    return web.json_response(
        jwk_set(request.app[SIGNING_KEYS]),
        content_type="application/jwk-set+json",
        headers={"Cache-Control": "public, max-age=300"},
    )
