"""Where the client certificate of a request comes from: the TLS connection, or a trusted proxy.

Behind a TLS-terminating proxy the certificate arrives in a header. That header is believed
only from the configured proxy addresses; from anyone else a request that carries it is
refused (a client could otherwise claim any certificate). The token service and the resource
checkers share this code.

Header formats:

* ``rfc9440`` — RFC 9440 ``Client-Cert``: the DER as a Structured Field byte sequence ``:b64:``.
* ``nginx`` — nginx ``$ssl_client_escaped_cert``: the PEM, URL-escaped.
* ``xfcc`` — Envoy ``x-forwarded-client-cert``: ``Cert="<URL-escaped PEM>"`` in the element the
  nearest proxy appended (the last one).
* ``base64-der`` — the DER in plain base64.

The client's address comes the same way (``address_header``, e.g. ``X-Forwarded-For``): from a
trusted proxy the right-most entry, the one that proxy appended itself (what the client put
to its left is the client's own claim); from anyone else the TCP peer, and the header is
ignored.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal, get_args
from urllib.parse import unquote

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

__all__ = [
    "HEADER_FORMATS",
    "HeaderFormat",
    "ProxyConfig",
    "ProxyHeaderError",
    "cert_from_header",
    "parse_networks",
]

HeaderFormat = Literal["rfc9440", "nginx", "xfcc", "base64-der"]
HEADER_FORMATS: Final[tuple[HeaderFormat, ...]] = get_args(HeaderFormat)
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


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


def _pem_to_der(pem: str) -> bytes:
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


def _xfcc_elements(value: str) -> list[dict[str, str]]:
    """Split an XFCC value into elements of key=value pairs, honouring quoted values."""
    elements: list[dict[str, str]] = []
    pairs: dict[str, str] = {}
    key, buf, quoted, i = "", "", False, 0
    while i < len(value):
        ch = value[i]
        if quoted:
            if ch == "\\" and i + 1 < len(value):
                buf += value[i + 1]
                i += 2
                continue
            if ch == '"':
                quoted = False
            else:
                buf += ch
        elif ch == '"':
            quoted = True
        elif ch == "=" and not key:
            key, buf = buf.strip(), ""
        elif ch in ";,":
            if key:
                pairs[key.lower()] = buf.strip()
            key, buf = "", ""
            if ch == ",":
                elements.append(pairs)
                pairs = {}
        else:
            buf += ch
        i += 1
    if quoted:
        raise ProxyHeaderError("an XFCC value has an unterminated quote")
    if key:
        pairs[key.lower()] = buf.strip()
    elements.append(pairs)
    return elements


def cert_from_header(value: str, fmt: HeaderFormat) -> bytes | None:
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
        cert = _xfcc_elements(value)[-1].get("cert")
        return _pem_to_der(unquote(cert)) if cert else None
    if fmt == "base64-der":
        return _b64_der(value)
    raise ProxyHeaderError(f"unknown header format {fmt!r}")


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    """Believe ``header`` (in ``fmt``) from these proxy addresses only."""

    trusted: tuple[IPNetwork, ...]
    header: str = "Client-Cert"
    fmt: HeaderFormat = "rfc9440"
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

    def peer_der(
        self, remote: str | None, tls_der: bytes | None, headers: Mapping[str, str]
    ) -> bytes | None:
        """The client's certificate: from the header when sent by a trusted proxy.

        From a trusted proxy the connection's own certificate (the proxy's) is ignored. From
        anyone else the header must be absent (ProxyHeaderError) and the TLS certificate counts.
        """
        value = headers.get(self.header)
        if self.is_trusted(remote):
            return cert_from_header(value, self.fmt) if value is not None else None
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
