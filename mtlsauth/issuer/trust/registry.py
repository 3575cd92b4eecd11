"""The external trust anchors in memory, reloaded when the store reports a change.

Like the client registry, the hot path never touches the database: the refresh loop asks the
store's change marker and reloads the anchors when it moved, then hands their roots to the TLS
layer, which builds new contexts (so ``trust add`` reaches a running server without a restart).
A SPIFFE bundle that changes (:mod:`.bundles`) goes the same way, within a refresh.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from mtlsauth.issuer.store import Store
from mtlsauth.issuer.trust.anchors import TrustAnchor
from mtlsauth.issuer.trust.bundles import BundleRefresher
from mtlsauth.issuer.trust.verifier import TrustSet

__all__ = ["AnchorRegistry"]

log = logging.getLogger(__name__)


class AnchorRegistry:
    """Keeps ``trust`` equal to the store's anchors — with the X.509 authorities of their
    SPIFFE bundles in place of the bootstrap ``--ca`` roots, once fetched — and calls
    ``on_roots`` after each change."""

    def __init__(
        self,
        store: Store,
        trust: TrustSet,
        on_roots: Callable[[frozenset[bytes]], None],
        bundles: BundleRefresher | None = None,
    ) -> None:
        self._store = store
        self.trust = trust
        self._on_roots = on_roots
        self.bundles = bundles
        self._stored: list[TrustAnchor] = []
        self._marker: object = object()
        if bundles is not None:
            bundles.on_change = self.apply

    async def refresh(self) -> bool:
        """Reload if the store changed since the last look; True when it reloaded."""
        marker = await self._store.change_marker()
        if marker == self._marker:
            return False
        anchors = await self._store.list_trust_anchors()
        changed = anchors != self._stored
        if self.bundles is not None:
            changed = await self.bundles.sync(anchors) or changed
        if changed:
            self._stored = anchors
            self.apply()
            log.info("trust anchors loaded: %d external anchor(s)", len(anchors))
        self._marker = marker
        return True

    def _effective(self, anchor: TrustAnchor) -> TrustAnchor:
        authorities = self.bundles.authorities(anchor.name) if self.bundles else None
        return anchor if authorities is None else anchor.with_authorities(authorities)

    def apply(self) -> None:
        """Hand the anchors in force to the verifier and their roots to the TLS layer."""
        self.trust.replace([self._effective(a) for a in self._stored])
        self._on_roots(self.trust.root_ders())

    def tick(self) -> None:
        """Start the SPIFFE bundle fetches that are due (never waits for them)."""
        if self.bundles is not None:
            self.bundles.tick()
