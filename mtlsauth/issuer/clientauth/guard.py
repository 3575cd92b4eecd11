"""Client authentication as every endpoint needs it: throttled, audited, measured.

Token, introspection and revocation endpoints all authenticate clients the same way; this is
that way.

Decision D7: an attacker without a client's credentials must not be able to deny it service.
A client registered for a credential that cannot be guessed — a TLS client certificate
(RFC 8705 §2) or an asymmetric assertion (private_key_jwt or federated_jwt, RFC 7523 §2.2) —
is never refused before it is authenticated: it is served if it authenticates, and only a
failure counts and can earn a 429. Secret-based methods are checked against the throttle
first, per (client_id, source), since guessing is exactly what the throttle slows down.

Secret last-use times are kept in memory and written to the store in batches, off
the request path.
"""

from __future__ import annotations

import time
from typing import Final

from mtlsauth.core.errors import InvalidClient
from mtlsauth.issuer.audit import Audit
from mtlsauth.issuer.clientauth import (
    AuthContext,
    Authenticated,
    AuthRequest,
    authenticate,
    claimed_client_id,
)
from mtlsauth.issuer.metrics import Metrics
from mtlsauth.issuer.model import AuthMethod
from mtlsauth.issuer.registry import ClientRegistry
from mtlsauth.issuer.store import Store
from mtlsauth.issuer.throttle import Throttle

__all__ = ["UNGUESSABLE_METHODS", "ClientGuard"]

#: Methods whose credential an attacker cannot guess, so throttling them protects nothing.
UNGUESSABLE_METHODS: Final[frozenset[AuthMethod]] = frozenset(
    {
        "tls_client_auth",
        "self_signed_tls_client_auth",
        "spiffe_x509",
        "private_key_jwt",
        "federated_jwt",
        "spiffe_jwt",
    }
)


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
        claimed = claimed_client_id(credentials)
        client = self.registry.get(claimed) if claimed else None
        # An unregistered client_id is counted under one key per source, never its own.
        key = self.throttle.key(client.client_id if client else None, source)
        unguessable = client is not None and client.auth_method in UNGUESSABLE_METHODS
        if not unguessable:
            self.throttle.check(key)
        try:
            result = await authenticate(credentials, self.registry, self.context)
        except InvalidClient as exc:
            self.metrics.auth_failure(exc.reason)
            self.audit.tally(
                "auth.failed", client_id=key[0] or None, reason=exc.reason, source=key[1]
            )
            if unguessable:
                self.throttle.check(key)  # failed again while blocked: 429, as for secrets
            await self.throttle.failed(key)
            raise
        await self.throttle.succeeded(key)
        if result.secret_hash is not None:
            self._used[(result.client.client_id, result.secret_hash)] = time.time()
        return result

    async def flush_usage(self, store: Store) -> None:
        """Write the collected secret last-use times (called from the background loop)."""
        used, self._used = self._used, {}
        await store.touch_secrets((cid, h, at) for (cid, h), at in used.items())
