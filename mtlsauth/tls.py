"""Server TLS: building SSLContexts, swapping them without a restart, and the peer certificate.

Why a forwarding context: mutating a live SSLContext (loading a new CA or CRL into it) lets a
client resume a TLS session established under the old trust, and an ``sni_callback`` swap keeps
the old verify flags. Instead every change builds a NEW context and :class:`SwappableContext`
hands it to connections made from then on; it works wherever the event loop calls
``SSLContext.wrap_bio`` (asyncio and uvloop both do).

Why trust anchors for self-signed clients: Python's ssl has no verify callback, so a handshake
can only accept a certificate that chains to a trust anchor. The registered certificates of
self_signed_tls_client_auth clients are added as anchors (with VERIFY_X509_PARTIAL_CHAIN), and
tls_client_auth separately checks that the leaf was issued by the client CA (see
:meth:`ClientCA.issued`), so an anchor can never stand in for the CA.
"""

from __future__ import annotations

import dataclasses
import logging
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding

__all__ = [
    "ClientCA",
    "ServerTLSConfig",
    "SwappableContext",
    "TLSManager",
    "build_server_context",
    "peer_certificate_der",
]

log = logging.getLogger(__name__)


class _LoggingSSLObject(ssl.SSLObject):
    """Logs why a handshake was refused; a rejected client otherwise only sees EOF."""

    def do_handshake(self) -> None:
        try:
            super().do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise
        except ssl.SSLError as exc:
            reason = getattr(exc, "verify_message", None) or exc.reason or str(exc)
            log.warning("TLS handshake refused: %s", reason)
            raise


@dataclass(frozen=True, slots=True)
class ServerTLSConfig:
    """What a server context is built from."""

    cert: Path
    key: Path
    client_ca: Path
    trust_anchors: frozenset[bytes] = frozenset()


def build_server_context(config: ServerTLSConfig, *, require_cert: bool) -> ssl.SSLContext:
    """A server context that verifies client certificates (optional or required)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(config.cert, config.key)
    ctx.verify_mode = ssl.CERT_REQUIRED if require_cert else ssl.CERT_OPTIONAL
    ctx.load_verify_locations(cafile=str(config.client_ca))
    if config.trust_anchors:
        # cadata accepts concatenated DER certificates.
        ctx.load_verify_locations(cadata=b"".join(sorted(config.trust_anchors)))
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    ctx.sslobject_class = _LoggingSSLObject
    return ctx


class SwappableContext(ssl.SSLContext):
    """An SSLContext that forwards every new connection to the current inner context."""

    _current: ssl.SSLContext

    def __new__(cls, initial: ssl.SSLContext) -> SwappableContext:
        self = super().__new__(cls, ssl.PROTOCOL_TLS_SERVER)
        self._current = initial
        return self

    def __init__(self, initial: ssl.SSLContext) -> None:
        # SSLContext.__init__ takes no arguments; all state lives in the inner context.
        pass

    @property
    def current(self) -> ssl.SSLContext:
        return self._current

    def swap(self, new: ssl.SSLContext) -> None:
        self._current = new

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        return self._current.wrap_bio(*args, **kwargs)

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        return self._current.wrap_socket(*args, **kwargs)


def peer_certificate_der(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> bytes | None:
    """The DER of the verified client leaf certificate, or None (also on resumed sessions)."""
    if ssl_object is None:
        return None
    return ssl_object.getpeercert(binary_form=True)


class ClientCA:
    """The client-issuing CA certificates, to tell CA-issued leaves from self-signed anchors."""

    #: Verified answers are remembered per leaf, so keep-alive requests skip the signature.
    CACHE_SIZE: Final = 4096

    def __init__(self, certs: Iterable[x509.Certificate]) -> None:
        self._by_subject: dict[bytes, list[x509.Certificate]] = {}
        self._answers: dict[bytes, bool] = {}
        self.replace(certs)

    def replace(self, certs: Iterable[x509.Certificate]) -> None:
        """Swap in a new bundle (hot reload); in-flight checks keep the old mapping."""
        by_subject: dict[bytes, list[x509.Certificate]] = {}
        for cert in certs:
            by_subject.setdefault(cert.subject.public_bytes(), []).append(cert)
        self._by_subject = by_subject
        self._answers = {}

    @classmethod
    def from_file(cls, path: Path) -> ClientCA:
        return cls(x509.load_pem_x509_certificates(path.read_bytes()))

    def issued(self, leaf: x509.Certificate) -> bool:
        """Whether a certificate of this bundle signed ``leaf`` (RFC 8705 §2.1 PKI method).

        The TLS layer has already validated the whole chain; this tells which trust anchor it
        used, which Python's ssl does not say.
        """
        der = leaf.public_bytes(Encoding.DER)
        answer = self._answers.get(der)
        if answer is None:
            answer = self._verify(leaf)
            if len(self._answers) >= self.CACHE_SIZE:
                self._answers.clear()
            self._answers[der] = answer
        return answer

    def _verify(self, leaf: x509.Certificate) -> bool:
        for ca in self._by_subject.get(leaf.issuer.public_bytes(), ()):
            try:
                leaf.verify_directly_issued_by(ca)
            except (InvalidSignature, ValueError, TypeError):
                continue
            return True
        return False


class TLSManager:
    """The listeners' contexts, rebuilt when files or registered certificates change."""

    def __init__(self, config: ServerTLSConfig, *, with_required_listener: bool) -> None:
        self._config = config
        self._mtimes = self._stat()
        self.client_ca = ClientCA.from_file(config.client_ca)
        self.optional = SwappableContext(build_server_context(config, require_cert=False))
        self.required = (
            SwappableContext(build_server_context(config, require_cert=True))
            if with_required_listener
            else None
        )

    def _stat(self) -> tuple[float, ...]:
        paths = (self._config.cert, self._config.key, self._config.client_ca)
        return tuple(p.stat().st_mtime_ns if p.exists() else 0.0 for p in paths)

    def _rebuild(self, config: ServerTLSConfig) -> None:
        optional = build_server_context(config, require_cert=False)
        required = build_server_context(config, require_cert=True) if self.required else None
        self.client_ca.replace(x509.load_pem_x509_certificates(config.client_ca.read_bytes()))
        self.optional.swap(optional)
        if self.required is not None and required is not None:
            self.required.swap(required)
        self._config = config

    def set_trust_anchors(self, anchors: frozenset[bytes]) -> None:
        """Trust exactly these self-signed client certificates from the next handshake on."""
        if anchors != self._config.trust_anchors:
            self._rebuild(dataclasses.replace(self._config, trust_anchors=anchors))
            log.info("TLS trust anchors reloaded: %d registered certificate(s)", len(anchors))

    def reload_if_changed(self) -> bool:
        """Rebuild when the server certificate, key or client CA file changed on disk.

        A broken new file is logged and the old contexts stay in service.
        """
        mtimes = self._stat()
        if mtimes == self._mtimes:
            return False
        self._mtimes = mtimes
        try:
            self._rebuild(self._config)
        except (OSError, ssl.SSLError, ValueError) as exc:
            log.error(  # noqa: TRY400 - the reason is enough; no traceback for a bad file
                "TLS files changed but cannot be loaded; keeping the old ones: %s", exc
            )
            return False
        log.info("TLS server certificate / client CA reloaded from disk")
        return True
