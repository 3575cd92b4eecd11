"""Reading back the tokens this server issued: introspection (RFC 7662) and revocation
(RFC 7009).

A token is ours when its signature verifies with one of our published signing keys and its
``iss`` is ours; anything else — foreign, malformed, expired, revoked — is simply not active.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final

import jwt

from mtlsauth.core.access_token import (
    ALGORITHM,
    ALGORITHMS,
    MAX_TOKEN_LENGTH,
    REQUIRED_CLAIMS,
    typ_accepted,
)
from mtlsauth.core.errors import InvalidRequest
from mtlsauth.issuer.audit import Audit
from mtlsauth.issuer.keys import SigningKey
from mtlsauth.issuer.store import Store

__all__ = ["INACTIVE", "TokenInspector"]

INACTIVE: Final[dict[str, Any]] = {"active": False}


class TokenInspector:
    def __init__(
        self,
        *,
        issuer: str,
        keys: Callable[[], list[SigningKey]],
        store: Store,
        audit: Audit,
    ) -> None:
        self.issuer = issuer
        self._keys = keys
        self._store = store
        self._audit = audit

    def parse(self, token: str) -> dict[str, Any] | None:
        """The claims of a token we issued (expired ones too), or None."""
        if not token or len(token) > MAX_TOKEN_LENGTH:
            return None
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return None
        key = next((k for k in self._keys() if k.kid == header.get("kid")), None)
        if key is None or header.get("alg") != ALGORITHM or not typ_accepted(header.get("typ")):
            return None
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key.private_key.public_key(),
                algorithms=list(ALGORITHMS),
                issuer=self.issuer,
                options={
                    "verify_exp": False,
                    "verify_aud": False,
                    "require": list(REQUIRED_CLAIMS),
                },
            )
        except jwt.PyJWTError:
            return None
        return claims

    async def introspect(self, token: str, caller: str) -> dict[str, Any]:
        """RFC 7662 §2.2: ``active`` and, when active, the token's metadata."""
        claims = self.parse(token)
        if claims is None or float(claims["exp"]) <= time.time():
            return INACTIVE
        if await self._store.is_token_revoked(str(claims["jti"])):
            return INACTIVE
        self._audit.event("token.introspected", client_id=caller, jti=claims["jti"])
        response: dict[str, Any] = {
            "active": True,
            "token_type": "Bearer",
            **{k: claims[k] for k in REQUIRED_CLAIMS},
        }
        if "scope" in claims:
            response["scope"] = claims["scope"]
        if "cnf" in claims:
            response["cnf"] = claims["cnf"]
        return response

    async def revoke(self, token: str, caller: str) -> None:
        """RFC 7009 §2.1: revoke the caller's own token; an unknown token is not an error.

        Decision D5: another client's token is refused (400) and stays active.
        """
        claims = self.parse(token)
        if claims is None or float(claims["exp"]) <= time.time():
            return
        if claims["client_id"] != caller:
            raise InvalidRequest(
                f"client {caller!r} tried to revoke a token of {claims['client_id']!r}",
                description="A client can only revoke its own tokens.",
            )
        await self._store.revoke_token(str(claims["jti"]), caller, float(claims["exp"]))
        self._audit.event("token.revoked", client_id=caller, jti=claims["jti"])
