"""The one place errors become responses.

OAuthError subclasses render themselves (RFC 6749 §5.2); aiohttp's HTTP errors (404, 405, 413)
become the same JSON shape; anything else is logged with its traceback and answered with a
generic 500 ``server_error`` — never a stack trace on the wire.
"""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from mtlsauth.errors import OAuthError, ServerError, TemporarilyUnavailable
from mtlsauth.metrics import Metrics
from mtlsauth.store import StoreError
from mtlsauth.tls import connection_age

__all__ = ["connection_lifetime", "error_middleware", "metrics_middleware"]

log = logging.getLogger("mtlsauth.server")


def _render(error: OAuthError) -> web.Response:
    return web.Response(status=error.status, body=error.body_bytes(), headers=error.headers())


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except OAuthError as exc:
        log.info(
            "%s %s -> %d %s: %s (peer %s)",
            request.method,
            request.path,
            exc.status,
            exc.error,
            exc.detail,
            request.remote,
        )
        return _render(exc)
    except StoreError as exc:
        log.warning("%s %s -> 503: the store is unavailable: %s", request.method, request.path, exc)
        return _render(TemporarilyUnavailable(str(exc)))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        error = "invalid_request" if exc.status < 500 else "server_error"
        headers = {k: v for k, v in exc.headers.items() if k.lower() in {"allow", "retry-after"}}
        return web.json_response(
            {"error": error, "error_description": exc.reason},
            status=exc.status,
            headers={"Cache-Control": "no-store", **headers},
        )
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return _render(ServerError("unhandled exception (see the traceback above)"))


def connection_lifetime(max_age: float) -> Middleware:
    """Close keep-alive connections older than ``max_age`` after their current response, so
    that certificate, CRL and trust changes reach every client within that time."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        transport = request.transport
        ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
        if connection_age(ssl_object) > max_age:
            response.force_close()
        return response

    return middleware


def metrics_middleware(metrics: Metrics) -> Middleware:
    """Count every request by endpoint (route name) and final status."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        route = request.match_info.route
        endpoint = route.name or "unmatched"
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            metrics.request(endpoint, exc.status)
            raise
        metrics.request(endpoint, response.status)
        return response

    return middleware
