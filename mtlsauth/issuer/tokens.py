"""JWT access tokens (RFC 9068) bound to a client certificate (RFC 8705 §3.1).

The profile (header, algorithm, claims, ``cnf``) is :mod:`mtlsauth.core.access_token`; this
module writes and signs tokens to it.

The JWS header is fixed per key and encoded once; each token costs one JSON dump of the claims
and one ES256 signature.
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

__all__ = ["AccessToken", "TokenIssuer"]

# A JSON string literal (json.dumps of a str takes the encoder's C fast path).
_quote = json.dumps


@dataclass(frozen=True, slots=True)
class AccessToken:
    token: str
    expires_in: int
    claims: dict[str, Any]


class TokenIssuer:
    """Builds and signs RFC 9068 access tokens for one issuer and signing key."""

    def __init__(self, *, issuer: str, key: SigningKey, ttl: int) -> None:
        self.issuer = issuer
        self._iss_member = '{"iss":' + _quote(issuer)
        self.ttl = ttl
        self.use_key(key)

    def use_key(self, key: SigningKey) -> None:
        """Sign from now on with ``key`` (signing key rotation)."""
        encoded = json.dumps(header(key.kid), separators=(",", ":")).encode()
        self._header_b64 = b64url(encoded) + "."
        self.key = key

    def issue(
        self,
        *,
        client_id: str,
        audience: Sequence[str],
        scope: Sequence[str],
        x5t_s256: str | None,
    ) -> AccessToken:
        """A signed token; ``x5t_s256`` set means the token is bound (``cnf``, RFC 8705 §3.1)."""
        now = int(time.time())
        exp = now + self.ttl
        jti = secrets.token_urlsafe(16)
        aud: str | list[str] = audience[0] if len(audience) == 1 else list(audience)
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": client_id,
            "client_id": client_id,
            "aud": aud,
            "iat": now,
            "exp": exp,
            "jti": jti,
        }
        # The payload is written member by member (strings quoted by the json module's own
        # escaper) instead of through a JSON encoder: ≈ 10 µs less per token.
        quoted_id = _quote(client_id)
        payload = [
            self._iss_member,
            ',"sub":', quoted_id,
            ',"client_id":', quoted_id,
            ',"aud":', _quote(aud) if isinstance(aud, str) else f"[{','.join(map(_quote, aud))}]",
            f',"iat":{now},"exp":{exp},"jti":"{jti}"',
        ]  # fmt: skip
        if scope:
            claims["scope"] = joined = " ".join(scope)
            payload += (',"scope":', _quote(joined))
        if x5t_s256 is not None:
            claims["cnf"] = confirmation(x5t_s256)
            # The same member as json.dumps(confirmation(...)) writes, without the encoder.
            payload += (',"cnf":{"x5t#S256":', _quote(x5t_s256), "}")
        payload.append("}")
        signing_input = self._header_b64 + b64url("".join(payload).encode("ascii"))
        signature = b64url(self.key.sign(signing_input.encode("ascii")))
        return AccessToken(token=f"{signing_input}.{signature}", expires_in=self.ttl, claims=claims)
