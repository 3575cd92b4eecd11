"""Which external anchor a client's leaf chains to (RFC 5280 §6, RFC 8705 §2.1).

The TLS handshake already accepted the chain against every trust anchor of the server; Python's
ssl does not say which one it used. So after the handshake the leaf is verified again with
cryptography's X.509 verifier against one anchor at a time: a client registered with
``--trust NAME`` is authenticated only by a leaf that chains to NAME.

The path is built through the intermediates the client sent in its handshake (read from OpenSSL,
see :func:`mtlsauth.core.peer.sent_chain`) and those registered in the anchor's bundle. What a
client sends is only a path candidate: the path must still end at one of NAME's roots, with
every signature, validity period and CA constraint checked. A resumed TLS session carries the
leaf but not the chain, so the intermediates a leaf arrived with are remembered (bounded) for
its later, resumed connections.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.verification import (
    ClientVerifier,
    PolicyBuilder,
    Store,
    VerificationError,
)

from mtlsauth.issuer.trust.anchors import TrustAnchor

__all__ = ["TrustSet"]

log = logging.getLogger(__name__)

_CACHE_SIZE: Final = 4096


class TrustSet:
    """The registered anchors, swapped whole on reload."""

    def __init__(self, anchors: Iterable[TrustAnchor] = ()) -> None:
        self._anchors: Mapping[str, TrustAnchor] = {}
        self._stores: Mapping[str, Store] = {}
        # (anchor, leaf DER) → (chain, when the first certificate of it expires): a path
        # verification costs a few hundred µs, and a client reconnects with the same leaf.
        self._verified: dict[tuple[str, bytes], tuple[list[x509.Certificate], dt.datetime]] = {}
        # leaf DER → the intermediates of its last verified path. Not cleared on reload: they
        # are path candidates, not trust, and a resumed session cannot send them again.
        self._sent: dict[bytes, tuple[x509.Certificate, ...]] = {}
        #: Bumped on every reload, so verdicts remembered elsewhere can tell they are stale.
        self.generation = 0
        self.replace(anchors)

    def replace(self, anchors: Iterable[TrustAnchor]) -> None:
        by_name = {a.name: a for a in anchors}
        # An anchor without roots (a SPIFFE bundle not fetched yet) verifies nothing.
        self._stores = {name: Store(list(a.roots)) for name, a in by_name.items() if a.roots}
        self._anchors = by_name
        self._verified = {}
        self.generation += 1

    def get(self, name: str) -> TrustAnchor | None:
        return self._anchors.get(name)

    def all(self) -> Mapping[str, TrustAnchor]:
        return self._anchors

    def root_ders(self) -> frozenset[bytes]:
        """Every root of every anchor: the TLS layer's extra trust anchors."""
        return frozenset(der for a in self._anchors.values() for der in a.root_ders)

    def _verifier(self, name: str, now: dt.datetime) -> ClientVerifier | None:
        store = self._stores.get(name)
        if store is None:
            return None
        return PolicyBuilder().store(store).time(now).build_client_verifier()

    def chain(
        self, name: str, leaf: x509.Certificate, sent: Sequence[x509.Certificate] = ()
    ) -> list[x509.Certificate] | str:
        """The verified chain (leaf first, root last) of ``leaf`` up to anchor ``name``, or the
        reason it does not chain there (for the log). ``sent``: the CA certificates the client
        sent after the leaf (RFC 8446 §4.4.2), untrusted path candidates."""
        now = dt.datetime.now(dt.UTC)
        der = leaf.public_bytes(serialization.Encoding.DER)
        key = (name, der)
        known = self._verified.get(key)
        if known is not None and now <= known[1]:
            return known[0]
        anchor = self._anchors.get(name)
        verifier = self._verifier(name, now)
        if anchor is None:
            return f"no trust anchor {name!r} is registered"
        if verifier is None:
            return f"trust anchor {name!r} has no CA certificate (no SPIFFE bundle fetched yet)"
        if not sent:
            sent = self._sent.get(der, ())
        try:
            verified = verifier.verify(leaf, [*anchor.intermediates, *sent])
        except VerificationError as exc:
            return f"does not chain to trust anchor {name!r}: {exc}"
        chain = list(verified.chain)
        if sent:
            # Only the intermediates of a verified path are remembered: what a client sent
            # beside them never takes memory.
            if len(self._sent) >= _CACHE_SIZE:
                self._sent.clear()
            self._sent[der] = tuple(chain[1:-1])
        if len(self._verified) >= _CACHE_SIZE:
            self._verified.clear()
        self._verified[key] = (chain, min(c.not_valid_after_utc for c in chain))
        return chain
