"""client_secret_basic and client_secret_post (RFC 6749 §2.3.1)."""

from __future__ import annotations

import base64
import binascii
import re
import time
from typing import Final
from urllib.parse import unquote_plus

from mtlsauth.core.errors import InvalidClient, InvalidRequest
from mtlsauth.issuer.clientauth.base import AuthContext, AuthRequest
from mtlsauth.issuer.model import Client
from mtlsauth.issuer.secrets import matching_hash

__all__ = ["authenticate_secret", "parse_basic"]

#: application/x-www-form-urlencoded text: every '%' starts a two-hex-digit escape.
_FORM_ENCODED: Final = re.compile(r"(?:[^%]|%[0-9A-Fa-f]{2})*")
_MALFORMED: Final = "The Basic credentials are malformed."


def _form_decode(text: str) -> str:
    """RFC 6749 Appendix B: each credential was form-urlencoded before Basic encoding.

    ``unquote_plus`` keeps a bad escape (``%zz``) as it is; a malformed value is refused
    rather than compared as if it had been meant literally."""
    if not _FORM_ENCODED.fullmatch(text):
        raise ValueError("a '%' not followed by two hex digits")
    return unquote_plus(text, encoding="utf-8", errors="strict")


def parse_basic(header: str) -> tuple[str, str]:
    """Decode an ``Authorization: Basic`` value into (client_id, client_secret) (RFC 6749
    §2.3.1, RFC 7617 §2); InvalidRequest when it is not base64 of UTF-8 ``user:password``
    with both parts form-encoded."""
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        raise InvalidClient(f"unsupported authorization scheme {scheme[:20]!r}", reason="malformed")
    # A Basic value that does not decode is a malformed request (RFC 6749 §5.2
    # invalid_request, 400), not a failed authentication: nothing was presented to check.
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        user, sep, password = decoded.partition(":")
        client_id, secret = _form_decode(user), _form_decode(password)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest(
            f"malformed Basic credentials: {exc}", description=_MALFORMED, reason="malformed"
        ) from exc
    if not sep:
        raise InvalidRequest(
            "malformed Basic credentials: no ':' after the client_id",
            description=_MALFORMED,
            reason="malformed",
        )
    if not client_id:
        raise InvalidClient("Basic credentials without a client_id", reason="malformed")
    return client_id, secret


async def authenticate_secret(client: Client, request: AuthRequest, context: AuthContext) -> str:
    """Compare the presented secret with every active secret of the client, in constant time."""
    basic = client.auth_method == "client_secret_basic"
    secret = request.basic_secret if basic else request.post_secret
    if not secret:
        raise InvalidClient(f"client {client.client_id!r}: no secret presented", reason="no_secret")
    now = time.time()
    active = [entry.hash for entry in client.secrets if entry.is_active(now)]
    matched = matching_hash(context.secret_key, secret, active)
    if matched is None:
        raise InvalidClient(
            f"client {client.client_id!r}: wrong or expired secret", reason="bad_secret"
        )
    return matched
