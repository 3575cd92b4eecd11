"""Client keys published at a ``jwks_uri`` (RFC 7591 §2), for RFC 7523 assertions.

Fetching and caching are :class:`mtlsauth.core.jwks.KeySets` with the address policy of the
settings (``jwks_uri_allow_private``): a client chooses its URI, so it must not reach internal
addresses. What this adds is the token service's answer when a client's keys cannot be had:
401 ``invalid_client`` (RFC 6749 §5.2).
"""

from __future__ import annotations

import ssl
from typing import Any

from mtlsauth.core.errors import InvalidClient
from mtlsauth.core.jwks import JWKSUnavailable, KeySets

__all__ = ["RemoteJWKS"]


class RemoteJWKS(KeySets):
    """KeySets whose failure is ``invalid_client``; ``owner`` names whose keys they are in
    the log (the client's, or a federation's)."""

    def __init__(
        self, ssl_context: ssl.SSLContext, *, owner: str = "the client's", **options: Any
    ) -> None:
        super().__init__(ssl_context, **options)
        self._owner = owner

    async def keys(self, uri: str, *, kid: str | None) -> list[dict[str, Any]]:
        try:
            return await super().keys(uri, kid=kid)
        except JWKSUnavailable as exc:
            raise InvalidClient(
                f"{self._owner} jwks_uri {uri} cannot be fetched", reason="jwks"
            ) from exc
