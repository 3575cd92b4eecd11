"""A TLS transport for aiohttp on pyOpenSSL memory BIOs, measured against Python's ``ssl``.

Issue 14, item 1: Python's ``ssl`` is linked to the system OpenSSL 3.0; pyOpenSSL drives the
OpenSSL that ``cryptography`` bundles (4.0 here), whose handshake costs less library time. This
module is the prototype that decides whether swapping the TLS layer pays for a token over a new
connection. It is a benchmark comparison, not part of the service (see
``mtlsauth/bench/README.md``, "A pyOpenSSL TLS transport"): ``scripts/bench --tls-layer-ab``
runs the service's own application, listeners and connection guards over it, with the
service's TLS policy, in rounds alternating with the ``ssl`` path.

The model is Twisted's ``TLSMemoryBIOProtocol``: :class:`TLSProtocol` is the protocol the event
loop sees on the raw TCP socket (``create_server(..., ssl=None)``); it feeds the bytes it
receives into ``Connection.bio_write``, drives the handshake and ``recv``, and sends whatever
OpenSSL wrote into the outgoing memory BIO (``bio_read``), alerts included, so a refused client
learns why (RFC 8446 §6.2). Once the handshake is done it hands aiohttp's protocol a
:class:`TLSTransport`, whose ``get_extra_info`` gives what mtlsauth reads: ``ssl_object`` (the
connection's verified leaf and revocation verdict), ``peercert_der`` and ``peercert_chain`` (the
certificates the client sent, RFC 8446 §4.4.2). Flow control passes through: aiohttp's
``pause_reading`` pauses the socket, the socket's ``pause_writing`` reaches aiohttp.

The service's TLS policy (RFC 8705 §2): TLS 1.2 or 1.3, renegotiation refused, the client CA
bundle and registered anchors with partial-chain verification, the client certificate optional
or required. Revocation is decided inside the handshake by a verify callback (RFC 5280 §5), so a
revoked certificate gets the ``certificate_revoked`` alert; a resumed session (no verification
runs) is checked after the handshake and marked refused, as the ``ssl`` path does. pyOpenSSL
cannot set the TLS 1.3 ticket count (``SSL_CTX_set_num_tickets`` is not in its bindings), so
OpenSSL's default of two tickets is sent, where the service sends one; they are stateful
(``OP_NO_TICKET``), which makes them cheap (see :func:`build_context`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
import time
from collections.abc import Callable
from typing import Any, Final

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL
from OpenSSL._util import ffi as _ffi
from OpenSSL._util import lib as _lib
from OpenSSL.crypto import X509, X509StoreFlags

from mtlsauth.bench.benchmark import BareResponder, fixed_app
from mtlsauth.cli.logs import configure_logging
from mtlsauth.cli.serve import SHUTDOWN_TIMEOUT, connection_policy
from mtlsauth.core.peer import PeerCertificate
from mtlsauth.issuer.http.app import create_app, create_tls, server_tls_config
from mtlsauth.issuer.http.connections import (
    ConnectionCounter,
    GuardedRequestHandler,
    GuardedSite,
)
from mtlsauth.issuer.http.dispatch import ServiceRunner
from mtlsauth.issuer.settings import load_settings
from mtlsauth.issuer.tls.contexts import (
    CheckingSSLObject,
    ServerTLSConfig,
    build_server_context,
)
from mtlsauth.issuer.tls.revocation import RevocationState

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is optional
    uvloop = None  # type: ignore[assignment]

__all__ = ["PeerInfo", "TLSProtocol", "TLSTransport", "build_context", "serve", "ssl_version"]

log = logging.getLogger("mtlsauth.issuer.http")

#: Bytes read from the outgoing memory BIO at a time (a whole flight fits).
_CHUNK: Final = 65536
_SESSION_ID_CONTEXT: Final = b"mtlsauth"


def build_context(
    config: ServerTLSConfig, *, require_cert: bool, revocation: RevocationState
) -> SSL.Context:
    """The service's server policy (as ``build_server_context``) on a pyOpenSSL context."""
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
    # OP_NO_TICKET: TLS 1.3 tickets are stateful (a session id into this context's cache, which
    # OpenSSL bounds at 20,480 sessions) instead of an encrypted copy of the session with the
    # client certificate: 0.2-0.3 ms less per full handshake here, and resumption still works
    # (within one process). The ticket count cannot be set: OpenSSL's two are sent.
    ctx.set_options(SSL.OP_NO_RENEGOTIATION | SSL.OP_NO_COMPRESSION | SSL.OP_NO_TICKET)
    ctx.use_certificate_chain_file(str(config.cert))
    ctx.use_privatekey_file(str(config.key))
    ctx.check_privatekey()
    ctx.load_verify_locations(str(config.client_ca))
    store = ctx.get_cert_store()
    assert store is not None
    for der in sorted(config.trust_anchors | config.external_anchors):
        store.add_cert(X509.from_cryptography(x509.load_der_x509_certificate(der)))
    store.set_flags(X509StoreFlags.PARTIAL_CHAIN)
    # Resumption of sessions with a verified client certificate needs a session id context.
    ctx.set_session_id(_SESSION_ID_CONTEXT)
    mode = SSL.VERIFY_PEER | (SSL.VERIFY_FAIL_IF_NO_PEER_CERT if require_cert else 0)
    _set_verify(ctx, mode, revocation)
    return ctx


def _set_verify(ctx: SSL.Context, mode: int, revocation: RevocationState) -> None:
    """A verify callback that refuses revoked leaves with X509_V_ERR_CERT_REVOKED.

    pyOpenSSL's own ``set_verify`` wrapper cannot set the store's error, so a refusal there is
    sent as certificate_unknown; the raw callback sets it, and OpenSSL sends
    certificate_revoked (RFC 8446 §6.2).
    """

    def verify(ok: int, store_ctx: Any) -> int:
        if not ok or _lib.X509_STORE_CTX_get_error_depth(store_ctx) != 0:
            return ok
        try:
            pointer = _lib.X509_STORE_CTX_get_current_cert(store_ctx)
            _lib.X509_up_ref(pointer)
            der = X509._from_raw_x509_ptr(pointer).to_cryptography().public_bytes(Encoding.DER)
            refusal = revocation.refusal(der)
        except Exception:  # a C callback must not raise: refuse, with the reason in the log
            log.exception("TLS client certificate refused: the revocation check failed")
            return 0
        if refusal is None:
            return 1
        log.warning("TLS client certificate refused in the handshake: %s", refusal)
        _lib.X509_STORE_CTX_set_error(store_ctx, _lib.X509_V_ERR_CERT_REVOKED)
        return 0

    callback = _ffi.callback("int (*)(int, X509_STORE_CTX *)", verify)
    _lib.SSL_CTX_set_verify(ctx._context, mode, callback)
    ctx._mtlsauth_verify = callback  # type: ignore[attr-defined]  # kept alive with the context


class PeerInfo(CheckingSSLObject):
    """What the HTTP layer reads as ``ssl_object`` (the ``ssl`` path's CheckingSSLObject): the
    verified leaf, the revocation verdict, when the connection was established."""

    _der: bytes | None

    @classmethod
    def made(cls, der: bytes | None, revocation: RevocationState, *, resumed: bool) -> PeerInfo:
        self = cls.__new__(cls)  # ssl.SSLObject has no public constructor; nothing of it is used
        self.established_at = time.monotonic()
        self._der = der
        if der is not None:
            self.peer = PeerCertificate(der)
            if resumed:  # no verify callback ran: ask now, as the ssl path does
                self.refused = revocation.refusal(der)
        return self

    def getpeercert(self, binary_form: bool = False) -> Any:
        return self._der if binary_form else None


class TLSTransport(asyncio.Transport):
    """The transport aiohttp's protocol writes to: plaintext in, TLS records out."""

    def __init__(self, tls: TLSProtocol, extra: dict[str, Any]) -> None:
        super().__init__(extra)
        self._tls = tls
        self._info = extra

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name in self._info:
            return self._info[name]
        return self._tls.raw.get_extra_info(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._tls.write(bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        self._tls.write(b"".join(list_of_data))

    def is_closing(self) -> bool:
        return self._tls.closing

    def close(self) -> None:
        self._tls.close()

    def abort(self) -> None:
        self._tls.abort()

    def pause_reading(self) -> None:
        self._tls.raw.pause_reading()

    def resume_reading(self) -> None:
        self._tls.raw.resume_reading()

    def is_reading(self) -> bool:
        return self._tls.raw.is_reading()

    def get_write_buffer_size(self) -> int:
        return self._tls.raw.get_write_buffer_size()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._tls.raw.set_write_buffer_limits(high, low)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._tls.raw.get_write_buffer_limits()

    def can_write_eof(self) -> bool:
        return False

    def write_eof(self) -> None:
        raise NotImplementedError("TLS has no half-close")


class TLSProtocol(asyncio.Protocol):
    """The raw socket's protocol: one pyOpenSSL connection on memory BIOs (server side)."""

    raw: asyncio.Transport
    closing = False

    def __init__(
        self,
        context: Callable[[], tuple[SSL.Context, RevocationState]],
        app_factory: Callable[[], asyncio.Protocol],
        *,
        handshake_timeout: float,
    ) -> None:
        self._context = context
        self._app_factory = app_factory
        self._handshake_timeout = handshake_timeout
        self._app: asyncio.Protocol | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.raw = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport
        ctx, self._revocation = self._context()
        self._conn = SSL.Connection(ctx, None)
        self._conn.set_accept_state()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._handshake_timeout, self._handshake_expired)

    def _handshake_expired(self) -> None:
        self._timer = None
        if self._app is None:
            log.info("TLS handshake timed out")
            self.abort()

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self._conn.bio_write(data)
        if self._app is None and not self._handshake():
            return
        self._read()

    def _handshake(self) -> bool:
        conn = self._conn
        try:
            conn.do_handshake()
        except SSL.WantReadError:
            self._flush()
            return False
        except SSL.Error as exc:
            log.warning("TLS handshake refused: %s", exc)
            self._flush()  # the alert that tells the client why
            self.closing = True
            self.raw.close()
            return False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._flush()
        leaf = conn.get_peer_certificate(as_cryptography=True)
        der = leaf.public_bytes(Encoding.DER) if leaf is not None else None
        chain = conn.get_peer_cert_chain(as_cryptography=True) or []
        resumed = bool(_lib.SSL_session_reused(conn._ssl))
        info = PeerInfo.made(der, self._revocation, resumed=resumed)
        if info.refused is not None:
            log.warning("TLS client certificate refused (resumed session): %s", info.refused)
        extra = {
            "ssl_object": info,
            "sslcontext": conn.get_context(),
            "peercert_der": der,
            "peercert_chain": tuple(c.public_bytes(Encoding.DER) for c in chain),
            "cipher": conn.get_cipher_name(),
            "tls_version": conn.get_protocol_version_name(),
        }
        self._app = self._app_factory()
        self._app.connection_made(TLSTransport(self, extra))
        return True

    def _read(self) -> None:
        conn, app = self._conn, self._app
        assert app is not None
        while not self.closing:
            try:
                data = conn.recv(_CHUNK)
            except SSL.WantReadError:
                break
            except SSL.ZeroReturnError:  # close_notify
                app.eof_received()
                self.close()
                return
            except SSL.Error as exc:  # a renegotiation attempt, a bad record
                log.info("TLS connection error: %s", exc)
                self._flush()
                self.abort()
                return
            app.data_received(data)
        self._flush()

    def _flush(self) -> None:
        conn = self._conn
        while True:
            try:
                data = conn.bio_read(_CHUNK)
            except SSL.WantReadError:
                return
            self.raw.write(data)

    def write(self, data: bytes) -> None:
        if self.closing or not data:
            return
        self._conn.sendall(data)
        self._flush()

    def close(self) -> None:
        if self.closing:
            return
        self.closing = True
        with contextlib.suppress(SSL.Error):
            self._conn.shutdown()  # close_notify
        self._flush()
        self.raw.close()

    def abort(self) -> None:
        self.closing = True
        self.raw.abort()

    def eof_received(self) -> bool:
        if self._app is not None:
            self._app.eof_received()
        # Our close_notify marks the session as cleanly ended: OpenSSL drops a session from the
        # (stateful) cache when its connection is freed without one.
        self.close()
        return False

    def pause_writing(self) -> None:
        if self._app is not None:
            self._app.pause_writing()

    def resume_writing(self) -> None:
        if self._app is not None:
            self._app.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._app is not None:
            self._app.connection_lost(exc)


def serve(home: str, port: int, kind: str) -> None:
    """A benchmark server until SIGTERM. Over the pyOpenSSL transport: ``pyopenssl-service``
    is mtlsauth itself (its app and connection guards, default configuration),
    ``pyopenssl-aiohttp`` a fixed token-sized response, ``pyopenssl-bare`` a fixed 200 and
    close. ``ssl-stateful-service`` is mtlsauth over Python's ``ssl`` as ``mtlsauth serve``
    runs it, but with stateful session tickets (``OP_NO_TICKET``) as the pyOpenSSL rows have,
    to tell what the tickets account for."""
    settings = load_settings(home)
    configure_logging(settings.log_level, settings.log_format)
    if uvloop is not None:
        uvloop.install()
    config = server_tls_config(settings)
    policy = connection_policy(settings)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        runner: web.AppRunner
        if kind.endswith("-service"):
            tls = create_tls(settings)
            # As `mtlsauth serve` runs it: the fixed routes through the dispatcher.
            runner = ServiceRunner(
                create_app(settings, tls),
                access_log=None,
                shutdown_timeout=SHUTDOWN_TIMEOUT,
                handle_signals=False,
            )
            revocation = tls.revocation
        else:
            runner = web.AppRunner(
                fixed_app(),
                access_log=None,
                shutdown_timeout=SHUTDOWN_TIMEOUT,
                handle_signals=False,
            )
            revocation = RevocationState.empty()
        ctx = build_context(config, require_cert=False, revocation=revocation)
        await runner.setup()
        server = runner.server
        assert server is not None
        counter = ConnectionCounter(policy)
        if kind == "ssl-stateful-service":
            stateful = build_server_context(config, require_cert=False, revocation=revocation)
            stateful.options |= ssl.OP_NO_TICKET
            site = GuardedSite(runner, "127.0.0.1", port, policy=policy, counter=counter,
                               ssl_context=stateful)  # fmt: skip
            await site.start()
            await stop.wait()
            await runner.cleanup()
            return

        def app_protocol() -> asyncio.Protocol:
            if kind == "pyopenssl-bare":
                return BareResponder()
            assert server is not None
            return GuardedRequestHandler(server, loop=loop, policy=policy, counter=counter)

        def tls_protocol() -> TLSProtocol:
            return TLSProtocol(lambda: (ctx, revocation), app_protocol,
                               handshake_timeout=policy.handshake_timeout)  # fmt: skip

        listener = await loop.create_server(tls_protocol, "127.0.0.1", port, backlog=1024)
        await stop.wait()
        listener.close()
        await runner.cleanup()

    asyncio.run(run())


def ssl_version() -> str:
    """The two OpenSSL builds compared."""
    return f"{ssl.OPENSSL_VERSION} (ssl) / {SSL.OpenSSL_version(SSL.OPENSSL_VERSION).decode()}"
