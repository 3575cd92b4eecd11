"""The one middleware around every request: errors become responses, requests are counted,
and old keep-alive connections are closed.

* OAuthError subclasses render themselves (RFC 6749 §5.2, RFC 6750 §3); a store that cannot
  be reached becomes 503 ``temporarily_unavailable``; aiohttp's HTTP errors (404, 405, 413)
  take the same JSON shape; a body that cannot be decoded is 400 ``invalid_request``; a client
  that went away mid-body is let go quietly (no traceback); anything else is logged with its
  traceback and answered with a generic 500 ``server_error`` — never a stack trace on the wire.
* Every response is counted by endpoint (route name) and status.
* A connection older than ``max_connection_age`` is closed after its response, so certificate,
  CRL and trust changes reach every client within that time.
* A connection whose client certificate the handshake found revoked is never served: every
  request on it is answered 401 ``invalid_client`` naming the reason (decision D10), and the
  connection is closed after it.

One middleware, not three: each layer costs the hot path a coroutine and a partial.
"""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler, Middleware

from mtlsauth.core.errors import (
    NO_STORE,
    InvalidClient,
    InvalidRequest,
    OAuthError,
    ServerError,
    TemporarilyUnavailable,
)
from mtlsauth.issuer.metrics import Metrics
from mtlsauth.issuer.store import StoreError
from mtlsauth.issuer.tls.contexts import connection_age
from mtlsauth.issuer.tls.revocation import Refusal

__all__ = ["http_error", "render", "service_middleware"]

log = logging.getLogger("mtlsauth.issuer.http")


def render(error: OAuthError) -> web.Response:
    return web.Response(status=error.status, body=error.body_bytes(), headers=error.headers())


def http_error(exc: web.HTTPException) -> web.Response:
    """aiohttp's own HTTP error (404, 405, 413, 417...) in the OAuth JSON shape: the standard
    reason phrase only, never the text aiohttp put in (it can echo request bytes)."""
    error = "invalid_request" if exc.status < 500 else "server_error"
    headers = {k: v for k, v in exc.headers.items() if k.lower() in {"allow", "retry-after"}}
    return web.json_response(
        {"error": error, "error_description": exc.reason},
        status=exc.status,
        headers={**NO_STORE, **headers},
    )


async def _respond(request: web.Request, handler: Handler) -> web.StreamResponse:
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
        return render(exc)
    except StoreError as exc:
        log.warning("%s %s -> 503: the store is unavailable: %s", request.method, request.path, exc)
        return render(TemporarilyUnavailable(str(exc)))
    except (web.RequestPayloadError, HttpProcessingError) as exc:
        # The body could not be decoded (a Content-Encoding that lies, a broken chunk).
        log.info(
            "%s %s -> 400: unreadable body: %r (peer %s)",
            request.method,
            request.path,
            exc,
            request.remote,
        )
        return render(InvalidRequest(f"unreadable body: {exc!r:.200}"))
    except ConnectionResetError:
        # The client went away mid-body: nobody to answer; aiohttp closes the connection.
        log.debug(
            "%s %s: the client went away (peer %s)", request.method, request.path, request.remote
        )
        raise
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return http_error(exc)
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return render(ServerError("unhandled exception (see the traceback above)"))


def _refusing(refusal: Refusal) -> Handler:
    """A handler that answers for a connection whose certificate was refused."""

    async def refuse(_request: web.Request) -> web.StreamResponse:
        raise InvalidClient(
            f"connection's client certificate refused: {refusal}",
            description=refusal.description,
            reason="revoked_certificate",
        )

    return refuse


def service_middleware(metrics: Metrics, max_connection_age: float) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        transport = request.transport
        ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
        refused: Refusal | None = getattr(ssl_object, "refused", None)
        try:
            response = await _respond(request, handler if refused is None else _refusing(refused))
        except web.HTTPException as exc:
            metrics.request(request.match_info.route.name or "unmatched", exc.status)
            raise
        metrics.request(request.match_info.route.name or "unmatched", response.status)
        if refused is not None or connection_age(ssl_object) > max_connection_age:
            response.force_close()
        return response

    return middleware
