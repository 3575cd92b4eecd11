"""Client keys published at a ``jwks_uri`` (RFC 7591 §2), fetched over https and cached.

The fetch is triggered by an unauthenticated request, so everything it can cost is bounded:

* Where: https only, no redirects, only addresses the :class:`AddressPolicy` permits (global
  unicast unless ``jwks_uri_allow_private`` says otherwise), checked on the resolved address.
* How long and how much: a short total timeout per fetch; the body is capped.
* How often: one fetch per URI at a time, shared by every request that needs it (single
  flight); after a failure the URI is not fetched again until its back-off passes (doubling
  per consecutive failure, up to ``max_backoff``), and requests in between fail at once;
  an unknown ``kid`` refetches a cached document at most every ``min_refetch`` seconds.
* How many: the cache, the failure records and the fetches in flight are capped.

A failed fetch keeps serving the cached keys of that URI, if any.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Final

import aiohttp

from mtlsauth.core.errors import InvalidClient
from mtlsauth.core.fetch import (
    DEFAULT_MAX_BYTES,
    AddressPolicy,
    FetchError,
    fetch_json,
    fetch_session,
)

__all__ = ["RemoteJWKS"]

log = logging.getLogger(__name__)

#: URIs remembered (cached documents, and failure records, each).
MAX_URIS: Final = 1024
#: Distinct URIs fetched at the same time; more fail at once rather than queue.
MAX_IN_FLIGHT: Final = 16


@dataclass(slots=True)
class _Entry:
    keys: list[dict[str, Any]]
    fetched_at: float
    attempted_at: float


@dataclass(slots=True)
class _Failure:
    count: int
    retry_at: float


def _keys_of(uri: str, doc: Any) -> list[dict[str, Any]]:
    keys = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(keys, list):
        raise FetchError(f"{uri} is not a JWK Set")
    return [k for k in keys if isinstance(k, dict)]


def _remember(entries: OrderedDict[str, Any], key: str, value: Any) -> None:
    """Insert as most recent, dropping the least recently used beyond MAX_URIS."""
    entries[key] = value
    entries.move_to_end(key)
    while len(entries) > MAX_URIS:
        entries.popitem(last=False)


class RemoteJWKS:
    def __init__(
        self,
        ssl_context: ssl.SSLContext,
        *,
        policy: AddressPolicy = AddressPolicy(),  # noqa: B008 (frozen, so safe to share)
        max_age: float = 300.0,
        min_refetch: float = 10.0,
        max_backoff: float = 300.0,
        timeout: float = 3.0,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self._ssl = ssl_context
        self._policy = policy
        self._max_age = max_age
        self.min_refetch = min_refetch
        self._max_backoff = max_backoff
        self._timeout = timeout
        self._max_bytes = max_bytes
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._failures: OrderedDict[str, _Failure] = OrderedDict()
        self._in_flight: dict[str, asyncio.Task[None]] = {}
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        tasks = list(self._in_flight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _may_fetch(self, uri: str, entry: _Entry | None, now: float) -> bool:
        if uri in self._in_flight:
            return True  # join the fetch already under way
        failure = self._failures.get(uri)
        if failure is not None and now < failure.retry_at:
            return False
        if entry is not None and now - entry.attempted_at < self.min_refetch:
            return False
        if len(self._in_flight) >= MAX_IN_FLIGHT:
            log.warning("%d jwks_uri fetches in flight; not fetching %s now", MAX_IN_FLIGHT, uri)
            return False
        return True

    async def _fetch(self, uri: str) -> None:
        """Fetch ``uri`` and record the outcome; never raises (its waiters read the cache)."""
        if self._session is None:
            self._session = fetch_session(self._timeout, self._policy)
        entry = self._entries.get(uri)
        if entry is not None:
            entry.attempted_at = time.monotonic()
        try:
            doc = await fetch_json(
                self._session, uri, ssl_context=self._ssl, policy=self._policy,
                max_bytes=self._max_bytes,
            )  # fmt: skip
            keys = _keys_of(uri, doc)
        except FetchError as exc:
            failure = self._failures.pop(uri, None)
            count = 1 if failure is None else failure.count + 1
            backoff = min(self.min_refetch * 2 ** (count - 1), self._max_backoff)
            _remember(self._failures, uri, _Failure(count, time.monotonic() + backoff))
            log.warning("cannot fetch client keys (retry in %.0f s): %s", backoff, exc)
            return
        at = time.monotonic()
        self._failures.pop(uri, None)
        _remember(self._entries, uri, _Entry(keys=keys, fetched_at=at, attempted_at=at))

    async def _fetch_once(self, uri: str) -> None:
        task = self._in_flight.get(uri)
        if task is None:
            task = asyncio.create_task(self._fetch(uri))
            self._in_flight[uri] = task
            task.add_done_callback(lambda _: self._in_flight.pop(uri, None))
        # A request that goes away (client disconnect) must not cancel everyone's fetch.
        await asyncio.shield(task)

    async def keys(self, uri: str, *, kid: str | None) -> list[dict[str, Any]]:
        """The keys at ``uri``; refetched when stale or when ``kid`` is unknown (rate-limited)."""
        now = time.monotonic()
        entry = self._entries.get(uri)
        if entry is not None:
            self._entries.move_to_end(uri)
        stale = entry is None or now - entry.fetched_at > self._max_age
        unknown = (
            entry is not None and kid is not None and all(k.get("kid") != kid for k in entry.keys)
        )
        if (stale or unknown) and self._may_fetch(uri, entry, now):
            await self._fetch_once(uri)
            entry = self._entries.get(uri)
        if entry is None:
            raise InvalidClient(f"the client's jwks_uri {uri} cannot be fetched", reason="jwks")
        return entry.keys
