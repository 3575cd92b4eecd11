"""aiohttp integration: a middleware for a whole app, or a per-route requirement (RFC 6750 §2.1
bearer tokens, bound to the client certificate by RFC 8705 §3).

::

    app[VERIFIER] = TokenVerifier(VerifierConfig(issuer=..., audience=...), JWKSCache(...))

    @require_token("invoices.read")
    async def invoices(request: web.Request) -> web.Response:
        claims = request[CLAIMS]
        ...

The certificate comes from the request's TLS connection, or from a trusted proxy's header
when ``app[PROXY]`` is set. Errors are RFC 6750 responses; never a 500 for a bad token. Why a
request was refused is logged at INFO (logger ``mtlsauth.resource``) with the request id that
the response's ``X-Request-Id`` carries.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

from mtlsauth.core.errors import OAuthError
from mtlsauth.core.peer import ProxyConfig, peer_certificate_der
from mtlsauth.core.requestid import REQUEST_ID_HEADER
from mtlsauth.resource.authorize import authorize, log_refusal, resolve_peer
from mtlsauth.resource.verify import Claims, TokenVerifier

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
    ssl_object = transport.get_extra_info("ssl_object") if transport else None
    tls_der = peer_certificate_der(ssl_object)
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
        request_id = log_refusal(
            exc,
            method=request.method,
            path=request.path,
            remote=request.remote,
            headers=request.headers,
            proxy=request.app.get(PROXY),
        )
        response = error_response(exc)
        response.headers[REQUEST_ID_HEADER] = request_id
        return response
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


def _exempt(request: web.Request, public: frozenset[str]) -> bool:
    """Whether the route the router dispatched this request to is one of ``public``.

    Decided on the matched resource, not on ``request.path``: the path is percent-decoded
    while the router matches the raw one, so ``/api%2Fhealth`` reads as ``/api/health`` yet
    dispatches to a ``/{name}`` handler. Only a plain (fixed-path) resource can be exempt;
    anything else — no route matched, a dynamic or static resource — is protected.
    """
    route = request.match_info.route
    resource = route.resource if route is not None else None
    return isinstance(resource, web.PlainResource) and resource.canonical in public


def token_middleware(
    *scopes: str, allow_unbound: bool | None = None, exempt: Iterable[str] = ()
) -> Middleware:
    """Protect every route of an app (except the ``exempt`` fixed paths) with the same
    requirement (RFC 6750 §3 errors)."""
    public = frozenset(exempt)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if _exempt(request, public):
            return await handler(request)
        return await _guarded(request, handler, scopes, allow_unbound)

    return middleware
