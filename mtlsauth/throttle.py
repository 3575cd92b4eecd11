"""Throttling of failed client authentication (decision D7).

Failures are counted per (client_id, source address) in the store, so every worker and host
shares them; once a pair fails ``limit`` times within ``window`` seconds it is refused with
429 ``slow_down`` and ``Retry-After`` for ``block`` seconds. Other addresses of the same
client are not affected, so an attacker cannot lock a legitimate client out.

The hot path only reads an in-memory map of blocked pairs, refreshed from the store by the
server's background loop (and updated at once by this process's own failures).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from mtlsauth.errors import SlowDown
from mtlsauth.store import Store

__all__ = ["Throttle", "ThrottlePolicy"]


@dataclass(frozen=True, slots=True)
class ThrottlePolicy:
    limit: int = 10
    window: float = 60.0
    block: float = 60.0


class Throttle:
    def __init__(self, store: Store, policy: ThrottlePolicy) -> None:
        self._store = store
        self.policy = policy
        self._blocked: dict[tuple[str, str], float] = {}
        self._failed: set[tuple[str, str]] = set()

    def check(self, client_id: str, source: str) -> None:
        """Raise SlowDown while (client_id, source) is blocked."""
        until = self._blocked.get((client_id, source))
        if until is not None:
            left = until - time.time()
            if left > 0:
                raise SlowDown(
                    f"client {client_id[:100]!r} from {source} is throttled after failures",
                    retry_after=math.ceil(left),
                )
            del self._blocked[(client_id, source)]

    async def failed(self, client_id: str, source: str) -> None:
        self._failed.add((client_id, source))
        until = await self._store.record_auth_failure(
            client_id,
            source,
            window=self.policy.window,
            limit=self.policy.limit,
            block=self.policy.block,
        )
        if until is not None:
            self._blocked[(client_id, source)] = until

    async def succeeded(self, client_id: str, source: str) -> None:
        # Only a pair this process saw fail costs a write; the rest costs nothing.
        if (client_id, source) in self._failed:
            self._failed.discard((client_id, source))
            await self._store.clear_auth_failures(client_id, source)

    async def refresh(self) -> None:
        """Learn the blocks other workers and hosts recorded."""
        self._blocked = await self._store.blocked(time.time())
