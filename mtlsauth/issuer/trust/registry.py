"""The external trust anchors in memory, reloaded when the store reports a change.

Like the client registry, the hot path never touches the database: the refresh loop asks the
store's change marker and reloads the anchors when it moved, then hands their roots to the TLS
layer, which builds new contexts (so ``trust add`` reaches a running server without a restart).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from mtlsauth.issuer.store import Store
from mtlsauth.issuer.trust.verifier import TrustSet

__all__ = ["AnchorRegistry"]

log = logging.getLogger(__name__)


class AnchorRegistry:
    """Keeps ``trust`` equal to the store's anchors; calls ``on_roots`` after each reload."""

    def __init__(
        self, store: Store, trust: TrustSet, on_roots: Callable[[frozenset[bytes]], None]
    ) -> None:
        self._store = store
        self.trust = trust
        self._on_roots = on_roots
        self._marker: object = object()

    async def refresh(self) -> bool:
        """Reload if the store changed since the last look; True when it reloaded."""
        marker = await self._store.change_marker()
        if marker == self._marker:
            return False
        anchors = await self._store.list_trust_anchors()
        if [a.name for a in anchors] != list(self.trust.all()) or any(
            self.trust.get(a.name) != a for a in anchors
        ):
            self.trust.replace(anchors)
            self._on_roots(self.trust.root_ders())
            log.info("trust anchors loaded: %d external anchor(s)", len(anchors))
        self._marker = marker
        return True
