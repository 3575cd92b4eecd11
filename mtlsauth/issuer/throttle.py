"""Throttling of failed client authentication (decision D7; the failures are RFC 6749 §5.2
``invalid_client``).

Failures are counted per (client_id, source) in the store, so every worker and host shares
them; once a pair fails ``limit`` times within ``window`` seconds it is refused with 429
``slow_down`` and ``Retry-After`` for ``block`` seconds. Other sources of the same client are
not affected.

What an unauthenticated request can make grow here is bounded:

* the source is the address a trusted proxy vouches for, and an IPv6 source counts as its
  /64 (one host is routinely given a whole /64, so per-address keys would be unlimited);
* failures that name no registered client are counted under one key per source
  (:data:`UNKNOWN_CLIENT`), not one per invented client_id;
* the in-memory maps hold at most ``max_entries`` pairs and drop what has expired.

The hot path only reads an in-memory map of blocked pairs, refreshed from the store by the
server's background loop (and updated at once by this process's own failures).
"""

from __future__ import annotations

import functools
import ipaddress
import math
import time
from dataclasses import dataclass
from typing import Final

from mtlsauth.core.errors import SlowDown
from mtlsauth.issuer.store import Store

__all__ = [
    "SOURCE_KEY_CACHE",
    "UNKNOWN_CLIENT",
    "Throttle",
    "ThrottleKey",
    "ThrottlePolicy",
    "source_key",
]

#: The client_id failures of unregistered (or absent) client_ids are counted under. No
#: registered client_id can be empty (registration requires a visible first character).
UNKNOWN_CLIENT: Final = ""

#: (client_id or UNKNOWN_CLIENT, source key).
ThrottleKey = tuple[str, str]


#: Sources whose key is remembered; a miss only costs the parse again (LRU, bounded memory).
SOURCE_KEY_CACHE: Final = 4096


@functools.lru_cache(maxsize=SOURCE_KEY_CACHE)
def source_key(address: str) -> str:
    """The key failures from ``address`` are counted under: an IPv4 address as it is, an IPv6
    address as its /64 (RFC 4291 §2.5.4: the interface identifier is the host's to choose).

    Every authentication asks, and parsing costs ≈ 9 µs for IPv4 and ≈ 64 µs for IPv6 (the
    /64 network) on the benchmark machine, against ≈ 0.2 µs from the cache.
    """
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address[:100]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


@dataclass(frozen=True, slots=True)
class ThrottlePolicy:
    limit: int = 10
    window: float = 60.0
    block: float = 60.0
    #: At most this many pairs in each in-memory map of one process.
    max_entries: int = 10_000


class Throttle:
    def __init__(self, store: Store, policy: ThrottlePolicy) -> None:
        self._store = store
        self.policy = policy
        self._blocked: dict[ThrottleKey, float] = {}
        #: Pairs this process saw fail, with the time of the last failure (oldest first), so a
        #: success costs a store write only when there is something to clear.
        self._failed: dict[ThrottleKey, float] = {}

    @staticmethod
    def key(client_id: str | None, source: str) -> ThrottleKey:
        """The pair a request is counted under; ``client_id`` None for an unregistered one."""
        return (client_id or UNKNOWN_CLIENT, source_key(source))

    def check(self, key: ThrottleKey) -> None:
        """Raise SlowDown while ``key`` is blocked."""
        until = self._blocked.get(key)
        if until is not None:
            left = until - time.time()
            if left > 0:
                raise SlowDown(
                    f"client {key[0][:100]!r} from {key[1]} is throttled after failures",
                    retry_after=math.ceil(left),
                )
            del self._blocked[key]

    async def failed(self, key: ThrottleKey) -> None:
        now = time.time()
        self._failed.pop(key, None)
        self._failed[key] = now
        if len(self._failed) > self.policy.max_entries:
            self._prune_failed(now)
        until = await self._store.record_auth_failure(
            key[0],
            key[1],
            window=self.policy.window,
            limit=self.policy.limit,
            block=self.policy.block,
        )
        if until is not None:
            self._blocked[key] = until
            if len(self._blocked) > self.policy.max_entries:
                self._prune_blocked(now)

    async def succeeded(self, key: ThrottleKey) -> None:
        if self._failed.pop(key, None) is not None:
            await self._store.clear_auth_failures(key[0], key[1])

    async def refresh(self) -> None:
        """Learn the blocks other workers and hosts recorded."""
        blocked = await self._store.blocked(time.time())
        if len(blocked) > self.policy.max_entries:
            # Keep the blocks that last longest; a dropped one only costs its pair a failure.
            kept = sorted(blocked.items(), key=lambda item: item[1])[-self.policy.max_entries :]
            blocked = dict(kept)
        self._blocked = blocked

    def sizes(self) -> tuple[int, int]:
        """(blocked pairs, failed pairs) held in memory."""
        return len(self._blocked), len(self._failed)

    def _prune_failed(self, now: float) -> None:
        # A failure older than the window can no longer add to a block; past that, the
        # oldest go first (the store still counts them, only the clear-on-success is lost).
        horizon = now - self.policy.window
        for key in [k for k, at in self._failed.items() if at < horizon]:
            del self._failed[key]
        while len(self._failed) > self.policy.max_entries:
            del self._failed[next(iter(self._failed))]

    def _prune_blocked(self, now: float) -> None:
        for key in [k for k, until in self._blocked.items() if until <= now]:
            del self._blocked[key]
        while len(self._blocked) > self.policy.max_entries:
            del self._blocked[min(self._blocked, key=self._blocked.__getitem__)]
