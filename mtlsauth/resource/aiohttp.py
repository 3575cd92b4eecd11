"""aiohttp integration: a middleware for a whole app, or a per-route requirement.

::

    app[VERIFIER] = TokenVerifier(VerifierConfig(issuer=..., audience=...), JWKSCache(...))

    @require_token("invoices.read")
    async def invoices(request: web.Request) -> web.Response:
        claims = request[CLAIMS]
        ...

The certificate comes from the request's TLS connection, or from a trusted proxy's header
when ``app[PROXY]`` is set. Errors are RFC 6750 responses; never a 500 for a bad token.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from mtlsauth.errors import OAuthError
from mtlsauth.peer import ProxyConfig
from mtlsauth.resource.authorize import authorize, resolve_peer
from mtlsauth.resource.verify import Claims, TokenVerifier
from mtlsauth.tls import peer_certificate_der

__all__ = ["CLAIMS", "PROXY", "VERIFIER", "error_response", "require_token", "token_middleware"]

VERIFIER = web.AppKey("mtlsauth_verifier", TokenVerifier)
PROXY = web.AppKey("mtlsauth_proxy", ProxyConfig)
CLAIMS = web.RequestKey("mtlsauth_claims", dict[str, Any])


def error_response(error: OAuthError) -> web.Response:
    return web.Response(status=error.status, body=error.body_bytes(), headers=error.headers())


async def _authorize(
    request: web.Request, scopes: Iterable[str], allow_unbound: bool | None
) -> Claims:
    transport = request.transport
    tls_der = peer_certificate_der(transport.get_extra_info("ssl_object")) if transport else None
    peer = resolve_peer(request.app.get(PROXY), request.remote, tls_der, request.headers)
    return await authorize(
        request.app[VERIFIER],
        authorization=request.headers.getall(hdrs.AUTHORIZATION, []),
        peer_der=peer,
        scopes=scopes,
        allow_unbound=allow_unbound,
    )


async def _guarded(
    request: web.Request,
    handler: Handler,
    scopes: Iterable[str],
    allow_unbound: bool | None,
) -> web.StreamResponse:
    """Run ``handler`` with the verified claims in ``request[CLAIMS]``, or answer the error."""
    try:
        request[CLAIMS] = await _authorize(request, scopes, allow_unbound)
    except OAuthError as exc:
        return error_response(exc)
    return await handler(request)


def require_token(
    *scopes: str, allow_unbound: bool | None = None
) -> Callable[[Handler], Callable[[web.Request], Awaitable[web.StreamResponse]]]:
    """Protect one handler: a valid, bound token with every scope in ``scopes``."""

    def decorate(handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        @functools.wraps(handler)
        async def wrapper(request: web.Request) -> web.StreamResponse:
            return await _guarded(request, handler, scopes, allow_unbound)

        return wrapper

    return decorate


def token_middleware(
    *scopes: str, allow_unbound: bool | None = None, exempt: Iterable[str] = ()
) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """Protect every route of an app (except the ``exempt`` paths) with the same requirement."""
    public = frozenset(exempt)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in public:
            return await handler(request)
        return await _guarded(request, handler, scopes, allow_unbound)

    return middleware
