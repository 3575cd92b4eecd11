"""JWK Sets (RFC 7517 §5) fetched over https and cached: the one component both wings use.

The token service fetches its clients' ``jwks_uri`` (RFC 7591 §2, for RFC 7523 assertions) and
the checker fetches its issuer's keys (RFC 8414 ``jwks_uri``). A fetch may be triggered by an
unauthenticated request, so everything it can cost is bounded:

* Where and how much: :func:`mtlsauth.core.fetch.fetch_json` (https only, no redirects, the
  body read whole up to ``max_bytes``, the :class:`~mtlsauth.core.fetch.AddressPolicy` checked on
  the resolved address; ``policy=None`` for a URI the operator configured).
* How long: a short total timeout per fetch.
* How often: one fetch per URI at a time, shared by every caller that needs it (single
  flight); after a failure the URI is not fetched again until its back-off passes (doubling
  per consecutive failure from ``min_refetch`` up to ``max_backoff``), and callers in between
  fail at once; a stale document (older than ``max_age``) or an unknown ``kid`` refetches at
  most every ``min_refetch`` seconds.
* How many: the cached documents, the failure records and the fetches in flight are capped.

A failed fetch keeps serving the cached keys of that URI, if any. Failures are a
:class:`JWKSUnavailable`; each user translates it at its boundary (the token service into
``invalid_client``, the checker into ``temporarily_unavailable``).
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

from mtlsauth.core.fetch import (
    DEFAULT_MAX_BYTES,
    AddressPolicy,
    FetchError,
    fetch_json,
    fetch_session,
)

__all__ = ["MAX_IN_FLIGHT", "MAX_URIS", "JWKSUnavailable", "KeySets"]

log = logging.getLogger(__name__)

#: URIs remembered (cached documents, and failure records, each).
MAX_URIS: Final = 1024
#: Distinct URIs fetched at the same time; more fail at once rather than queue.
MAX_IN_FLIGHT: Final = 16

JWK = dict[str, Any]


class JWKSUnavailable(Exception):
    """No key set can be had for a URI (never fetched, or every fetch failed); the message
    says why (for the log)."""


@dataclass(slots=True)
class _Entry:
    keys: list[JWK]
    fetched_at: float
    attempted_at: float


@dataclass(slots=True)
class _Failure:
    count: int
    retry_at: float


def _keys_of(uri: str, doc: Any) -> list[JWK]:
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


class KeySets:
    """The JWK Sets of many URIs, each fetched and cached under the rules above."""

    def __init__(
        self,
        ssl_context: ssl.SSLContext,
        *,
        policy: AddressPolicy | None = AddressPolicy(),  # noqa: B008 (frozen, so safe to share)
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
        #: Fetches of key sets made so far (for tests and metrics).
        self.fetches = 0

    async def close(self) -> None:
        tasks = list(self._in_flight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def get_json(self, uri: str) -> Any:
        """One bounded fetch of a JSON document with this component's session and policy
        (the checker's RFC 8414 metadata); FetchError when it fails."""
        if self._session is None:
            self._session = fetch_session(self._timeout, self._policy)
        return await fetch_json(
            self._session, uri, ssl_context=self._ssl, policy=self._policy,
            max_bytes=self._max_bytes,
        )  # fmt: skip

    def _may_fetch(self, uri: str, entry: _Entry | None, now: float) -> bool:
        if uri in self._in_flight:
            return True  # join the fetch already under way
        failure = self._failures.get(uri)
        if failure is not None and now < failure.retry_at:
            return False
        if entry is not None and now - entry.attempted_at < self.min_refetch:
            return False
        if len(self._in_flight) >= MAX_IN_FLIGHT:
            log.warning("%d JWKS fetches in flight; not fetching %s now", MAX_IN_FLIGHT, uri)
            return False
        return True

    async def _fetch(self, uri: str) -> None:
        """Fetch ``uri`` and record the outcome; never raises (its waiters read the cache)."""
        self.fetches += 1
        entry = self._entries.get(uri)
        if entry is not None:
            entry.attempted_at = time.monotonic()
        try:
            keys = _keys_of(uri, await self.get_json(uri))
        except FetchError as exc:
            failure = self._failures.pop(uri, None)
            count = 1 if failure is None else failure.count + 1
            backoff = min(self.min_refetch * 2 ** (count - 1), self._max_backoff)
            _remember(self._failures, uri, _Failure(count, time.monotonic() + backoff))
            log.warning("cannot fetch a JWK Set (retry in %.0f s): %s", backoff, exc)
            return
        at = time.monotonic()
        self._failures.pop(uri, None)
        _remember(self._entries, uri, _Entry(keys=keys, fetched_at=at, attempted_at=at))
        log.info("fetched %d key(s) from %s", len(keys), uri)

    async def _fetch_once(self, uri: str) -> None:
        task = self._in_flight.get(uri)
        if task is None:
            task = asyncio.create_task(self._fetch(uri))
            self._in_flight[uri] = task
            task.add_done_callback(lambda _: self._in_flight.pop(uri, None))
        # A caller that goes away (client disconnect) must not cancel everyone's fetch.
        await asyncio.shield(task)

    async def keys(self, uri: str, *, kid: str | None) -> list[JWK]:
        """The keys at ``uri``; refetched when stale or when ``kid`` is unknown (rate-limited).

        The list is the cached one (the same object until the next successful fetch): callers
        may key derived data on its identity, and must not change it.
        """
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
            raise JWKSUnavailable(f"no key set could be fetched from {uri}")
        return entry.keys
