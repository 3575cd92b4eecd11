"""The certificate thumbprint of RFC 8705 §3.1: ``x5t#S256``.

This is the one function that computes it; the issuer, the checker and the tests all use it.
"""

from __future__ import annotations

import base64
import hashlib

__all__ = ["b64url", "x5t_s256"]


def b64url(data: bytes) -> str:
    """base64url without padding (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def x5t_s256(cert_der: bytes) -> str:
    """base64url-nopad(SHA-256(DER of the X.509 certificate)), RFC 8705 §3.1."""
    return b64url(hashlib.sha256(cert_der).digest())
