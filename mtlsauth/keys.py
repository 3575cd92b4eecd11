"""Signing keys: generation, the key id (RFC 7638 JWK thumbprint) and the public JWKS.

The access-token signature is ES256 (ECDSA P-256 with SHA-256, RFC 7518 §3.4): the raw
``r || s`` signature is produced by cryptography; nothing here implements crypto itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from mtlsauth.thumbprint import b64url
from pki import write_private

__all__ = ["SIGNING_ALG", "SigningKey", "SigningKeyError", "generate_signing_key", "jwks"]

SIGNING_ALG: Final = "ES256"
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
            "alg": SIGNING_ALG,
            "kid": self.kid,
        }

    def sign(self, signing_input: bytes) -> bytes:
        """The JWS ES256 signature of ``signing_input``: fixed-width r || s (RFC 7518 §3.4)."""
        der = self.private_key.sign(signing_input, ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return r.to_bytes(_P256_BYTES, "big") + s.to_bytes(_P256_BYTES, "big")

    def __repr__(self) -> str:
        return f"SigningKey(kid={self.kid!r}, alg={SIGNING_ALG!r})"


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


def generate_signing_key(path: Path) -> SigningKey:
    """Create a new ES256 key at ``path`` (0600)."""
    key = ec.generate_private_key(ec.SECP256R1())
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
