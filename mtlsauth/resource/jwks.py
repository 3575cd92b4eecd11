"""The issuer's signing keys for the checker: discovery, then the shared JWKS cache.

* Discovery (RFC 8414 §3): ``<issuer>/.well-known/oauth-authorization-server`` gives
  ``jwks_uri``; the document must name the same issuer (§3.3) and the URI must be https.
* Fetching and caching are :class:`mtlsauth.core.jwks.KeySets` (no redirects, size limit,
  single flight, back-off, a stale set refreshed after ``max_age``, an unknown ``kid``
  refetched at most every ``min_refetch_interval``; when the issuer cannot be reached the
  cached keys keep serving). The issuer is the operator's choice, so its address is not
  filtered.
* Keys: only EC P-256 signature keys for ES256, the algorithm of the access-token profile
  (:mod:`mtlsauth.core.access_token`); anything else in the set is ignored.

Errors at the checker's boundary (RFC 6750 §3): no keys at all is 503
``temporarily_unavailable``; a ``kid`` the issuer does not have is ``invalid_token``.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from typing import Any, Final

import jwt

from mtlsauth.core.access_token import ALGORITHM
from mtlsauth.core.errors import InvalidToken, TemporarilyUnavailable
from mtlsauth.core.fetch import DEFAULT_MAX_BYTES, FetchError
from mtlsauth.core.jwks import JWKSUnavailable, KeySets

__all__ = ["WELL_KNOWN", "JWKSCache", "JWKSFetchError"]

log = logging.getLogger(__name__)

WELL_KNOWN: Final = "/.well-known/oauth-authorization-server"


class JWKSFetchError(JWKSUnavailable):
    """The issuer's metadata could not be fetched or understood."""


def _usable(jwk: Any) -> bool:
    return (
        isinstance(jwk, dict)
        and isinstance(jwk.get("kid"), str)
        and jwk.get("kty") == "EC"
        and jwk.get("crv") == "P-256"
        and jwk.get("alg", ALGORITHM) == ALGORITHM
        and jwk.get("use", "sig") == "sig"
        and "d" not in jwk
    )


def _verification_keys(jwks: list[dict[str, Any]]) -> dict[str, jwt.PyJWK]:
    parsed = {}
    for jwk in jwks:
        if _usable(jwk):
            try:
                parsed[jwk["kid"]] = jwt.PyJWK(jwk, algorithm=ALGORITHM)
            except jwt.PyJWTError as exc:
                log.warning("ignoring an unusable key %s: %s", jwk.get("kid"), exc)
    return parsed


def _jwks_uri_of(issuer: str, metadata: Any) -> str:
    """The ``jwks_uri`` of RFC 8414 metadata that names ``issuer`` (§3.3)."""
    if not isinstance(metadata, dict) or metadata.get("issuer") != issuer:
        raise JWKSFetchError("the metadata names another issuer")
    uri = metadata.get("jwks_uri")
    if not isinstance(uri, str) or not uri.startswith("https://"):
        raise JWKSFetchError("the metadata has no https jwks_uri")
    return uri


class JWKSCache:
    """Signing keys of one issuer, by ``kid``."""

    def __init__(
        self,
        *,
        issuer: str,
        ssl_context: ssl.SSLContext,
        min_refetch_interval: float = 10.0,
        max_age: float = 300.0,
        timeout: float = 5.0,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self._sets = KeySets(
            ssl_context, policy=None, max_age=max_age, min_refetch=min_refetch_interval,
            timeout=timeout, max_bytes=max_bytes,
        )  # fmt: skip
        self._jwks_uri: str | None = None
        self._discovery = asyncio.Lock()
        self._discovery_failed_at = float("-inf")
        # The parsed keys of the last set fetched (the same list object until a refetch).
        self._raw: list[dict[str, Any]] | None = None
        self._keys: dict[str, jwt.PyJWK] = {}

    @property
    def fetches(self) -> int:
        """Key set fetches made so far."""
        return self._sets.fetches

    async def close(self) -> None:
        await self._sets.close()

    async def _discover(self) -> str:
        """The issuer's ``jwks_uri``: asked once for everyone waiting; a failure is retried at
        most every ``min_refetch_interval``."""
        async with self._discovery:
            if self._jwks_uri is not None:
                return self._jwks_uri
            if time.monotonic() - self._discovery_failed_at < self._sets.min_refetch:
                raise TemporarilyUnavailable(f"the metadata of {self.issuer} cannot be fetched")
            try:
                uri = _jwks_uri_of(self.issuer, await self._sets.get_json(self.issuer + WELL_KNOWN))
            except (FetchError, JWKSFetchError) as exc:
                self._discovery_failed_at = time.monotonic()
                log.warning("cannot discover the keys of %s: %s", self.issuer, exc)
                raise TemporarilyUnavailable(f"cannot discover the issuer's keys: {exc}") from exc
            self._jwks_uri = uri
            return uri

    async def key(self, kid: str) -> jwt.PyJWK:
        """The verification key for ``kid``; InvalidToken when the issuer has no such key."""
        uri = self._jwks_uri or await self._discover()
        try:
            jwks = await self._sets.keys(uri, kid=kid)
        except JWKSUnavailable as exc:
            raise TemporarilyUnavailable(str(exc)) from exc
        if jwks is not self._raw:
            self._keys, self._raw = _verification_keys(jwks), jwks
        found = self._keys.get(kid)
        if found is None and not self._keys:
            raise TemporarilyUnavailable(f"no signing keys could be fetched from {self.issuer}")
        if found is None:
            raise InvalidToken(f"no signing key with kid {kid[:40]!r} at {self.issuer}")
        return found
