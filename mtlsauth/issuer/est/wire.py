"""RFC 7030 §4 message encodings.

Requests carry a PKCS#10 CSR (RFC 2986) as base64 DER (§4.2.1, ``application/pkcs10``);
responses carry certificates as a certs-only CMS SignedData (RFC 5751 §3.2.2, the "degenerate"
PKCS#7 with no signers), base64 DER, ``application/pkcs7-mime`` (§4.1.3, §4.2.3).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7

from mtlsauth.core.errors import InvalidRequest

__all__ = ["CERTS_ONLY", "PKCS7", "certs_only", "parse_csr"]

#: §4.1.3: the CA certificates response.
PKCS7: Final = "application/pkcs7-mime"
#: §4.2.3: an enrollment response.
CERTS_ONLY: Final = "application/pkcs7-mime; smime-type=certs-only"


def parse_csr(body: bytes) -> x509.CertificateSigningRequest:
    """The CSR of a simpleenroll/simplereenroll body (base64 DER, line breaks allowed);
    InvalidRequest when it is not one. Its signature is checked by the CA, not here."""
    try:
        der = base64.b64decode(b"".join(body.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest(
            f"EST body is not base64: {exc}", description="The body is not a base64 PKCS#10."
        ) from exc
    try:
        return x509.load_der_x509_csr(der)
    except ValueError as exc:
        raise InvalidRequest(
            f"EST body is not a DER PKCS#10: {exc}",
            description="The body is not a base64 PKCS#10.",
        ) from exc


def certs_only(certificates: Sequence[x509.Certificate]) -> bytes:
    """``certificates`` as base64 certs-only PKCS#7, 64-character lines (RFC 2045 §6.8)."""
    der = pkcs7.serialize_certificates(list(certificates), Encoding.DER)
    return base64.encodebytes(der)
