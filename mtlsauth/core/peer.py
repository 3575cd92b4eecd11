"""The client certificate of a request (RFC 8705 §2), and where it comes from: the TLS
connection, or a trusted proxy.

:class:`PeerCertificate` is the one object the token service and the resource checkers hold
for it: the DER, with its thumbprint (RFC 8705 §3.1) and parsed form worked out once.

RFC 8705 §3 binds a token to the certificate of the TLS connection that presents it; this
module says which certificate that is, for the token service and the checkers alike.

Behind a TLS-terminating proxy the certificate arrives in a header. That header is believed
only from the configured proxy addresses; from anyone else a request that carries it is
refused (a client could otherwise claim any certificate). The token service and the resource
checkers share this code.

Header formats:

* ``rfc9440`` — RFC 9440 ``Client-Cert``: the DER as a Structured Field byte sequence ``:b64:``.
* ``nginx`` — nginx ``$ssl_client_escaped_cert``: the PEM, URL-escaped.
* ``xfcc`` — Envoy ``x-forwarded-client-cert`` (see :mod:`mtlsauth.core.xfcc`): ``Cert="<URL-escaped
  PEM>"`` of the one element Envoy's SANITIZE_SET writes (``sanitize_set``), or of the element
  Envoy's APPEND_FORWARD appends last (``append_forward``).
* ``base64-der`` — the DER in plain base64.

The client's address comes the same way (``address_header``, e.g. ``X-Forwarded-For``): from a
trusted proxy the right-most entry, the one that proxy appended itself (what the client put
to its left is the client's own claim); from anyone else the TCP peer, and the header is
ignored.
"""

from __future__ import annotations

import _ssl
import base64
import binascii
import hashlib
import ipaddress
import re
import ssl
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Final, Literal, get_args
from urllib.parse import unquote

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from multidict import MultiMapping

from mtlsauth.core.thumbprint import x5t_s256
from mtlsauth.core.xfcc import XfccElement, XfccError, parse_xfcc

__all__ = [
    "HEADER_FORMATS",
    "XFCC_MODES",
    "HeaderFormat",
    "PeerCertificate",
    "ProxyConfig",
    "ProxyHeaderError",
    "XfccMode",
    "cert_from_header",
    "parse_networks",
    "peer_certificate_der",
    "sent_chain",
]

HeaderFormat = Literal["rfc9440", "nginx", "xfcc", "base64-der"]
HEADER_FORMATS: Final[tuple[HeaderFormat, ...]] = get_args(HeaderFormat)
#: Envoy ``forward_client_cert_details`` modes whose XFCC header can be believed.
XfccMode = Literal["sanitize_set", "append_forward"]
XFCC_MODES: Final[tuple[XfccMode, ...]] = get_args(XfccMode)
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class PeerCertificate:
    """The client's leaf certificate: the DER, lazily its thumbprint and the parsed certificate,
    and the CA certificates the client sent after it.

    The token service makes one per TLS connection in the handshake, so what is learned about
    it is worked out once per connection, not once per request; a certificate forwarded by a
    trusted proxy gets one per request (one proxy connection carries many clients).
    """

    __slots__ = ("__dict__", "_sent", "der")

    def __init__(self, der: bytes, sent: Callable[[], Sequence[bytes]] | None = None) -> None:
        self.der = der
        self._sent = sent

    @cached_property
    def thumbprint(self) -> str:
        """``x5t#S256`` (RFC 8705 §3.1)."""
        return x5t_s256(self.der)

    @cached_property
    def cert(self) -> x509.Certificate:
        """The parsed certificate; ValueError when the DER does not parse."""
        return x509.load_der_x509_certificate(self.der)

    @cached_property
    def intermediates(self) -> tuple[x509.Certificate, ...]:
        """The certificates the client sent after its leaf (RFC 8446 §4.4.2), parsed, at most
        :data:`MAX_SENT_CHAIN`: untrusted path candidates, never anchors. Empty for a
        certificate a proxy forwarded, and for a resumed TLS session (the session keeps the
        leaf only). Read only when a client must chain to an external anchor."""
        if self._sent is None:
            return ()
        certs = []
        for der in self._sent():
            if der == self.der:
                continue
            try:
                certs.append(x509.load_der_x509_certificate(der))
            except ValueError:
                continue
            if len(certs) == MAX_SENT_CHAIN:
                break
        return tuple(certs)


#: Certificates after the leaf worth reading from a client's chain: real chains hold one to
#: three CA certificates, and each one read costs a parse and a path-building candidate.
MAX_SENT_CHAIN: Final = 8


def peer_certificate_der(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> bytes | None:
    """The DER of the TLS connection's verified client leaf, or None (RFC 8705 §3).

    It is there on resumed sessions too.
    """
    return ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None


def sent_chain(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> Callable[[], Sequence[bytes]]:
    """A reader of the certificate chain the client sent in its handshake, as DER.

    OpenSSL keeps that chain; Python's ``ssl`` exposes it as ``get_unverified_chain`` from
    3.13 and, in 3.10-3.12, only on the private ``_sslobj`` of the same object (same method,
    same OpenSSL call, returning certificate objects rather than DER). The reader holds that
    inner object, never the wrapper, so no reference cycle keeps a connection alive.
    """
    inner = getattr(ssl_object, "_sslobj", ssl_object)
    getter = getattr(inner, "get_unverified_chain", None)

    def read() -> Sequence[bytes]:
        chain = getter() if getter is not None else None
        if not chain:
            return ()
        return [
            item if isinstance(item, bytes) else item.public_bytes(_ssl.ENCODING_DER)
            for item in chain[: MAX_SENT_CHAIN + 1]
        ]

    return read


class ProxyHeaderError(ValueError):
    """The certificate header is malformed, or came from an address that is not a trusted proxy."""


def parse_networks(values: Iterable[str]) -> tuple[IPNetwork, ...]:
    """CIDRs (or single addresses); ValueError names the bad one."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError as exc:
            raise ValueError(f"not an address or CIDR: {value.strip()!r}") from exc
    return tuple(networks)


#: Exactly one PEM certificate and nothing else: OpenSSL's PEM reader takes the first block it
#: finds, so text around it (a second certificate joined by a hop that merged repeated header
#: lines) would otherwise pass unseen.
_ONE_PEM: Final = re.compile(
    r"\s*-----BEGIN CERTIFICATE-----\r?\n[A-Za-z0-9+/=\r\n]+-----END CERTIFICATE-----\s*"
)


def _pem_to_der(pem: str) -> bytes:
    if not _ONE_PEM.fullmatch(pem):
        raise ProxyHeaderError("the forwarded value is not exactly one PEM certificate")
    try:
        return x509.load_pem_x509_certificate(pem.encode()).public_bytes(Encoding.DER)
    except ValueError as exc:
        raise ProxyHeaderError(
            f"the forwarded certificate is not a PEM certificate: {exc}"
        ) from exc


def _b64_der(text: str) -> bytes:
    try:
        der = base64.b64decode(text, validate=True)
        x509.load_der_x509_certificate(der)
    except (binascii.Error, ValueError) as exc:
        raise ProxyHeaderError(f"the forwarded certificate is not base64 DER: {exc}") from exc
    return der


def _xfcc_element(value: str, mode: XfccMode) -> XfccElement:
    """The element Envoy wrote: the only one (SANITIZE_SET) or the last one (APPEND_FORWARD)."""
    try:
        elements = parse_xfcc(value)
    except XfccError as exc:
        raise ProxyHeaderError(f"malformed XFCC header: {exc}") from exc
    if mode == "sanitize_set" and len(elements) != 1:
        raise ProxyHeaderError(
            f"XFCC header with {len(elements)} elements; Envoy's SANITIZE_SET writes exactly one"
        )
    if mode == "append_forward":
        # Envoy writes URI and DNS SANs unquoted: a certificate whose SAN holds ',' or ';'
        # would split Envoy's own element and forge a later one. No element may carry one.
        for element in elements:
            for cert in element.get("cert", ()):
                _refuse_unframeable(_pem_to_der(unquote(cert)))
    return elements[-1]


def _refuse_unframeable(der: bytes) -> None:
    cert = x509.load_der_x509_certificate(der)
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (x509.ExtensionNotFound, ValueError):
        return
    names = [
        *sans.get_values_for_type(x509.UniformResourceIdentifier),
        *sans.get_values_for_type(x509.DNSName),
    ]
    if any(ch in name for name in names for ch in ',;"'):
        raise ProxyHeaderError("an XFCC certificate has a SAN Envoy cannot write unambiguously")


def _xfcc_cert(value: str, mode: XfccMode) -> bytes | None:
    element = _xfcc_element(value, mode)
    certs = element.get("cert")
    if not certs:
        return None
    der = _pem_to_der(unquote(certs[0]))
    # Envoy's Hash is the SHA-256 of the same certificate: a Cert that text inside the element
    # smuggled in next to Envoy's Hash does not match it.
    for digest in element.get("hash", ()):
        if digest.lower() != hashlib.sha256(der).hexdigest():
            raise ProxyHeaderError("the XFCC Hash is not the SHA-256 of its Cert")
    return der


def cert_from_header(
    value: str, fmt: HeaderFormat, *, xfcc_mode: XfccMode = "sanitize_set"
) -> bytes | None:
    """The DER certificate a proxy forwarded, or None when it forwarded none."""
    value = value.strip()
    if not value:
        return None
    if fmt == "rfc9440":
        if len(value) < 2 or value[0] != ":" or value[-1] != ":":
            raise ProxyHeaderError("an RFC 9440 Client-Cert must be a byte sequence ':...:'")
        return _b64_der(value[1:-1])
    if fmt == "nginx":
        return _pem_to_der(unquote(value))
    if fmt == "xfcc":
        return _xfcc_cert(value, xfcc_mode)
    if fmt == "base64-der":
        return _b64_der(value)
    raise ProxyHeaderError(f"unknown header format {fmt!r}")


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    """Believe ``header`` (in ``fmt``) from these proxy addresses only."""

    trusted: tuple[IPNetwork, ...]
    header: str = "Client-Cert"
    fmt: HeaderFormat = "rfc9440"
    xfcc_mode: XfccMode = "sanitize_set"
    #: The header the proxy names the client's address in; None: the TCP peer counts.
    address_header: str | None = None

    def is_trusted(self, remote: str | None) -> bool:
        if not remote:
            return False
        try:
            address = ipaddress.ip_address(remote.split("%", 1)[0])
        except ValueError:
            return False
        return any(address in network for network in self.trusted)

    def _values(self, headers: Mapping[str, str]) -> Sequence[str]:
        if isinstance(headers, MultiMapping):
            return headers.getall(self.header, [])
        value = headers.get(self.header)
        return [] if value is None else [value]

    def peer_der(
        self, remote: str | None, tls_der: bytes | None, headers: Mapping[str, str]
    ) -> bytes | None:
        """The client's certificate: from the header when sent by a trusted proxy.

        ``headers`` is best a multidict (aiohttp's, or ``CIMultiDict``) so that every copy of
        the header is seen: a proxy sends one, so a second copy was not (all) written by it,
        and which copy counts is ambiguous (ProxyHeaderError).

        From a trusted proxy the connection's own certificate (the proxy's) is ignored. From
        anyone else the header must be absent (ProxyHeaderError) and the TLS certificate counts.
        """
        values = self._values(headers)
        if len(values) > 1:
            raise ProxyHeaderError(f"{self.header} header repeated ({len(values)} copies)")
        value = values[0] if values else None
        if self.is_trusted(remote):
            if value is None:
                return None
            return cert_from_header(value, self.fmt, xfcc_mode=self.xfcc_mode)
        if value is not None:
            raise ProxyHeaderError(
                f"{self.header} header from {remote}, which is not a trusted proxy"
            )
        return tls_der

    def client_address(self, remote: str | None, values: Sequence[str]) -> str:
        """The address of the client: the one a trusted proxy vouches for, else the TCP peer.

        ``values`` are every line of ``address_header`` in order. A trusted proxy that sends
        none, or a right-most entry that is not an IP address, is an error (ProxyHeaderError):
        counting such requests against the proxy itself would lock everyone behind it out.
        """
        if self.address_header is None or not self.is_trusted(remote):
            return remote or "unknown"
        entries = ",".join(values).split(",")
        last = entries[-1].strip()
        if not last:
            raise ProxyHeaderError(
                f"the trusted proxy {remote} sent no {self.address_header} address"
            )
        if last.startswith("[") and last.endswith("]"):
            last = last[1:-1]
        try:
            return str(ipaddress.ip_address(last))
        except ValueError as exc:
            raise ProxyHeaderError(
                f"the trusted proxy {remote} sent {self.address_header} {last[:60]!r}, "
                "which is not an IP address"
            ) from exc
