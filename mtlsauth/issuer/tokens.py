"""JWT access tokens (RFC 9068) bound to a client certificate (RFC 8705 §3.1).

The profile (header, algorithm, claims, ``cnf``) is :mod:`mtlsauth.core.access_token`; this
module writes and signs tokens to it.

The JWS header is fixed per key and encoded once; each token costs one JSON dump of the claims
and one ES256 signature (RFC 7515 §3.1 compact serialization).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mtlsauth.core.access_token import confirmation, header
from mtlsauth.core.thumbprint import b64url
from mtlsauth.issuer.keys import SigningKey

__all__ = ["AccessToken", "TokenSigner"]


@dataclass(frozen=True, slots=True)
class AccessToken:
    token: str
    expires_in: int
    claims: dict[str, Any]


class TokenSigner:
    """Builds and signs RFC 9068 access tokens for one issuer (the URL) and signing key."""

    def __init__(self, *, issuer: str, key: SigningKey, ttl: int) -> None:
        self.issuer = issuer
        self.ttl = ttl
        self.use_key(key)

    def use_key(self, key: SigningKey) -> None:
        """Sign from now on with ``key`` (signing key rotation)."""
        encoded = json.dumps(header(key.kid), separators=(",", ":")).encode()
        self._header_b64 = b64url(encoded) + "."
        self.key = key

    def sign(
        self,
        *,
        client_id: str,
        audience: Sequence[str],
        scope: Sequence[str],
        x5t_s256: str | None,
    ) -> AccessToken:
        """A signed token; ``x5t_s256`` set means the token is bound (``cnf``, RFC 8705 §3.1)."""
        now = int(time.time())
        aud: str | list[str] = audience[0] if len(audience) == 1 else list(audience)
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": client_id,
            "client_id": client_id,
            "aud": aud,
            "iat": now,
            "exp": now + self.ttl,
            "jti": secrets.token_urlsafe(16),
        }
        if scope:
            claims["scope"] = " ".join(scope)
        if x5t_s256 is not None:
            claims["cnf"] = confirmation(x5t_s256)
        payload = json.dumps(claims, separators=(",", ":")).encode()
        signing_input = self._header_b64 + b64url(payload)
        signature = b64url(self.key.sign(signing_input.encode("ascii")))
        return AccessToken(token=f"{signing_input}.{signature}", expires_in=self.ttl, claims=claims)
