"""The one middleware around every request: errors become responses, requests are counted,
logged with their request id, and old keep-alive connections are closed.

* OAuthError subclasses render themselves (RFC 6749 §5.2, RFC 6750 §3); a store that cannot
  be reached becomes 503 ``temporarily_unavailable``; aiohttp's HTTP errors (404, 405, 413)
  take the same JSON shape; a body that cannot be decoded is 400 ``invalid_request``; a client
  that went away mid-body is let go quietly (no traceback); anything else is logged with its
  traceback and answered with a generic 500 ``server_error`` — never a stack trace on the wire.
* Every request gets an id (:mod:`mtlsauth.core.requestid`: a trusted proxy's ``X-Request-Id``,
  else a new one), echoed in the response's ``X-Request-Id`` and carried by every log line
  logged while it runs. One line per request, with ``method``, ``path`` (never the query),
  ``status``, ``duration_ms``, ``client_id`` (once authenticated), ``error`` and
  ``request_id`` as fields: at INFO for a refusal and WARNING for a 5xx (with the precise
  reason, which the client never sees), at DEBUG for a success (the hot path does not format
  a line nobody reads).
* Every response is counted by endpoint (route name) and status.
* A connection older than ``max_connection_age`` is closed after its response, so certificate,
  CRL and trust changes reach every client within that time.
* A connection whose client certificate the handshake found revoked is never served: every
  request on it is answered 401 ``invalid_client`` naming the reason (decision D10), and the
  connection is closed after it.

One middleware, not three: each layer costs the hot path a coroutine and a partial.
"""

from __future__ import annotations

import ipaddress
import logging
import time

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
from mtlsauth.core.peer import IPNetwork
from mtlsauth.core.requestid import REQUEST_ID, REQUEST_ID_HEADER, choose_request_id
from mtlsauth.issuer.http.keys import CLIENT_ID
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


#: (error code, precise reason) of a refused request, for its log line.
_Failure = tuple[str, str] | None


async def _respond(request: web.Request, handler: Handler) -> tuple[web.StreamResponse, _Failure]:
    try:
        return await handler(request), None
    except OAuthError as exc:
        return render(exc), (exc.error, f"{exc.detail} (peer {request.remote})")
    except StoreError as exc:
        unavailable = TemporarilyUnavailable(str(exc))
        return render(unavailable), (unavailable.error, f"the store is unavailable: {exc}")
    except (web.RequestPayloadError, HttpProcessingError) as exc:
        # The body could not be decoded (a Content-Encoding that lies, a broken chunk).
        error = InvalidRequest(f"unreadable body: {exc!r:.200}")
        return render(error), (
            error.error,
            f"unreadable body: {exc!r:.200} (peer {request.remote})",
        )
    except ConnectionResetError:
        # The client went away mid-body: nobody to answer; aiohttp closes the connection.
        log.debug(
            "%s %s: the client went away (peer %s)", request.method, request.path, request.remote
        )
        raise
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = http_error(exc)
        return response, ("invalid_request" if exc.status < 500 else "server_error", exc.reason)
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        crash = ServerError("unhandled exception (see the traceback above)")
        return render(crash), (crash.error, "unhandled exception")


def _refusing(refusal: Refusal) -> Handler:
    """A handler that answers for a connection whose certificate was refused."""

    async def refuse(_request: web.Request) -> web.StreamResponse:
        raise InvalidClient(
            f"connection's client certificate refused: {refusal}",
            description=refusal.description,
            reason="revoked_certificate",
        )

    return refuse


def _trusted(request: web.Request, proxies: tuple[IPNetwork, ...]) -> bool:
    """Whether the TCP peer (never a forwarded address) is a trusted proxy."""
    if not proxies or request.transport is None:
        return False
    peer = request.transport.get_extra_info("peername")
    try:
        address = ipaddress.ip_address(peer[0]) if peer else None
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address is not None and any(address in network for network in proxies)


def _log(
    request: web.Request, status: int, failure: _Failure, started: float, request_id: str
) -> None:
    if failure is None:
        level = logging.DEBUG
    elif status >= 500:
        level = logging.WARNING
    else:
        level = logging.INFO
    if not log.isEnabledFor(level):
        return
    error, reason = failure if failure is not None else (None, None)
    fields = {
        "request_id": request_id,
        "method": request.method,
        "path": request.path,
        "status": status,
        "duration_ms": round((time.perf_counter() - started) * 1000, 3),
        "client_id": request.get(CLIENT_ID),
        "error": error,
    }
    if failure is None:
        log.log(level, "%s %s -> %d", request.method, request.path, status, extra=fields)
    else:
        log.log(
            level, "%s %s -> %d %s: %s", request.method, request.path, status, error, reason,
            extra=fields,
        )  # fmt: skip


def service_middleware(
    metrics: Metrics, max_connection_age: float, trusted_proxies: tuple[IPNetwork, ...] = ()
) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        transport = request.transport
        ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
        refused: Refusal | None = getattr(ssl_object, "refused", None)
        request_id = choose_request_id(
            request.headers.getall(REQUEST_ID_HEADER, []),
            trusted=_trusted(request, trusted_proxies),
        )
        context = REQUEST_ID.set(request_id)
        try:
            try:
                response, failure = await _respond(
                    request, handler if refused is None else _refusing(refused)
                )
            except web.HTTPException as exc:
                exc.headers[REQUEST_ID_HEADER] = request_id
                metrics.request(request.match_info.route.name or "unmatched", exc.status)
                _log(request, exc.status, None, started, request_id)
                raise
            response.headers[REQUEST_ID_HEADER] = request_id
            metrics.request(request.match_info.route.name or "unmatched", response.status)
            _log(request, response.status, failure, started, request_id)
        finally:
            REQUEST_ID.reset(context)
        if refused is not None or connection_age(ssl_object) > max_connection_age:
            response.force_close()
        return response

    return middleware
