"""SPIFFE bundle endpoints (SPIFFE Federation §5, https_web profile), polled in the background.

* Fetching: :meth:`BundleRefresher.tick` (the refresh loop calls it every ``reload_interval``)
  starts at most one fetch per anchor (single flight) when it is due; a request never fetches
  nor waits for a fetch, so a dead endpoint cannot stall token issuance. Every fetch goes
  through :mod:`mtlsauth.core.fetch` (https, no redirects, ``MAX_BUNDLE_BYTES``, total
  timeout); the endpoint's certificate is verified against the system CAs plus
  ``jwks_uri_cafile`` (Web PKI: the https_web profile, which the OAuth SPIFFE client
  authentication draft §5.1 requires).
* When: every ``spiffe_refresh_hint`` seconds (§4.1.2 of SPIFFE Trust Domain and Bundle),
  clamped to [``spiffe_bundle_min_refresh``, ``MAX_REFRESH``] (``DEFAULT_REFRESH`` without a
  hint); after a failure sooner, doubling from the minimum up to the interval (back-off).
* Sequence (§4.1.1): a bundle whose ``spiffe_sequence`` is lower than the one in force (or
  absent, once one is in force) is refused and logged; the one in force stays, and the
  refusal does not count as a refresh.
  The store keeps the bundle in force per anchor (:meth:`Store.save_spiffe_bundle` refuses a
  lower sequence atomically), so the floor holds across workers, hosts and restarts, and a
  restarted worker starts from the stored bundle.
* Staleness budget: when the last successful refresh (never fetched: the anchor's
  registration, whatever restarts came since) is older than the refresh interval plus the
  anchor's ``max_stale``, :meth:`refusal` says why and every SVID of the domain (X.509 and
  JWT) is refused, until a refresh succeeds again.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp
from cryptography import x509

from mtlsauth.core.fetch import FetchError, fetch_bytes, fetch_session
from mtlsauth.issuer.store import Store, StoreError
from mtlsauth.issuer.store.base import StoredBundle
from mtlsauth.issuer.trust.anchors import TrustAnchor
from mtlsauth.issuer.trust.bundle import (
    MAX_BUNDLE_BYTES,
    BundleError,
    SpiffeBundle,
    parse_spiffe_bundle,
)

__all__ = ["DEFAULT_REFRESH", "MAX_REFRESH", "BundleRefresher", "bundle_status"]

log = logging.getLogger(__name__)

#: Without a refresh hint: "a relatively low (e.g. five minutes)" interval (SPIFFE Trust Domain
#: and Bundle §6.2).
DEFAULT_REFRESH: Final = 300.0
#: A hint longer than this is clamped: revoked authorities must not linger for days.
MAX_REFRESH: Final = 3600.0


def refresh_interval(bundle: SpiffeBundle | None, minimum: float) -> float:
    """The bundle's refresh hint (or the default), clamped to [minimum, MAX_REFRESH]."""
    hint = bundle.refresh_hint if bundle is not None and bundle.refresh_hint else DEFAULT_REFRESH
    return min(max(hint, minimum), max(MAX_REFRESH, minimum))


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="seconds")


def bundle_status(
    anchor: TrustAnchor, stored: StoredBundle | None, minimum: float, now: float | None = None
) -> dict[str, Any]:
    """What ``trust show/list --json`` report of an anchor's bundle, from the stored one."""
    now = time.time() if now is None else now
    bundle: SpiffeBundle | None = None
    if stored is not None:
        try:
            bundle = parse_spiffe_bundle(stored.document)
        except BundleError:
            bundle = None
    interval = refresh_interval(bundle, minimum)
    if stored is None:
        return {"url": anchor.spiffe_bundle_url, "fetched": False, "sequence": None,
                "last_refresh": None, "next_refresh": None, "stale": True}  # fmt: skip
    return {
        "url": anchor.spiffe_bundle_url,
        "fetched": True,
        "sequence": stored.sequence,
        "refresh_hint": bundle.refresh_hint if bundle else None,
        "x509_authorities": len(bundle.authorities) if bundle else 0,
        "jwt_keys": len(bundle.jwt_keys) if bundle else 0,
        "last_refresh": _iso(stored.refreshed_at),
        "next_refresh": _iso(stored.refreshed_at + interval),
        "stale": now - stored.refreshed_at > interval + anchor.max_stale,
    }


@dataclass(slots=True)
class _State:
    anchor: TrustAnchor
    bundle: SpiffeBundle | None = None
    #: Epoch seconds of the last successful refresh (or the anchor's registration, without one).
    refreshed_at: float = 0.0
    fetched: bool = False
    next_attempt: float = 0.0  # monotonic
    failures: int = 0
    stale_logged: bool = False
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class BundleRefresher:
    """The SPIFFE bundles of the anchors registered with ``--spiffe-bundle-url``."""

    def __init__(
        self,
        store: Store,
        *,
        ssl_context: ssl.SSLContext,
        timeout: float,
        min_refresh: float,
    ) -> None:
        self._store = store
        self._ssl = ssl_context
        self._timeout = timeout
        self._min = min_refresh
        self._states: dict[str, _State] = {}
        self._session: aiohttp.ClientSession | None = None
        #: Called when the bundles in force change (the anchor registry rebuilds trust).
        self.on_change: Callable[[], None] = lambda: None
        #: Fetches made so far (for tests).
        self.fetches = 0

    async def close(self) -> None:
        tasks = [s.task for s in self._states.values() if s.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- which anchors ------------------------------------------------------------------------

    async def sync(self, anchors: Iterable[TrustAnchor]) -> bool:
        """Follow the registered anchors (new ones start from their stored bundle); True when
        the set of bundles in force changed."""
        wanted = {a.name: a for a in anchors if a.spiffe_bundle_url is not None}
        changed = False
        for name, state in list(self._states.items()):
            if wanted.get(name) != state.anchor:
                if state.task is not None:
                    state.task.cancel()
                del self._states[name]
                changed = True
        new = [name for name in wanted if name not in self._states]
        stored = await self._store.spiffe_bundles() if new else {}
        for name in new:
            # Never fetched: the budget counts from the anchor's registration, not from this
            # process's start, so a restart never extends trust in the bootstrap --ca.
            anchor = wanted[name]
            state = _State(anchor=anchor, refreshed_at=anchor.created_at or time.time())
            row = stored.get(name)
            if row is not None:
                try:
                    state.bundle = parse_spiffe_bundle(row.document)
                    state.refreshed_at, state.fetched = row.refreshed_at, True
                except BundleError as exc:
                    log.error("the stored SPIFFE bundle of %r is unreadable: %s", name, exc)
            self._states[name] = state
            changed = True
        return changed

    # -- what is in force ---------------------------------------------------------------------

    def authorities(self, name: str) -> tuple[x509.Certificate, ...] | None:
        """The X.509 authorities of anchor ``name``'s bundle; None before any was fetched."""
        state = self._states.get(name)
        return state.bundle.authorities if state is not None and state.bundle else None

    def jwt_keys(self, name: str) -> tuple[dict[str, Any], ...]:
        state = self._states.get(name)
        return state.bundle.jwt_keys if state is not None and state.bundle else ()

    def refusal(self, name: str) -> str | None:
        """Why every SVID of anchor ``name``'s trust domain is refused now, or None."""
        state = self._states.get(name)
        if state is None:
            return None
        age = time.time() - state.refreshed_at
        budget = refresh_interval(state.bundle, self._min) + state.anchor.max_stale
        if age <= budget:
            return None
        what = "refreshed" if state.fetched else "fetched"
        return (
            f"the SPIFFE bundle of trust anchor {name!r} could not be {what} from "
            f"{state.anchor.spiffe_bundle_url} for {age:.0f} s (budget {budget:.0f} s: the "
            f"refresh interval plus --max-stale {state.anchor.max_stale})"
        )

    # -- fetching ------------------------------------------------------------------------------

    def tick(self) -> None:
        """Start the fetches that are due (at most one per anchor); log staleness changes."""
        now = time.monotonic()
        for name, state in self._states.items():
            if state.task is None and now >= state.next_attempt:
                state.task = asyncio.create_task(self._refresh(name, state))
            refusal = self.refusal(name)
            if refusal is not None and not state.stale_logged:
                log.error("%s: its SVIDs are refused until it answers", refusal)
                state.stale_logged = True
            elif refusal is None and state.stale_logged:
                log.warning("the SPIFFE bundle of trust anchor %r is fresh again", name)
                state.stale_logged = False

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            # The endpoint is the operator's configuration: no address policy.
            self._session = fetch_session(self._timeout, max_connections=8)
        return self._session

    def _failed(self, name: str, state: _State, reason: str) -> None:
        state.failures += 1
        interval = refresh_interval(state.bundle, self._min)
        backoff = min(self._min * 2 ** min(state.failures - 1, 20), interval)
        state.next_attempt = time.monotonic() + backoff
        log.warning(
            "SPIFFE bundle of trust anchor %r not refreshed (retry in %.0f s): %s",
            name, backoff, reason,
        )  # fmt: skip

    async def _refresh(self, name: str, state: _State) -> None:
        try:
            await self._fetch(name, state)
        except Exception:  # the loop must go on whatever one fetch does
            log.exception("SPIFFE bundle refresh of %r failed unexpectedly", name)
            self._failed(name, state, "unexpected error")
        finally:
            state.task = None

    async def _fetch(self, name: str, state: _State) -> None:
        url = state.anchor.spiffe_bundle_url
        assert url is not None
        self.fetches += 1
        try:
            body = await fetch_bytes(
                self._http(), url, ssl_context=self._ssl, max_bytes=MAX_BUNDLE_BYTES
            )
            bundle = parse_spiffe_bundle(body)
        except (FetchError, BundleError) as exc:
            self._failed(name, state, str(exc))
            return
        current = state.bundle
        if _lower(bundle, current):
            assert current is not None
            log.error(
                "trust anchor %r: %s served spiffe_sequence %s, lower than the %s in force; "
                "kept the bundle in force (a sequence never goes back)",
                name, url, bundle.sequence, current.sequence,
            )  # fmt: skip
            self._failed(name, state, "lower spiffe_sequence")
            return
        refreshed_at = time.time()
        try:
            kept = await self._store.save_spiffe_bundle(
                name, bundle.sequence, bundle.document, refreshed_at
            )
        except StoreError as exc:
            log.warning("cannot store the SPIFFE bundle of %r (kept in memory): %s", name, exc)
        else:
            if kept.document != bundle.document:
                # Another worker or host already accepted a higher sequence.
                log.error(
                    "trust anchor %r: %s served spiffe_sequence %s, lower than the %s stored; "
                    "using the stored bundle",
                    name, url, bundle.sequence, kept.sequence,
                )  # fmt: skip
                try:
                    bundle = parse_spiffe_bundle(kept.document)
                except BundleError as exc:
                    self._failed(name, state, f"stored bundle unreadable: {exc}")
                    return
                refreshed_at = kept.refreshed_at
        changed = current is None or (
            bundle.authority_ders != current.authority_ders or bundle.jwt_keys != current.jwt_keys
        )
        state.bundle, state.refreshed_at, state.fetched = bundle, refreshed_at, True
        state.failures = 0
        state.next_attempt = time.monotonic() + refresh_interval(bundle, self._min)
        if changed:
            log.info(
                "SPIFFE bundle of trust anchor %r: sequence %s, %d X.509 authorit(ies), "
                "%d JWT key(s)",
                name, bundle.sequence, len(bundle.authorities), len(bundle.jwt_keys),
            )  # fmt: skip
            self.on_change()


def _lower(new: SpiffeBundle, current: SpiffeBundle | None) -> bool:
    """Whether ``new`` would take the sequence back: lower, or none once one is in force."""
    return (
        current is not None
        and current.sequence is not None
        and (new.sequence is None or new.sequence < current.sequence)
    )
