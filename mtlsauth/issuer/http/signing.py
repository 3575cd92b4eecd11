"""The signing keys a running server uses and publishes (RFC 7517 §5 JWK Set), reloaded when
the key manifest changes (rotation)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from mtlsauth.issuer.keys import KeyRing, SigningKey, SigningKeyError, jwks

__all__ = ["SigningKeys"]

log = logging.getLogger(__name__)


class SigningKeys:
    """The key ring of a home; ``retire_after`` is how long a retired key stays published."""

    def __init__(self, directory: Path, fallback: Path, *, retire_after: float) -> None:
        self._directory = directory
        self._fallback = fallback
        self._retire_after = retire_after
        self._mtime = self._stat()
        self.ring = KeyRing.load(directory, fallback)
        self._jwks: tuple[float, bytes] | None = None

    def _stat(self) -> float:
        manifest = self._directory / "keys.json"
        return manifest.stat().st_mtime_ns if manifest.exists() else 0.0

    @property
    def active(self) -> SigningKey:
        return self.ring.active

    def published(self) -> list[SigningKey]:
        return self.ring.published(time.time(), self._retire_after)

    def jwks_bytes(self) -> bytes:
        """The JWK Set, re-rendered at most once a second (retired keys age out)."""
        now = time.monotonic()
        if self._jwks is None or now - self._jwks[0] > 1.0:
            self._jwks = (now, json.dumps(jwks(self.published())).encode())
        return self._jwks[1]

    def reload_if_changed(self) -> bool:
        """Reload when the manifest changed; True when a new ring (maybe a new active key) is
        in force. A manifest that does not load is logged and the old keys are kept."""
        mtime = self._stat()
        if mtime == self._mtime:
            return False
        self._mtime = mtime
        try:
            ring = KeyRing.load(self._directory, self._fallback)
        except (SigningKeyError, OSError) as exc:
            log.error(
                "the key manifest changed but cannot be loaded; keeping the old keys: %s", exc
            )
            return False
        self.ring = ring
        self._jwks = None
        log.info("signing keys reloaded: active kid %s", ring.active.kid)
        return True
