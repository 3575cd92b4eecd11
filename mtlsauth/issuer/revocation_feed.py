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
from typing import Any, Final

from mtlsauth.issuer.store import Store
from mtlsauth.issuer.store.base import CLIENT_REVOCATION_PREFIX

__all__ = ["RevocationFeed", "RevocationSnapshot"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RevocationSnapshot:
    body: bytes
    etag: str
    built_at: float


#: A client with more revoked live tokens than this is published as one client entry (every
#: token of it issued up to its latest revocation): no client can grow the list that every
#: resource server polls beyond this many entries (a list too large for them would stop all
#: revocations from reaching them). Past it, the client's other live tokens are cut too.
MAX_TOKENS_PER_CLIENT: Final = 20


def _entries(rows: list[tuple[str, str, float, float]]) -> dict[str, list[dict[str, Any]]]:
    """The ``tokens`` and ``clients`` members: client entries as stored, token ids per client
    up to MAX_TOKENS_PER_CLIENT, beyond that one client entry instead."""
    clients: dict[str, dict[str, Any]] = {}
    by_client: dict[str, list[tuple[str, float, float]]] = {}
    for jti, client_id, exp, at in rows:
        if jti.startswith(CLIENT_REVOCATION_PREFIX):
            clients[client_id] = {"client_id": client_id, "revoked_at": at, "until": exp}
        else:
            by_client.setdefault(client_id, []).append((jti, exp, at))
    tokens: list[dict[str, Any]] = []
    for client_id, revoked in by_client.items():
        if len(revoked) <= MAX_TOKENS_PER_CLIENT:
            tokens += [{"jti": jti, "exp": exp} for jti, exp, _ in revoked]
            continue
        cut = {
            "client_id": client_id,
            "revoked_at": max(at for _, _, at in revoked),
            "until": max(exp for _, exp, _ in revoked),
        }
        known = clients.get(client_id)
        if known is not None:
            cut = {
                "client_id": client_id,
                "revoked_at": max(cut["revoked_at"], known["revoked_at"]),
                "until": max(cut["until"], known["until"]),
            }
        clients[client_id] = cut
    tokens.sort(key=lambda t: str(t["jti"]))
    return {"tokens": tokens, "clients": sorted(clients.values(), key=lambda c: c["client_id"])}


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
            document = {
                "issuer": self._issuer,
                **_entries(rows),
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
