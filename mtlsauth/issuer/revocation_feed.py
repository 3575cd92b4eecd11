"""The published revocation list: the ids of revoked access tokens (RFC 7009) that have not
expired yet, and the clients removed while tokens of theirs may still be alive, for resource
servers to poll (``GET /revoked``).

Tokens are self-contained JWTs, so ``POST /revoke`` alone reaches nobody but the issuer; a
resource server's verifier fetches this list every few seconds (with ``If-None-Match``) and
refuses the tokens it names. The document is rebuilt from the store at most every
``max_age`` seconds however many pollers ask, so polling costs no query per request.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass

from mtlsauth.issuer.store import Store
from mtlsauth.issuer.store.base import CLIENT_REVOCATION_PREFIX

__all__ = ["RevocationFeed", "RevocationSnapshot"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RevocationSnapshot:
    body: bytes
    etag: str
    built_at: float


class RevocationFeed:
    """``{"issuer": ..., "tokens": [{"jti", "exp"}, ...], "clients": [{"client_id",
    "revoked_at", "until"}, ...]}`` and its ETag. A client entry revokes every token of that
    client issued (``iat``) at or before ``revoked_at``: a client registered again later under
    the same id gets working tokens. ``"certificates"``: the ``x5t#S256`` of revoked client
    certificates (``revoked_certificates``), whose bound tokens are refused."""

    def __init__(
        self,
        store: Store,
        issuer: str,
        *,
        max_age: float = 1.0,
        revoked_certificates: Callable[[], list[str]] | None = None,
    ) -> None:
        self._store = store
        self._issuer = issuer
        self._max_age = max_age
        self._revoked_certificates = revoked_certificates
        self._certificates: list[str] = []
        self._lock = asyncio.Lock()
        self._snapshot: RevocationSnapshot | None = None

    def _fresh(self) -> RevocationSnapshot | None:
        snap = self._snapshot
        if snap is not None and time.monotonic() - snap.built_at < self._max_age:
            return snap
        return None

    async def current(self) -> RevocationSnapshot:
        """The list as of at most ``max_age`` seconds ago (one store query for all waiters)."""
        if (snap := self._fresh()) is not None:
            return snap
        async with self._lock:
            if (snap := self._fresh()) is not None:
                return snap
            rows = await self._store.revoked_tokens(time.time())
            tokens = [{"jti": j, "exp": e} for j, e, _ in rows]
            clients = [
                {
                    "client_id": j.removeprefix(CLIENT_REVOCATION_PREFIX),
                    "revoked_at": at,
                    "until": e,
                }
                for j, e, at in rows
                if j.startswith(CLIENT_REVOCATION_PREFIX)
            ]
            tokens = [t for t in tokens if not str(t["jti"]).startswith(CLIENT_REVOCATION_PREFIX)]
            document = {
                "issuer": self._issuer,
                "tokens": tokens,
                "clients": clients,
                "certificates": await self._certificates_now(),
            }
            body = json.dumps(document, separators=(",", ":")).encode()
            digest = base64.urlsafe_b64encode(hashlib.sha256(body).digest()).rstrip(b"=")
            self._snapshot = RevocationSnapshot(body, f'"{digest.decode()}"', time.monotonic())
            return self._snapshot

    async def _certificates_now(self) -> list[str]:
        if self._revoked_certificates is not None:
            try:
                self._certificates = await asyncio.to_thread(self._revoked_certificates)
            except (OSError, sqlite3.Error) as exc:
                # The last list is still true: a revocation is never undone.
                log.warning("cannot read the revoked certificates; keeping the last: %s", exc)
        return self._certificates
