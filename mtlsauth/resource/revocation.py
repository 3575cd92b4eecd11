"""Revocation that reaches resource servers: the issuer's list of revoked, unexpired token ids.

RFC 7009 revocation happens at the issuer, but an access token is a self-contained JWT
(RFC 9068), so a resource server would accept a revoked token until it expires. The issuer
publishes ``GET <issuer>/revoked`` (``{"issuer", "tokens": [{"jti", "exp"}], "clients":
[{"client_id", "revoked_at", "until"}], "certificates": ["x5t#S256", ...]}``: revoked tokens,
removed clients whose tokens issued up to ``revoked_at`` are all revoked, and revoked client
certificates, whose bound tokens are); this polls it every ``interval`` seconds with
``If-None-Match`` and answers :meth:`RevocationList.refuses` with two lookups, so the
verifier's repeated-token path stays a dictionary lookup.

When the issuer cannot be reached the last list keeps serving (logged): tokens are verified
offline by design, and the list only ever adds refusals.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
from typing import Any, Final

import aiohttp

from mtlsauth.core.fetch import fetch_session

__all__ = ["PATH", "RevocationList", "RevocationListError"]

log = logging.getLogger(__name__)

PATH: Final = "/revoked"
#: 4 MiB holds some 50 000 revoked token ids; a larger answer is refused, the old list kept.
DEFAULT_MAX_BYTES: Final = 4 * 1024 * 1024


class RevocationListError(Exception):
    """The list could not be fetched or understood (log only)."""


def _clients(entries: Any) -> dict[str, float]:
    if entries is None:
        return {}
    if not isinstance(entries, list):
        raise RevocationListError("clients is not an array")
    revoked: dict[str, float] = {}
    for entry in entries:
        client_id = entry.get("client_id") if isinstance(entry, dict) else None
        at = entry.get("revoked_at") if isinstance(entry, dict) else None
        if not isinstance(client_id, str) or not isinstance(at, int | float):
            raise RevocationListError("a client entry without client_id and revoked_at")
        revoked[client_id] = float(at)
    return revoked


def _certificates(entries: Any) -> frozenset[str]:
    if entries is None:
        return frozenset()
    if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
        raise RevocationListError("certificates is not an array of thumbprints")
    return frozenset(str(e) for e in entries)


def _parse(body: bytes, issuer: str) -> tuple[frozenset[str], dict[str, float], frozenset[str]]:
    try:
        data: Any = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise RevocationListError(f"not JSON: {type(exc).__name__}") from exc
    if not isinstance(data, dict) or data.get("issuer") != issuer:
        raise RevocationListError("the list names another issuer")
    tokens = data.get("tokens")
    if not isinstance(tokens, list):
        raise RevocationListError("no tokens array")
    jtis = [t["jti"] for t in tokens if isinstance(t, dict) and isinstance(t.get("jti"), str)]
    if len(jtis) != len(tokens):
        raise RevocationListError("a token entry without a string jti")
    return (
        frozenset(str(j) for j in jtis),
        _clients(data.get("clients")),
        _certificates(data.get("certificates")),
    )


class RevocationList:
    """The revoked token ids of one issuer, kept fresh by a background poll."""

    def __init__(
        self,
        *,
        issuer: str,
        ssl_context: ssl.SSLContext,
        interval: float = 5.0,
        timeout: float = 5.0,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self.interval = interval
        self._ctx = ssl_context
        self._timeout = timeout
        self._max_bytes = max_bytes
        self._revoked: frozenset[str] = frozenset()
        self._clients: dict[str, float] = {}
        self._certificates: frozenset[str] = frozenset()
        self._etag: str | None = None
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        #: Successful fetches (200 or 304) so far.
        self.fetches = 0

    def refuses(self, jti: str, client_id: str, iat: float, bound_to: str | None = None) -> bool:
        """Whether the issuer revoked the token ``jti``, ``client_id`` after ``iat``, or the
        certificate the token is bound to (``x5t#S256``); starts the poll on first use inside
        a loop."""
        if self._task is None:
            self.start()
        if jti in self._revoked or (bound_to is not None and bound_to in self._certificates):
            return True
        revoked_at = self._clients.get(client_id)
        return revoked_at is not None and iat <= revoked_at

    def start(self) -> None:
        """Poll in the background (idempotent; needs a running event loop)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._poll_forever())

    async def refresh(self) -> None:
        """Fetch the list once (conditional on the last ETag); RevocationListError on failure."""
        if self._session is None:
            self._session = fetch_session(self._timeout)
        headers = {"If-None-Match": self._etag} if self._etag else {}
        url = self.issuer + PATH
        if not url.startswith("https://"):
            raise RevocationListError(f"{url} is not an https URL")
        try:
            async with self._session.get(
                url, ssl=self._ctx, headers=headers, allow_redirects=False
            ) as resp:
                if resp.status == 304:
                    self.fetches += 1
                    return
                if resp.status != 200:
                    raise RevocationListError(f"{url} answered {resp.status}")
                body = await self._read(resp)
                etag = resp.headers.get("ETag")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise RevocationListError(f"{url}: {type(exc).__name__}: {exc}") from exc
        self._revoked, self._clients, self._certificates = _parse(body, self.issuer)
        self._etag = etag
        self.fetches += 1

    async def _read(self, resp: aiohttp.ClientResponse) -> bytes:
        if resp.content_length is not None and resp.content_length > self._max_bytes:
            raise RevocationListError(f"the list is {resp.content_length} bytes")
        body = bytearray()
        async for chunk in resp.content.iter_any():
            body += chunk
            if len(body) > self._max_bytes:
                raise RevocationListError(f"the list is over {self._max_bytes} bytes")
        return bytes(body)

    async def _poll_forever(self) -> None:
        failing = False
        while True:
            try:
                await self.refresh()
                if failing:
                    log.warning("revocation list of %s refreshed again", self.issuer)
                failing = False
            except RevocationListError as exc:
                # Once per outage at WARNING, not once per poll.
                log.log(logging.DEBUG if failing else logging.WARNING,
                        "revocation list of %s not refreshed; keeping the last: %s",
                        self.issuer, exc)  # fmt: skip
                failing = True
            except Exception:
                # The poll must outlive any one failure, or revocations would stop arriving.
                log.exception("revocation list of %s: unexpected failure", self.issuer)
            await asyncio.sleep(self.interval)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None
