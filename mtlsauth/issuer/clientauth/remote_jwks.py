"""Client keys published at a ``jwks_uri`` (RFC 7591 §2), for RFC 7523 assertions.

Fetching and caching are :class:`mtlsauth.core.jwks.KeySets` with the address policy of the
settings (``jwks_uri_allow_private``): a client chooses its URI, so it must not reach internal
addresses. What this adds is the token service's answer when a client's keys cannot be had:
401 ``invalid_client`` (RFC 6749 §5.2).
"""

from __future__ import annotations

from typing import Any

from mtlsauth.core.errors import InvalidClient
from mtlsauth.core.jwks import JWKSUnavailable, KeySets

__all__ = ["RemoteJWKS"]


class RemoteJWKS(KeySets):
    async def keys(self, uri: str, *, kid: str | None) -> list[dict[str, Any]]:
        try:
            return await super().keys(uri, kid=kid)
        except JWKSUnavailable as exc:
            raise InvalidClient(
                f"the client's jwks_uri {uri} cannot be fetched", reason="jwks"
            ) from exc
