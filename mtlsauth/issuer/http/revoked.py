"""GET /revoked: the revoked, unexpired access-token ids, for resource servers to poll.

Public, like /jwks: it names token ids (``jti``), never tokens, and a stolen token's holder
learns nothing from it but that the token no longer works. Conditional GET (RFC 9110 §13.1.2
``If-None-Match``) answers 304 while nothing changed.
"""

from __future__ import annotations

from aiohttp import hdrs, web

from mtlsauth.issuer.http.keys import REVOCATION_FEED

__all__ = ["revoked"]


async def revoked(request: web.Request) -> web.Response:
    snapshot = await request.app[REVOCATION_FEED].current()
    headers = {"ETag": snapshot.etag, "Cache-Control": "no-cache"}
    asked = request.headers.getall(hdrs.IF_NONE_MATCH, [])
    if any(snapshot.etag in value.split(",") or value.strip() == "*" for value in asked):
        return web.Response(status=304, headers=headers)
    return web.Response(body=snapshot.body, content_type="application/json", headers=headers)
