"""Client secrets: generated with 256 bits of entropy, stored as keyed SHA-256 (HMAC).

A generated secret already has full entropy, so a slow password hash would add nothing but
latency on every token request; the server key keeps a stolen database from being replayed as
a list of secrets. Comparison is constant-time (``hmac.compare_digest``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
from collections.abc import Iterable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = ["generate_secret", "hash_secret", "matching_hash", "seal_secret", "unseal_secret"]


def generate_secret() -> str:
    """A new client secret: 32 random bytes, base64url (43 characters)."""
    return secrets.token_urlsafe(32)


def hash_secret(key: bytes, secret: str) -> str:
    """The at-rest form of ``secret``: hex HMAC-SHA-256 under the server key."""
    return hmac.new(key, secret.encode("utf-8"), hashlib.sha256).hexdigest()


def matching_hash(key: bytes, secret: str, stored_hashes: Iterable[str]) -> str | None:
    """The stored hash ``secret`` matches, or None; every candidate is compared in full."""
    candidate = hash_secret(key, secret)
    matched = None
    for stored in stored_hashes:
        if hmac.compare_digest(candidate, stored):
            matched = stored
    return matched


def _sealing_key(key: bytes) -> AESGCM:
    derived = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"mtlsauth client secret sealing"
    ).derive(key)
    return AESGCM(derived)


def seal_secret(key: bytes, secret: str, client_id: str) -> str:
    """AES-GCM-seal a secret the server must be able to read back (client_secret_jwt's HMAC
    key), bound to its client_id; the key is derived from the server key with HKDF."""
    nonce = os.urandom(12)
    sealed = _sealing_key(key).encrypt(nonce, secret.encode(), client_id.encode())
    return base64.b64encode(nonce + sealed).decode()


def unseal_secret(key: bytes, sealed: str, client_id: str) -> str:
    """The sealed secret; ValueError if it was tampered with or sealed for another client."""
    try:
        raw = base64.b64decode(sealed, validate=True)
        return _sealing_key(key).decrypt(raw[:12], raw[12:], client_id.encode()).decode()
    except (binascii.Error, InvalidTag, UnicodeDecodeError) as exc:
        raise ValueError("a sealed secret does not open") from exc
