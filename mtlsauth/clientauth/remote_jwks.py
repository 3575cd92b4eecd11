"""Client keys published at a ``jwks_uri`` (RFC 7591 §2), fetched over TLS and cached.

An unknown ``kid`` triggers one refetch per URI at most every ``min_refetch`` seconds; a
failed fetch keeps serving the cached keys. Responses are size-limited.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from dataclasses import dataclass
from typing import Any, Final

import aiohttp

from mtlsauth.errors import InvalidClient

__all__ = ["RemoteJWKS"]

log = logging.getLogger(__name__)
_MAX_BYTES: Final = 65536


@dataclass(slots=True)
class _Entry:
    keys: list[dict[str, Any]]
    fetched_at: float
    attempted_at: float


class RemoteJWKS:
    def __init__(
        self,
        ssl_context: ssl.SSLContext,
        *,
        max_age: float = 300.0,
        min_refetch: float = 10.0,
        timeout: float = 5.0,
    ) -> None:
        self._ssl = ssl_context
        self._max_age = max_age
        self.min_refetch = min_refetch
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._entries: dict[str, _Entry] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _fetch(self, uri: str) -> list[dict[str, Any]]:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        async with self._session.get(uri, ssl=self._ssl) as resp:
            if resp.status != 200:
                raise ValueError(f"{uri} answered {resp.status}")
            body = await resp.content.read(_MAX_BYTES + 1)
            if len(body) > _MAX_BYTES:
                raise ValueError(f"{uri} sent more than {_MAX_BYTES} bytes")
        try:
            doc = json.loads(body)
        except RecursionError as exc:
            raise ValueError(f"{uri} sent JSON nested too deeply") from exc
        keys = doc.get("keys") if isinstance(doc, dict) else None
        if not isinstance(keys, list):
            raise ValueError(f"{uri} is not a JWK Set")
        return [k for k in keys if isinstance(k, dict)]

    async def keys(self, uri: str, *, kid: str | None) -> list[dict[str, Any]]:
        """The keys at ``uri``; refetched when stale or when ``kid`` is unknown (rate-limited)."""
        now = time.monotonic()
        entry = self._entries.get(uri)
        stale = entry is None or now - entry.fetched_at > self._max_age
        unknown = (
            entry is not None and kid is not None and all(k.get("kid") != kid for k in entry.keys)
        )
        if (stale or unknown) and (entry is None or now - entry.attempted_at >= self.min_refetch):
            lock = self._locks.setdefault(uri, asyncio.Lock())
            async with lock:
                current = self._entries.get(uri)
                if current is entry:  # nobody refetched while we waited
                    try:
                        keys = await self._fetch(uri)
                    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                        log.warning("cannot fetch client keys from %s: %s", uri, exc)
                        if entry is not None:
                            entry.attempted_at = time.monotonic()
                    else:
                        at = time.monotonic()
                        self._entries[uri] = _Entry(keys=keys, fetched_at=at, attempted_at=at)
            entry = self._entries.get(uri)
        if entry is None:
            raise InvalidClient(f"the client's jwks_uri {uri} cannot be fetched", reason="jwks")
        return entry.keys
