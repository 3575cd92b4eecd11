"""What one TCP connection may hold, and for how long (RFC 9112 message framing limits).

aiohttp on its own lets a client hold a connection while it trickles a request's headers or
body one byte at a time, accepts about 1 MB of headers per request, answers parser errors in
plain text that echoes the request bytes, and logs a traceback for every client that goes
away mid-body. This module bounds and quiets all of that:

* :class:`ConnectionCounter` caps the open connections per source address (an IPv6 /64 counts
  as one source; trusted proxies are exempt) and in total; a connection over a cap is aborted
  as soon as it is handed to the HTTP layer, before any byte of HTTP is read.
* :class:`GuardedRequestHandler` gives each connection ONE deadline, moved as the request
  advances: the request headers must arrive within ``header_timeout`` of the connection's
  start (or of the previous response on a keep-alive connection: the longer of it and the
  keep-alive timeout), the body within ``body_timeout`` of the headers. A connection past its
  deadline is aborted. Parser errors (RFC 9110 §15.5.1, RFC 6585 §5) become the service's
  JSON OAuth errors (RFC 6749 §5.2) and never echo the request.
* :class:`GuardedSite` is a TCP listener whose TLS handshakes are bounded in time and whose
  connections get the handler above.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
from collections import Counter
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, HttpProcessingError, LineTooLong
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_server import Server

from mtlsauth.core.errors import HeadersTooLarge, InvalidRequest, OAuthError, ServerError
from mtlsauth.core.peer import IPNetwork
from mtlsauth.issuer.http.middleware import http_error

__all__ = [
    "ConnectionCounter",
    "ConnectionPolicy",
    "GuardedRequestHandler",
    "GuardedSite",
    "source_key",
]

log = logging.getLogger("mtlsauth.issuer.http")

# The phases a connection's one deadline follows.
_HEADERS: Final = 0  # waiting for (the rest of) a request's headers
_BODY: Final = 1  # headers in, the body still arriving
_BUSY: Final = 2  # a whole request is in; the handler or the response runs (no deadline)


@dataclass(frozen=True, slots=True)
class ConnectionPolicy:
    """The limits of one listening process (``Settings`` names them the same way)."""

    header_timeout: float
    body_timeout: float
    keepalive_timeout: float
    handshake_timeout: float
    max_per_source: int
    max_total: int
    max_header_size: int
    max_headers: int
    #: Sources exempt from the per-source cap (TLS-terminating proxies carry many clients).
    exempt: tuple[IPNetwork, ...] = ()

    @property
    def between_requests(self) -> float:
        """How long a keep-alive connection may take for its next request's headers."""
        return max(self.header_timeout, self.keepalive_timeout)


def source_key(host: str) -> str:
    """The source a connection counts against: the IPv4 address, or the IPv6 /64 (one host
    is usually handed a whole /64, so counting single IPv6 addresses would bound nothing)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return host


class ConnectionCounter:
    """Open connections per source and in total, shared by every listener of a process."""

    def __init__(self, policy: ConnectionPolicy) -> None:
        self._policy = policy
        self._per_source: Counter[str] = Counter()
        self._total = 0
        # Log a refusal once per episode, not once per connection of a flood.
        self._refusing: set[str] = set()

    @property
    def total(self) -> int:
        return self._total

    def _exempt(self, host: str) -> bool:
        if not self._policy.exempt:
            return False
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self._policy.exempt)

    def admit(self, host: str) -> str | None:
        """Count a new connection from ``host``; its source key, or None when over a cap."""
        policy = self._policy
        if self._total >= policy.max_total:
            if "" not in self._refusing:
                self._refusing.add("")
                log.warning("connection limit reached (%d open): refusing", self._total)
            return None
        key = source_key(host)
        if self._per_source[key] >= policy.max_per_source and not self._exempt(host):
            if key not in self._refusing:
                self._refusing.add(key)
                log.warning(
                    "per-source connection limit reached for %s (%d open): refusing",
                    key,
                    self._per_source[key],
                )
            return None
        self._per_source[key] += 1
        self._total += 1
        return key

    def release(self, key: str) -> None:
        self._total -= 1
        left = self._per_source[key] - 1
        if left > 0:
            self._per_source[key] = left
        else:
            del self._per_source[key]
        self._refusing.discard(key)
        self._refusing.discard("")


def _parser_error(exc: BaseException | None) -> OAuthError:
    """The OAuth error for what aiohttp's HTTP parser refused (never echoing the request)."""
    if isinstance(exc, LineTooLong) or (
        isinstance(exc, BadHttpMessage) and exc.message == "Too many headers received"
    ):
        return HeadersTooLarge(f"request refused by the HTTP parser: {exc!r:.200}")
    return InvalidRequest(f"request refused by the HTTP parser: {exc!r:.200}")


class GuardedRequestHandler(RequestHandler):
    """aiohttp's per-connection protocol with a connection cap, one deadline and JSON errors."""

    __slots__ = (
        "_body",
        "_counter",
        "_deadline",
        "_deadline_handle",
        "_phase",
        "_policy",
        "_source",
    )

    def __init__(
        self,
        manager: Server,
        *,
        loop: asyncio.AbstractEventLoop,
        policy: ConnectionPolicy,
        counter: ConnectionCounter,
    ) -> None:
        super().__init__(
            manager,
            loop=loop,
            keepalive_timeout=policy.keepalive_timeout,
            access_log=None,  # type: ignore[arg-type] # aiohttp's documented "no access log"
            max_line_size=policy.max_header_size,
            max_field_size=policy.max_header_size,
            max_headers=policy.max_headers,
        )
        self._policy = policy
        self._counter = counter
        self._source: str | None = None
        self._phase = _HEADERS
        self._deadline = 0.0
        self._deadline_handle: asyncio.TimerHandle | None = None
        self._body: StreamReader | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        host = str(peer[0]) if peer else ""
        source = self._counter.admit(host)
        if source is None:
            transport.abort()  # type: ignore[attr-defined]
            return
        self._source = source
        self._set_deadline(self._policy.header_timeout)
        super().connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._source is not None:
            self._counter.release(self._source)
            self._source = None
        if self._deadline_handle is not None:
            self._deadline_handle.cancel()
            self._deadline_handle = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        count = self._request_count
        super().data_received(data)
        if self._request_count != count:
            # A request's headers are complete (start() pops it later, on its own task).
            payload = self._messages[-1][1] if self._messages else None
            if isinstance(payload, StreamReader) and not payload.is_eof():
                self._body = payload
                self._phase = _BODY
                self._set_deadline(self._policy.body_timeout)
            else:
                self._phase = _BUSY
        elif self._phase == _BODY and self._body is not None and self._body.is_eof():
            self._body = None
            self._phase = _BUSY

    async def finish_response(
        self, request: BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        if isinstance(resp, web.HTTPException) and resp.status >= 400:
            # Raised before any middleware ran (an unknown Expect, say): same JSON shape.
            resp = http_error(resp)
        result = await super().finish_response(request, resp, start_time)
        if self._phase == _BUSY and not self._messages:
            self._phase = _HEADERS
            self._set_deadline(self._policy.between_requests)
        return result

    def _set_deadline(self, seconds: float) -> None:
        # One timer per connection: moving the deadline later only stores a float; the
        # timer re-arms itself when it fires early (as aiohttp's keep-alive timer does).
        self._deadline = self._loop.time() + seconds
        handle = self._deadline_handle
        if handle is None or handle.when() > self._deadline:
            if handle is not None:
                handle.cancel()
            self._deadline_handle = self._loop.call_at(self._deadline, self._on_deadline)

    def _on_deadline(self) -> None:
        self._deadline_handle = None
        transport = self.transport
        if self._phase == _BUSY or transport is None:
            return
        if self._loop.time() < self._deadline:
            self._deadline_handle = self._loop.call_at(self._deadline, self._on_deadline)
            return
        log.info(
            "closing a slow connection from %s: request %s not received in time",
            self._source,
            "body" if self._phase == _BODY else "headers",
        )
        if self._body is not None:
            # The handler waiting for the body learns why first (a reset: a quiet close).
            self._body.set_exception(ConnectionResetError("request body not received in time"))
        # Abort, not close: a client that trickles its request need not read our goodbye.
        self.force_close()
        transport.abort()

    def log_exception(self, *args: Any, **kw: Any) -> None:
        """aiohttp logs a traceback when the rest of an unreadable body (one whose error was
        already answered) fails to drain after the response; that is the client's fault."""
        exc = kw.get("exc_info")
        if isinstance(exc, (web.RequestPayloadError, HttpProcessingError, ConnectionError)):
            log.info("dropping the connection from %s: %r", self._source, exc)
            return
        super().log_exception(*args, **kw)

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """aiohttp's last-resort answer: the parser's refusals and what escaped the app.

        A client that went away mid-request is not an error: the connection closes quietly.
        """
        if isinstance(exc, ConnectionError):
            log.debug("client %s went away mid-request: %r", request.remote, exc)
            raise exc
        if request.writer.output_size > 0:
            raise ConnectionResetError("a response was already under way")
        if isinstance(exc, HttpProcessingError):
            error = _parser_error(exc)
            log.info("%d %s from %s: %s", error.status, error.error, request.remote, error.detail)
        else:
            error = ServerError(f"aiohttp answered {status}")
            log.error("unhandled error for %s: %r", request.remote, exc)
        response = web.Response(
            status=error.status, body=error.body_bytes(), headers=error.headers()
        )
        response.force_close()
        return response


class GuardedSite(web.BaseSite):
    """A TCP listener (like ``web.TCPSite``) whose connections are guarded by ``policy``."""

    __slots__ = ("_counter", "_host", "_policy", "_port", "_reuse_port")

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        policy: ConnectionPolicy,
        counter: ConnectionCounter,
        ssl_context: ssl.SSLContext | None = None,
        reuse_port: bool = False,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=1024)
        self._host = host
        self._port = port
        self._policy = policy
        self._counter = counter
        self._reuse_port = reuse_port

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{scheme}://{host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        policy, counter = self._policy, self._counter

        def factory() -> GuardedRequestHandler:
            return GuardedRequestHandler(server, loop=loop, policy=policy, counter=counter)

        tls: dict[str, Any] = {}
        if self._ssl_context is not None:
            tls = {"ssl": self._ssl_context, "ssl_handshake_timeout": policy.handshake_timeout}
        self._server = await loop.create_server(
            factory,
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_port=self._reuse_port or None,
            **tls,
        )
