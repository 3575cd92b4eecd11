"""Client secrets: generated with 256 bits of entropy, stored as keyed SHA-256 (HMAC).

A generated secret already has full entropy, so a slow password hash would add nothing but
latency on every token request; the server key keeps a stolen database from being replayed as
a list of secrets. Comparison is constant-time (``hmac.compare_digest``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable

__all__ = ["generate_secret", "hash_secret", "secret_matches"]


def generate_secret() -> str:
    """A new client secret: 32 random bytes, base64url (43 characters)."""
    return secrets.token_urlsafe(32)


def hash_secret(key: bytes, secret: str) -> str:
    """The at-rest form of ``secret``: hex HMAC-SHA-256 under the server key."""
    return hmac.new(key, secret.encode("utf-8"), hashlib.sha256).hexdigest()


def secret_matches(key: bytes, secret: str, stored_hashes: Iterable[str]) -> bool:
    """Whether ``secret`` matches any stored hash; every candidate is compared in full."""
    candidate = hash_secret(key, secret)
    matched = False
    for stored in stored_hashes:
        matched |= hmac.compare_digest(candidate, stored)
    return matched
