"""Certificate names for tls_client_auth (RFC 8705 §2.1.2).

* Distinguished names are parsed from their RFC 4514 string form into a canonical sequence of
  RDNs and compared by RFC 4517 §4.2.15 distinguishedNameMatch (decision D1): the same RDNs in
  the same order, a multi-valued RDN as a set of attribute-value assertions, and string values
  compared case-insensitively after RFC 4518-style Unicode normalisation and space folding.
  Nothing is ever compared as one joined string, so a CN that contains ``,O=Org`` cannot pass
  for an O attribute.
* SAN entries: dNSName case-insensitively (RFC 4343), iPAddress by address value (so ``::1``
  and ``0:0::1`` are one address), rfc822Name with a case-insensitive domain part, and
  uniformResourceIdentifier exactly.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final, Literal

from cryptography import x509

__all__ = [
    "NAME_KINDS",
    "CanonicalDN",
    "CertificateName",
    "DNError",
    "NameKind",
    "dn_of_certificate",
    "format_dn",
    "parse_dn",
]

NameKind = Literal["subject_dn", "san_dns", "san_uri", "san_ip", "san_email"]
NAME_KINDS: Final[tuple[NameKind, ...]] = (
    "subject_dn",
    "san_dns",
    "san_uri",
    "san_ip",
    "san_email",
)

# RFC 4514 §3 short names, plus the ones commonly seen in client certificates.
_SHORT_NAMES: Final[dict[str, str]] = {
    "CN": "2.5.4.3",
    "L": "2.5.4.7",
    "ST": "2.5.4.8",
    "O": "2.5.4.10",
    "OU": "2.5.4.11",
    "C": "2.5.4.6",
    "STREET": "2.5.4.9",
    "DC": "0.9.2342.19200300.100.1.25",
    "UID": "0.9.2342.19200300.100.1.1",
    "SN": "2.5.4.4",
    "SERIALNUMBER": "2.5.4.5",
    "TITLE": "2.5.4.12",
    "POSTALCODE": "2.5.4.17",
    "GN": "2.5.4.42",
    "GIVENNAME": "2.5.4.42",
    "DNQUALIFIER": "2.5.4.46",
    "ORGANIZATIONIDENTIFIER": "2.5.4.97",
    "EMAILADDRESS": "1.2.840.113549.1.9.1",
    "E": "1.2.840.113549.1.9.1",
}
_NAME_OF_OID: Final[dict[str, str]] = {
    oid: name for name, oid in _SHORT_NAMES.items() if name not in {"GIVENNAME", "E"}
}
_DESCR = re.compile(r"[A-Za-z][A-Za-z0-9-]*\Z")
_NUMERICOID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+\Z")
_SPECIALS: Final = frozenset('"+,;<>\\=#')
# DER tags of the string types a hexstring value may hold, with their character encodings.
_DER_STRINGS: Final[dict[int, str]] = {
    0x0C: "utf-8",  # UTF8String
    0x12: "ascii",  # NumericString
    0x13: "ascii",  # PrintableString
    0x14: "latin-1",  # TeletexString, as commonly (mis)used
    0x16: "ascii",  # IA5String
    0x1A: "ascii",  # VisibleString
    0x1C: "utf-32-be",  # UniversalString
    0x1E: "utf-16-be",  # BMPString
}


class DNError(ValueError):
    """A distinguished name or SAN value that cannot be parsed or is not allowed."""


#: One RDN: a set of (attribute OID, normalised value) pairs.
CanonicalRDN = frozenset[tuple[str, str]]
#: A DN in X.500 order (most significant RDN first), as in the certificate's Name.
CanonicalDN = tuple[CanonicalRDN, ...]


def _fold(value: str) -> str:
    """RFC 4518-style preparation for caseIgnoreMatch: NFKC, case fold, fold spaces."""
    text = unicodedata.normalize("NFKC", value).casefold()
    return " ".join(text.split())


def _decode_hexstring(hexdigits: str) -> str:
    """A ``#...`` value (RFC 4514 §2.4): the BER encoding of a string attribute value."""
    try:
        der = bytes.fromhex(hexdigits)
    except ValueError as exc:
        raise DNError("a '#' value must be an even number of hex digits") from exc
    if len(der) < 2 or der[0] not in _DER_STRINGS:
        raise DNError("a '#' value must be the DER encoding of a directory string")
    length, offset = der[1], 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or len(der) < 2 + count:
            raise DNError("a '#' value has a malformed DER length")
        length = int.from_bytes(der[2 : 2 + count], "big")
        offset = 2 + count
    if offset + length != len(der):
        raise DNError("a '#' value's DER length does not match its content")
    try:
        return der[offset:].decode(_DER_STRINGS[der[0]])
    except UnicodeDecodeError as exc:
        raise DNError("a '#' value holds text that does not decode") from exc


def _attribute_oid(text: str) -> str:
    name = text.strip()
    if name.upper().startswith("OID."):
        name = name[4:]
    if _NUMERICOID.match(name):
        return name
    if _DESCR.match(name) and name.upper() in _SHORT_NAMES:
        return _SHORT_NAMES[name.upper()]
    raise DNError(f"unknown attribute type {text.strip()!r} (use a short name or a dotted OID)")


def _parse_value(text: str, start: int) -> tuple[str, int]:
    """Parse one attribute value from ``start``; return it and the index of the delimiter."""
    i, n = start, len(text)
    while i < n and text[i] == " ":
        i += 1
    if i < n and text[i] == "#":
        j = i + 1
        while j < n and text[j] not in ",+":
            j += 1
        return _decode_hexstring(text[i + 1 : j].strip()), j
    buf = bytearray()
    trailing_unescaped = 0
    while i < n and text[i] not in ",+":
        ch = text[i]
        if ch == "\\":
            if i + 1 >= n:
                raise DNError("a DN ends with a lone backslash")
            nxt = text[i + 1]
            if nxt in _SPECIALS or nxt == " ":
                buf += nxt.encode()
                i += 2
            elif re.fullmatch(r"[0-9A-Fa-f]{2}", text[i + 1 : i + 3]):
                buf.append(int(text[i + 1 : i + 3], 16))
                i += 3
            else:
                raise DNError(f"invalid escape '\\{nxt}' in a DN value")
            trailing_unescaped = 0
            continue
        if ch in '";<>\x00':
            raise DNError(f"character {ch!r} must be escaped in a DN value")
        buf += ch.encode()
        trailing_unescaped = trailing_unescaped + 1 if ch == " " else 0
        i += 1
    if trailing_unescaped:
        del buf[-trailing_unescaped:]
    try:
        return buf.decode("utf-8"), i
    except UnicodeDecodeError as exc:
        raise DNError("escaped bytes in a DN value are not valid UTF-8") from exc


def _require_unicode(text: str) -> None:
    """A DN or SAN is UTF-8 text (RFC 4514 §2.4); a lone surrogate (what Python makes of
    undecodable command-line bytes) cannot be encoded, so it is refused as a bad name."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise DNError(
            f"the name holds a character that is not valid Unicode (position {exc.start})"
        ) from exc


def parse_dn(text: str) -> CanonicalDN:
    """Parse an RFC 4514 DN string into canonical X.500 order (the string lists it reversed)."""
    _require_unicode(text)
    if not text.strip():
        raise DNError("the DN is empty")
    rdns: list[CanonicalRDN] = []
    avas: list[tuple[str, str]] = []
    i, n = 0, len(text)
    while True:
        eq = text.find("=", i)
        if eq < 0:
            raise DNError(f"expected 'type=value' at position {i}")
        type_text = text[i:eq].strip()
        oid = _attribute_oid(type_text)
        value, i = _parse_value(text, eq + 1)
        if not value.strip():
            raise DNError(f"attribute {type_text} has an empty value")
        avas.append((oid, _fold(value)))
        if i >= n or text[i] == ",":
            if len({a for a, _ in avas}) != len(avas):
                raise DNError("a multi-valued RDN repeats an attribute type")
            rdns.append(frozenset(avas))
            avas = []
            if i >= n:
                break
        i += 1
        if i >= n:
            raise DNError("the DN ends with a separator")
    return tuple(reversed(rdns))


def dn_of_certificate(name: x509.Name) -> CanonicalDN:
    """The canonical form of a certificate's subject (already in X.500 order)."""
    rdns: list[CanonicalRDN] = []
    for rdn in name.rdns:
        avas = []
        for attr in rdn:
            value = attr.value
            text = value if isinstance(value, str) else "#" + value.hex()
            avas.append((attr.oid.dotted_string, _fold(text)))
        rdns.append(frozenset(avas))
    return tuple(rdns)


def _escape(value: str) -> str:
    out = []
    for idx, ch in enumerate(value):
        if ch in '"+,;<>\\=' or (idx == 0 and ch in "# ") or (idx == len(value) - 1 and ch == " "):
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def format_dn(dn: CanonicalDN) -> str:
    """The RFC 4514 string of a canonical DN (most specific RDN first)."""
    parts = []
    for rdn in reversed(dn):
        parts.append(
            "+".join(f"{_NAME_OF_OID.get(oid, oid)}={_escape(value)}" for oid, value in sorted(rdn))
        )
    return ",".join(parts)


def _canonical_ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError as exc:
        raise DNError(f"not an IP address: {value!r}") from exc


def _canonical_email(value: str) -> str:
    local, at, domain = value.strip().rpartition("@")
    if not at or not local or not domain:
        raise DNError(f"not an email address: {value!r}")
    return f"{local}@{domain.lower()}"


def _canonical_dns(value: str) -> str:
    name = value.strip().rstrip(".").lower()
    if not name or not re.fullmatch(r"[a-z0-9*_-]+(\.[a-z0-9_-]+)*", name):
        raise DNError(f"not a DNS name: {value!r}")
    return name


def _canonical_uri(value: str) -> str:
    text = value.strip()
    if not re.match(r"[A-Za-z][A-Za-z0-9+.-]*:\S+\Z", text):
        raise DNError(f"not an absolute URI: {value!r}")
    return text


@dataclass(frozen=True, slots=True)
class CertificateName:
    """The one name a tls_client_auth client is registered with (RFC 8705 §2.1.2)."""

    kind: NameKind
    value: str
    dn: CanonicalDN | None = field(default=None, compare=False, repr=False)

    @classmethod
    def parse(cls, kind: str, value: str) -> CertificateName:
        """Validate and canonicalise a registered name; raises DNError with the reason."""
        _require_unicode(value)
        if kind == "subject_dn":
            dn = parse_dn(value)
            return cls("subject_dn", format_dn(dn), dn)
        if kind == "san_dns":
            return cls("san_dns", _canonical_dns(value))
        if kind == "san_uri":
            return cls("san_uri", _canonical_uri(value))
        if kind == "san_ip":
            return cls("san_ip", _canonical_ip(value))
        if kind == "san_email":
            return cls("san_email", _canonical_email(value))
        raise DNError(f"unknown name kind {kind!r}; allowed: {', '.join(NAME_KINDS)}")

    def matches(self, cert: x509.Certificate) -> bool:
        """Whether ``cert`` carries this name (subject DN match or one SAN entry)."""
        if self.kind == "subject_dn":
            return dn_of_certificate(cert.subject) == (self.dn or parse_dn(self.value))
        return any(self._matches_san(entry) for entry in _san_entries(cert))

    def _matches_san(self, entry: x509.GeneralName) -> bool:
        if self.kind == "san_dns" and isinstance(entry, x509.DNSName):
            return entry.value.rstrip(".").lower() == self.value
        if self.kind == "san_uri" and isinstance(entry, x509.UniformResourceIdentifier):
            return bool(entry.value == self.value)
        if self.kind == "san_ip" and isinstance(entry, x509.IPAddress):
            return (
                isinstance(entry.value, ipaddress.IPv4Address | ipaddress.IPv6Address)
                and str(entry.value) == self.value
            )
        if self.kind == "san_email" and isinstance(entry, x509.RFC822Name):
            try:
                return _canonical_email(entry.value) == self.value
            except DNError:
                return False
        return False


def _san_entries(cert: x509.Certificate) -> Iterable[x509.GeneralName]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return ()
    return list(ext.value)
