"""The issuer's signing keys, fetched over TLS from its metadata and cached.

* Discovery (RFC 8414): ``<issuer>/.well-known/oauth-authorization-server`` gives ``jwks_uri``;
  the document must name the same issuer.
* Rotation: a token with an unknown ``kid`` triggers one refetch, at most once per
  ``min_refetch_interval``, shared by every request waiting for it (single flight).
* Outages: keys older than ``max_age`` are refreshed, but when the issuer cannot be reached the
  cached keys keep serving.
* Fetches are https only, never follow a redirect and read at most ``max_bytes`` per document
  (:mod:`mtlsauth.core.fetch`); the issuer is the operator's choice, so its address is not filtered.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from typing import Any, Final

import aiohttp
import jwt

from mtlsauth.core.errors import InvalidToken, TemporarilyUnavailable
from mtlsauth.core.fetch import DEFAULT_MAX_BYTES, FetchError, fetch_json, fetch_session

__all__ = ["JWKSCache", "JWKSFetchError"]

log = logging.getLogger(__name__)

WELL_KNOWN: Final = "/.well-known/oauth-authorization-server"
#: The only key type and algorithm the checker accepts (a fixed allow-list).
_ALGORITHM: Final = "ES256"


class JWKSFetchError(Exception):
    """The issuer's metadata or key set could not be fetched or understood."""


def _usable(jwk: Any) -> bool:
    return (
        isinstance(jwk, dict)
        and isinstance(jwk.get("kid"), str)
        and jwk.get("kty") == "EC"
        and jwk.get("crv") == "P-256"
        and jwk.get("alg", _ALGORITHM) == _ALGORITHM
        and jwk.get("use", "sig") == "sig"
        and "d" not in jwk
    )


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
        self._ssl = ssl_context
        self._min_refetch = min_refetch_interval
        self._max_age = max_age
        self._timeout = timeout
        self._max_bytes = max_bytes
        self._keys: dict[str, jwt.PyJWK] = {}
        self._jwks_uri: str | None = None
        self._fetched_at = float("-inf")
        self._attempted_at = float("-inf")
        self._lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None
        self.fetches = 0

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _get_json(self, url: str) -> Any:
        if self._session is None:
            self._session = fetch_session(self._timeout)
        return await fetch_json(
            self._session, url, ssl_context=self._ssl, max_bytes=self._max_bytes
        )

    async def _fetch(self) -> None:
        self.fetches += 1
        try:
            if self._jwks_uri is None:
                doc = await self._get_json(self.issuer + WELL_KNOWN)
                if not isinstance(doc, dict) or doc.get("issuer") != self.issuer:
                    raise JWKSFetchError("the metadata names another issuer")
                uri = doc.get("jwks_uri")
                if not isinstance(uri, str) or not uri.startswith("https://"):
                    raise JWKSFetchError("the metadata has no https jwks_uri")
                self._jwks_uri = uri
            jwks = await self._get_json(self._jwks_uri)
        except FetchError as exc:
            raise JWKSFetchError(f"cannot fetch the issuer's keys: {exc}") from exc
        keys = jwks.get("keys") if isinstance(jwks, dict) else None
        if not isinstance(keys, list):
            raise JWKSFetchError("the JWKS has no 'keys' array")
        parsed = {}
        for jwk in keys:
            if _usable(jwk):
                try:
                    parsed[jwk["kid"]] = jwt.PyJWK(jwk, algorithm=_ALGORITHM)
                except jwt.PyJWTError as exc:
                    log.warning("ignoring an unusable key %s: %s", jwk.get("kid"), exc)
        self._keys = parsed
        self._fetched_at = time.monotonic()
        log.info("fetched %d signing key(s) from %s", len(parsed), self._jwks_uri)

    async def _refresh(self, *, reason: str) -> None:
        """Refetch once for everyone waiting; failures keep the cached keys."""
        attempted = self._attempted_at
        async with self._lock:
            if self._attempted_at != attempted:
                return  # someone else refetched while we waited
            self._attempted_at = time.monotonic()
            try:
                await self._fetch()
            except JWKSFetchError as exc:
                log.warning("JWKS refresh (%s) failed; serving cached keys: %s", reason, exc)
                if not self._keys:
                    raise TemporarilyUnavailable(str(exc)) from exc

    async def key(self, kid: str) -> jwt.PyJWK:
        """The verification key for ``kid``; InvalidToken when the issuer has no such key."""
        now = time.monotonic()
        if now - self._fetched_at > self._max_age and now - self._attempted_at > self._min_refetch:
            await self._refresh(reason="keys are stale")
        found = self._keys.get(kid)
        if found is None and time.monotonic() - self._attempted_at >= self._min_refetch:
            await self._refresh(reason=f"unknown kid {kid[:40]!r}")
            found = self._keys.get(kid)
        if found is None and not self._keys:
            raise TemporarilyUnavailable(f"no signing keys could be fetched from {self.issuer}")
        if found is None:
            raise InvalidToken(f"no signing key with kid {kid[:40]!r} at {self.issuer}")
        return found
