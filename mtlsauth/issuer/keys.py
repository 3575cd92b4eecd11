"""Signing keys: generation, the key id (RFC 7638 JWK thumbprint) and the public JWKS.

The access-token signature is ES256 (ECDSA P-256 with SHA-256, RFC 7518 §3.4; the algorithm
of :mod:`mtlsauth.core.access_token`): the raw
``r || s`` signature is produced by cryptography; nothing here implements crypto itself.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from mtlsauth.core.access_token import ALGORITHM
from mtlsauth.core.thumbprint import b64url
from pki import write_private

__all__ = [
    "KeyEntry",
    "KeyRing",
    "SigningKey",
    "SigningKeyError",
    "generate_signing_key",
    "jwks",
]

_ES256: Final = ec.ECDSA(hashes.SHA256())
_P256_BYTES: Final = 32


class SigningKeyError(Exception):
    """A signing key is missing, unreadable or of the wrong type."""


@dataclass(frozen=True, slots=True)
class SigningKey:
    """An ES256 private key with its key id."""

    private_key: ec.EllipticCurvePrivateKey
    kid: str

    @classmethod
    def from_private_key(cls, key: ec.EllipticCurvePrivateKey) -> SigningKey:
        if not isinstance(key.curve, ec.SECP256R1):
            raise SigningKeyError("the signing key must be an EC P-256 key for ES256")
        return cls(private_key=key, kid=_jwk_thumbprint(_public_jwk_members(key)))

    @classmethod
    def load(cls, path: Path) -> SigningKey:
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (OSError, ValueError) as exc:
            raise SigningKeyError(f"cannot read the signing key {path}: {exc}") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise SigningKeyError(f"the signing key {path} is not an EC key")
        return cls.from_private_key(key)

    def public_jwk(self) -> dict[str, str]:
        """RFC 7517 public JWK with use, alg and kid; never any private member."""
        return {
            **_public_jwk_members(self.private_key),
            "use": "sig",
            "alg": ALGORITHM,
            "kid": self.kid,
        }

    def sign(self, signing_input: bytes) -> bytes:
        """The JWS ES256 signature of ``signing_input``: fixed-width r || s (RFC 7518 §3.4)."""
        der = self.private_key.sign(signing_input, _ES256)
        r, s = decode_dss_signature(der)
        return r.to_bytes(_P256_BYTES, "big") + s.to_bytes(_P256_BYTES, "big")

    def __repr__(self) -> str:
        return f"SigningKey(kid={self.kid!r}, alg={ALGORITHM!r})"


def _public_jwk_members(key: ec.EllipticCurvePrivateKey) -> dict[str, str]:
    numbers = key.public_key().public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": b64url(numbers.x.to_bytes(_P256_BYTES, "big")),
        "y": b64url(numbers.y.to_bytes(_P256_BYTES, "big")),
    }


def _jwk_thumbprint(members: dict[str, str]) -> str:
    """RFC 7638 §3: SHA-256 over the required members, sorted, without white space."""
    digest = hashes.Hash(hashes.SHA256())
    digest.update(json.dumps(members, sort_keys=True, separators=(",", ":")).encode())
    return b64url(digest.finalize())


def generate_signing_key(path: Path, key: ec.EllipticCurvePrivateKey | None = None) -> SigningKey:
    """Write a new (or the given) ES256 key to ``path`` (0600)."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    write_private(
        path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    return SigningKey.from_private_key(key)


def jwks(keys: list[SigningKey]) -> dict[str, Any]:
    """The public JWK Set (RFC 7517 §5) of ``keys``."""
    return {"keys": [k.public_jwk() for k in keys]}


# --- rotation ------------------------------------------------------------------------------

MANIFEST = "keys.json"
KeyState = Literal["next", "active", "retired"]


@dataclass(frozen=True, slots=True)
class KeyEntry:
    kid: str
    file: str
    state: KeyState
    created_at: float
    activated_at: float | None = None
    retired_at: float | None = None


class KeyRing:
    """The signing keys of a home and their phases (``keys/keys.json``).

    * ``next``: published in the JWKS, not yet signing — resource servers learn it early;
    * ``active``: signs every new token;
    * ``retired``: published until every token it signed has expired, then dropped.
    """

    def __init__(self, directory: Path, entries: list[KeyEntry], keys: dict[str, SigningKey]):
        self.directory = directory
        self.entries = entries
        self._keys = keys

    @classmethod
    def load(cls, directory: Path, fallback: Path) -> KeyRing:
        """Read the manifest; a home without one has just its single ``fallback`` key."""
        manifest = directory / MANIFEST
        if not manifest.exists():
            key = SigningKey.load(fallback)
            now = fallback.stat().st_mtime
            entry = KeyEntry(key.kid, fallback.name, "active", now, now)
            return cls(directory, [entry], {key.kid: key})
        try:
            raw = json.loads(manifest.read_text())
            entries = [KeyEntry(**item) for item in raw["keys"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SigningKeyError(f"{manifest} is not a valid key manifest: {exc}") from exc
        keys = {e.kid: SigningKey.load(directory / e.file) for e in entries}
        for entry in entries:
            if keys[entry.kid].kid != entry.kid:
                raise SigningKeyError(f"{entry.file} does not hold key {entry.kid}")
        if sum(e.state == "active" for e in entries) != 1:
            raise SigningKeyError(f"{manifest} must name exactly one active key")
        return cls(directory, entries, keys)

    @property
    def active(self) -> SigningKey:
        entry = next(e for e in self.entries if e.state == "active")
        return self._keys[entry.kid]

    def published(self, now: float, retire_after: float) -> list[SigningKey]:
        """Active first, then next, then retired keys whose tokens may still be alive."""
        order = {"active": 0, "next": 1, "retired": 2}
        visible = [
            e
            for e in self.entries
            if e.state != "retired" or (e.retired_at or 0) + retire_after > now
        ]
        return [self._keys[e.kid] for e in sorted(visible, key=lambda e: order[e.state])]

    def _save(self) -> None:
        data = {"keys": [dataclasses.asdict(e) for e in self.entries]}
        tmp = self.directory / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, self.directory / MANIFEST)

    def _new_next(self, now: float) -> KeyEntry:
        key = ec.generate_private_key(ec.SECP256R1())
        signing = SigningKey.from_private_key(key)
        name = f"key-{signing.kid[:16]}.pem"
        generate_signing_key(self.directory / name, key)
        self._keys[signing.kid] = signing
        return KeyEntry(signing.kid, name, "next", now)

    def ensure_next(self, now: float) -> KeyEntry:
        """Make sure a next key is published (init, and homes from before rotation)."""
        found = next((e for e in self.entries if e.state == "next"), None)
        if found is None:
            found = self._new_next(now)
            self.entries.append(found)
            self._save()
        return found

    def rotate(self, now: float, retire_after: float) -> tuple[KeyEntry, KeyEntry]:
        """next → active, active → retired, a new next; keys retired long enough are removed.

        Returns (the new active entry, the new next entry).
        """
        self.ensure_next(now)
        updated: list[KeyEntry] = []
        for entry in self.entries:
            if entry.state == "active":
                updated.append(dataclasses.replace(entry, state="retired", retired_at=now))
            elif entry.state == "next":
                updated.append(dataclasses.replace(entry, state="active", activated_at=now))
            elif (entry.retired_at or 0) + retire_after > now:
                updated.append(entry)
            else:
                (self.directory / entry.file).unlink(missing_ok=True)
                self._keys.pop(entry.kid, None)
        fresh = self._new_next(now)
        updated.append(fresh)
        self.entries = updated
        self._save()
        active = next(e for e in updated if e.state == "active")
        return active, fresh
