"""Server TLS (RFC 8705 §2): building SSLContexts, swapping them without a restart, and the
client's peer certificate of each connection.

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
import datetime as dt
import logging
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from mtlsauth.core.peer import PeerCertificate, sent_chain
from mtlsauth.issuer.tls.revocation import CRLError, Refusal, RevocationState

__all__ = [
    "CheckingSSLObject",
    "ClientCA",
    "ServerTLSConfig",
    "SwappableContext",
    "TLSManager",
    "build_server_context",
    "connection_age",
]

log = logging.getLogger(__name__)


class CheckingSSLObject(ssl.SSLObject):
    """One server-side TLS connection.

    It logs why a handshake was refused, and makes sure the client learns it too (decision
    D10): asyncio's and uvloop's SSL protocols drop a connection whose handshake failed without
    sending what OpenSSL wrote — the alert that names the reason (unknown_ca,
    certificate_expired, ...) — so the first failure is held back as "want read", the loop
    flushes the alert, and the error is raised on the next call (the client's next bytes; its
    EOF or the handshake timeout close the connection as well).

    A revoked client certificate (checked once OpenSSL has accepted the chain, on every
    handshake, resumed ones included) cannot get an alert of its own: Python's ssl has no
    verify callback. The handshake finishes and the connection is marked ``refused``; every
    request on it is answered 401 invalid_client naming the reason, and none is served.

    It remembers when the connection was established so that keep-alive connections can be
    given a bounded lifetime.

    It owns the connection's :class:`PeerCertificate`, made once in the handshake: every request
    of a keep-alive connection reuses its thumbprint (≈ 2 µs to compute) and parsed form
    (≈ 1 µs, more with its extensions), measured with timeit on the benchmark VM; kept since
    the benchmark's per-connection profile (README, "Where the time goes").
    """

    revocation: ClassVar[RevocationState] = RevocationState.empty()
    established_at: float
    #: The client's leaf as this connection's handshake verified it; None without one.
    peer: PeerCertificate | None = None
    #: Why the handshake's client certificate is refused (every request gets 401), or None.
    refused: Refusal | None = None
    _failed: ssl.SSLError | None = None

    def do_handshake(self) -> None:
        if self._failed is not None:
            raise self._failed
        try:
            super().do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise
        except ssl.SSLError as exc:
            reason = getattr(exc, "verify_message", None) or exc.reason or str(exc)
            log.warning("TLS handshake refused: %s", reason)
            self._failed = exc
            raise ssl.SSLWantReadError("the handshake failed; its alert is being sent") from exc
        der = self.getpeercert(binary_form=True)
        if der:
            self.peer = PeerCertificate(der, sent_chain(self))
            refusal = self.revocation.refusal(der)
            if refusal is not None:
                log.warning(
                    "TLS client certificate refused: %s (resumed session: %s); every request "
                    "on the connection is answered 401",
                    refusal,
                    self.session_reused,
                )
                self.refused = refusal
        self.established_at = time.monotonic()


def connection_age(ssl_object: object) -> float:
    """Seconds since this connection's handshake (0 when unknown)."""
    established = getattr(ssl_object, "established_at", None)
    return time.monotonic() - established if established is not None else 0.0


@dataclass(frozen=True, slots=True)
class ServerTLSConfig:
    """What a server context is built from."""

    cert: Path
    key: Path
    client_ca: Path
    trust_anchors: frozenset[bytes] = frozenset()
    crl: Path | None = None
    #: TLS 1.3 session tickets sent after a full handshake (0: no resumption). Each ticket
    #: carries the client certificate and cost 0.3-0.5 ms of server CPU per new connection
    #: here (≈ 2.7 / 3.1 / 3.4 ms per token with 0 / 1 / 2 tickets), while a resumed handshake
    #: costs ≈ 1.5-1.9 ms: one ticket keeps resumption for clients that use it, without
    #: OpenSSL's default spare.
    session_tickets: int = 1
    #: Root certificates (DER) of the external trust anchors (``mtlsauth trust add``).
    external_anchors: frozenset[bytes] = frozenset()


def build_server_context(
    config: ServerTLSConfig,
    *,
    require_cert: bool,
    revocation: RevocationState | None = None,
) -> ssl.SSLContext:
    """A server context that verifies client certificates (optional or required) and refuses
    those ``revocation`` says are revoked."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    # A TLS 1.2 renegotiation could change the client certificate mid-connection, unseen by
    # the handshake hook below and by everything remembered per connection. OpenSSL 3 already
    # refuses client-initiated ones by default; this says so for every build.
    ctx.options |= ssl.OP_NO_RENEGOTIATION
    ctx.num_tickets = config.session_tickets
    ctx.load_cert_chain(config.cert, config.key)
    ctx.verify_mode = ssl.CERT_REQUIRED if require_cert else ssl.CERT_OPTIONAL
    ctx.load_verify_locations(cafile=str(config.client_ca))
    if anchors := config.trust_anchors | config.external_anchors:
        # cadata accepts concatenated DER certificates.
        ctx.load_verify_locations(cadata=b"".join(sorted(anchors)))
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    # A class per context: the revocation state belongs to the context it was built with.
    ctx.sslobject_class = type(
        "CheckingSSLObject",
        (CheckingSSLObject,),
        {"revocation": revocation or RevocationState.empty()},
    )
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

    def swap(self, new: ssl.SSLContext) -> None:
        self._current = new

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        return self._current.wrap_bio(*args, **kwargs)

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        return self._current.wrap_socket(*args, **kwargs)


class ClientCA:
    """The client-issuing CA certificates, to tell CA-issued leaves from self-signed anchors."""

    def __init__(self, certs: Iterable[x509.Certificate]) -> None:
        self._by_subject: dict[bytes, list[x509.Certificate]] = {}
        #: Bumped on every reload, so answers remembered elsewhere can tell they are stale.
        self.generation = 0
        self.replace(certs)

    def replace(self, certs: Iterable[x509.Certificate]) -> None:
        """Swap in a new bundle (hot reload); in-flight checks keep the old mapping."""
        by_subject: dict[bytes, list[x509.Certificate]] = {}
        for cert in certs:
            by_subject.setdefault(cert.subject.public_bytes(), []).append(cert)
        self._by_subject = by_subject
        self.generation += 1

    def issued(self, leaf: x509.Certificate) -> bool:
        """Whether a certificate of this bundle signed ``leaf`` (RFC 8705 §2.1 PKI method).

        The TLS layer has already validated the whole chain; this tells which trust anchor it
        used, which Python's ssl does not say. (Callers remember the verdict per certificate:
        see ``clientauth.base.PkiVerdicts``.)
        """
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
        ca_certs = x509.load_pem_x509_certificates(config.client_ca.read_bytes())
        self.client_ca = ClientCA(ca_certs)
        self.revocation = self._load_revocation(config, ca_certs)
        self.optional = SwappableContext(
            build_server_context(config, require_cert=False, revocation=self.revocation)
        )
        self.required = (
            SwappableContext(
                build_server_context(config, require_cert=True, revocation=self.revocation)
            )
            if with_required_listener
            else None
        )

    @staticmethod
    def _load_revocation(
        config: ServerTLSConfig, ca_certs: list[x509.Certificate]
    ) -> RevocationState:
        if config.crl is None:
            log.warning("no CRL configured: revoked client certificates are NOT refused")
            return RevocationState.empty()
        return RevocationState.load(config.crl, ca_certs)

    def _stat(self) -> tuple[float, ...]:
        paths = [self._config.cert, self._config.key, self._config.client_ca]
        if self._config.crl is not None:
            paths.append(self._config.crl)
        return tuple(p.stat().st_mtime_ns if p.exists() else 0.0 for p in paths)

    def _rebuild(self, config: ServerTLSConfig) -> None:
        ca_certs = x509.load_pem_x509_certificates(config.client_ca.read_bytes())
        revocation, refused = self.revocation.keep_newest(
            self._load_revocation(config, ca_certs),
            trusted={c.subject.public_bytes() for c in ca_certs},
        )
        for reason in refused:
            log.error("CRL refused on reload, the one in force is kept: %s", reason)
        optional = build_server_context(config, require_cert=False, revocation=revocation)
        required = (
            build_server_context(config, require_cert=True, revocation=revocation)
            if self.required
            else None
        )
        self.client_ca.replace(ca_certs)
        self.revocation = revocation
        self.optional.swap(optional)
        if self.required is not None and required is not None:
            self.required.swap(required)
        self._config = config

    def set_trust_anchors(self, anchors: frozenset[bytes]) -> None:
        """Trust exactly these self-signed client certificates from the next handshake on."""
        if anchors != self._config.trust_anchors:
            self._rebuild(dataclasses.replace(self._config, trust_anchors=anchors))
            log.info("TLS trust anchors reloaded: %d registered certificate(s)", len(anchors))

    def set_external_anchors(self, roots: frozenset[bytes]) -> None:
        """Trust exactly these external roots from the next handshake on (which anchor a leaf
        chains to is checked after the handshake: see ``issuer.trust.verifier``)."""
        if roots != self._config.external_anchors:
            self._rebuild(dataclasses.replace(self._config, external_anchors=roots))
            log.info("TLS external trust anchors reloaded: %d root(s)", len(roots))

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
        except (OSError, ssl.SSLError, ValueError, CRLError) as exc:
            log.error("TLS files changed but cannot be loaded; keeping the old ones: %s", exc)
            return False
        log.info("TLS server certificate / client CA / CRL reloaded from disk")
        return True

    def refusal(self, peer: PeerCertificate) -> Refusal | None:
        """Why ``peer`` must be refused now, or None.

        The handshake already refused revoked certificates; a keep-alive connection (or a
        proxy's forwarded certificate) that predates a revocation is caught by asking again
        per request, against the CRL in force now. The revocation state keeps what it needs
        of each certificate (issuer and serial), so asking again costs ≈ 0.5 µs (timeit on
        the benchmark VM): no verdict is kept per connection, and none can go stale.
        """
        return self.revocation.refusal(peer.der)

    def warn_if_crl_stale(self, warn_before: dt.timedelta) -> None:
        """Loud warnings before a CRL expires; errors once it has (clients are refused)."""
        for name, left in self.revocation.freshness():
            if left <= dt.timedelta(0):
                log.error(
                    "%s EXPIRED %s ago: every certificate of its CA is refused until "
                    "'mtlsauth pki crl' signs a new one",
                    name,
                    -left,
                )
            elif left < warn_before:
                log.warning(
                    "%s expires in %s: run 'mtlsauth pki crl' (the server renews it itself "
                    "when it can read the CA passphrase)",
                    name,
                    left,
                )
