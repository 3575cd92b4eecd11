"""Client authentication as every endpoint needs it: throttled, audited, measured.

Token, introspection and revocation endpoints all authenticate clients the same way; this is
that way. Secret last-use times are kept in memory and written to the store in batches, off
the request path.
"""

from __future__ import annotations

import time

from mtlsauth.audit import Audit
from mtlsauth.clientauth import (
    AuthContext,
    Authenticated,
    AuthRequest,
    authenticate,
    claimed_client_id,
)
from mtlsauth.clients import ClientRegistry
from mtlsauth.errors import InvalidClient
from mtlsauth.metrics import Metrics
from mtlsauth.store import Store
from mtlsauth.throttle import Throttle

__all__ = ["ClientGuard"]


class ClientGuard:
    def __init__(
        self,
        *,
        registry: ClientRegistry,
        context: AuthContext,
        throttle: Throttle,
        audit: Audit,
        metrics: Metrics,
    ) -> None:
        self.registry = registry
        self.context = context
        self.throttle = throttle
        self.audit = audit
        self.metrics = metrics
        self._used: dict[tuple[str, str], float] = {}

    async def authenticate(self, credentials: AuthRequest, source: str) -> Authenticated:
        """The authenticated client; InvalidClient (counted, audited, throttled) otherwise."""
        claimed = (claimed_client_id(credentials) or "")[:200]
        self.throttle.check(claimed, source)
        try:
            result = await authenticate(credentials, self.registry, self.context)
        except InvalidClient as exc:
            self.metrics.auth_failure(exc.reason)
            self.audit.event(
                "auth.failed", client_id=claimed or None, reason=exc.reason, source=source
            )
            await self.throttle.failed(claimed, source)
            raise
        await self.throttle.succeeded(claimed, source)
        if result.secret_hash is not None:
            self._used[(result.client.client_id, result.secret_hash)] = time.time()
        return result

    async def flush_usage(self, store: Store) -> None:
        """Write the collected secret last-use times (called from the background loop)."""
        used, self._used = self._used, {}
        await store.touch_secrets((cid, h, at) for (cid, h), at in used.items())
