"""SPIFFE X.509-SVIDs as client identities (SPIFFE ID and X509-SVID specifications).

A client registers ``--spiffe-id spiffe://TD/path`` (exactly that ID) or
``spiffe://TD/path/*`` (any ID strictly below that path). A certificate is an SVID when
(X509-SVID §2, §4.1, §4.3, §5.2): it holds exactly one URI SAN and it is a valid SPIFFE ID with
a path; it is a leaf (basicConstraints cA not true); its key usage has digitalSignature and
neither keyCertSign nor cRLSign. The ID's trust domain must be one the client's anchor was
registered for (``trust add --spiffe-trust-domain TD``), so one anchor cannot mint IDs of a
trust domain it was not given.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from cryptography import x509

__all__ = ["SpiffeError", "SpiffeId", "SpiffePattern", "svid_id", "valid_trust_domain"]

#: SPIFFE ID §2.1: trust domain names are lowercase letters, digits, '.', '-' and '_'.
_TRUST_DOMAIN: Final = re.compile(r"[a-z0-9._-]+\Z")
#: SPIFFE ID §2.2: path segments are letters, digits, '.', '-' and '_'; never '.' or '..'.
_SEGMENT: Final = re.compile(r"[A-Za-z0-9._-]+\Z")
_MAX_LENGTH: Final = 2048


class SpiffeError(ValueError):
    """Not a SPIFFE ID, or a certificate that is not an X.509-SVID; the message says why."""


def valid_trust_domain(name: str) -> str:
    if not _TRUST_DOMAIN.match(name) or len(name) > 255:
        raise SpiffeError(
            f"{name!r} is not a SPIFFE trust domain (lowercase letters, digits, '.', '-', '_')"
        )
    return name


@dataclass(frozen=True, slots=True)
class SpiffeId:
    trust_domain: str
    path: str  # "" or "/seg/seg"

    def __str__(self) -> str:
        return f"spiffe://{self.trust_domain}{self.path}"

    @classmethod
    def parse(cls, value: str) -> SpiffeId:
        if len(value.encode()) > _MAX_LENGTH:
            raise SpiffeError(f"a SPIFFE ID is at most {_MAX_LENGTH} bytes")
        prefix = "spiffe://"
        if not value.startswith(prefix):
            raise SpiffeError(f"{value!r} is not a SPIFFE ID (spiffe://TRUST-DOMAIN/PATH)")
        rest = value[len(prefix) :]
        domain, slash, path = rest.partition("/")
        valid_trust_domain(domain)
        path = slash + path
        if path:
            for segment in path[1:].split("/"):
                if not _SEGMENT.match(segment) or segment in (".", ".."):
                    raise SpiffeError(
                        f"{value!r}: path segments are letters, digits, '.', '-', '_' (not "
                        "empty, '.' or '..'; no trailing '/')"
                    )
        return cls(domain, path)


@dataclass(frozen=True, slots=True)
class SpiffePattern:
    """A registered ``--spiffe-id``: an exact ID, or ``.../*`` for every ID below a path."""

    base: SpiffeId
    below: bool

    @classmethod
    def parse(cls, value: str) -> SpiffePattern:
        below = value.endswith("/*")
        base = SpiffeId.parse(value[:-2] if below else value)
        if not below and not base.path:
            raise SpiffeError(f"{value!r}: a workload's SPIFFE ID has a path")
        return cls(base, below)

    def __str__(self) -> str:
        return f"{self.base}/*" if self.below else str(self.base)

    def matches(self, svid: SpiffeId) -> bool:
        if svid.trust_domain != self.base.trust_domain:
            return False
        if self.below:
            # Segment-wise: spiffe://td/a/* matches spiffe://td/a/b, never spiffe://td/ab.
            return svid.path.startswith(self.base.path + "/")
        return svid.path == self.base.path


def svid_id(cert: x509.Certificate) -> SpiffeId:
    """The SPIFFE ID of an X.509-SVID leaf; SpiffeError when ``cert`` is not one."""
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = sans.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    except ValueError as exc:
        raise SpiffeError(f"malformed subjectAltName: {exc}") from exc
    if len(uris) != 1:
        raise SpiffeError(f"an X.509-SVID has exactly one URI SAN, this has {len(uris)}")
    svid = SpiffeId.parse(uris[0])
    if not svid.path:
        raise SpiffeError("a leaf SVID's SPIFFE ID has a path")
    try:
        if cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            raise SpiffeError("a leaf SVID must not be a CA (basicConstraints cA is true)")
    except x509.ExtensionNotFound:
        pass
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound as exc:
        raise SpiffeError("a leaf SVID's key usage must include digitalSignature") from exc
    if not usage.digital_signature:
        raise SpiffeError("a leaf SVID's key usage must include digitalSignature")
    if usage.key_cert_sign or usage.crl_sign:
        raise SpiffeError("a leaf SVID's key usage must not include keyCertSign or cRLSign")
    return svid
