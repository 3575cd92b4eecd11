"""The SPIFFE bundle document (SPIFFE Trust Domain and Bundle §4): a JWK Set whose keys say
what they authenticate.

* ``use`` ``x509-svid`` (§4.2.2): an X.509 authority of the trust domain; ``x5c`` holds exactly
  one certificate, a CA certificate. Each authority is a trust anchor for the domain's
  X.509-SVIDs (X509-SVID §5.1), self-signed or not.
* ``use`` ``jwt-svid``: a key that signs the domain's JWT-SVIDs (JWT-SVID §6); ``kid`` is
  required.
* ``spiffe_sequence`` (§4.1.1): increases with every change; ``spiffe_refresh_hint`` (§4.1.2):
  how often the consumer should poll, in seconds.

A key of another (or no) ``use``, or of an unknown (or no) ``kty``, is ignored, as §4.1.3,
§4.2.1 and §4.2.2 say; a document that breaks a rule above is refused whole, so a
half-understood bundle never replaces a good one.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization

__all__ = ["MAX_BUNDLE_BYTES", "BundleError", "SpiffeBundle", "parse_spiffe_bundle"]

#: A bundle holds a handful of authorities and keys; this leaves room for dozens.
MAX_BUNDLE_BYTES: Final = 256 * 1024
_MAX_KEYS: Final = 64
#: The largest sequence the stores keep (SQLite INTEGER, PostgreSQL BIGINT: signed 64-bit).
_MAX_SEQUENCE: Final = 2**63 - 1
#: RFC 7518 §6.1 and RFC 8037 key types; a JWK of another kty is ignored (§4.2.1).
_KNOWN_KTY: Final = frozenset({"EC", "RSA", "OKP"})


class BundleError(ValueError):
    """A SPIFFE bundle document breaks the format; the message says where (log only)."""


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


@dataclass(frozen=True, slots=True)
class SpiffeBundle:
    """A parsed bundle; ``document`` is the JSON it came from (what is persisted)."""

    sequence: int | None
    refresh_hint: float | None
    authorities: tuple[x509.Certificate, ...] = field(compare=False)
    jwt_keys: tuple[dict[str, Any], ...] = field(compare=False)
    document: str = field(repr=False, default="")

    @property
    def authority_ders(self) -> frozenset[bytes]:
        return frozenset(c.public_bytes(serialization.Encoding.DER) for c in self.authorities)


def _authority(index: int, key: dict[str, Any]) -> x509.Certificate:
    chain = key.get("x5c")
    if not isinstance(chain, list) or len(chain) != 1 or not isinstance(chain[0], str):
        raise BundleError(f"keys[{index}]: an x509-svid key has exactly one x5c certificate")
    try:
        cert = x509.load_der_x509_certificate(base64.b64decode(chain[0], validate=True))
    except (ValueError, binascii.Error) as exc:
        raise BundleError(f"keys[{index}]: x5c is not a base64 DER certificate") from exc
    if not _is_ca(cert):
        raise BundleError(f"keys[{index}]: the x509-svid authority is not a CA certificate")
    return cert


def _jwt_key(index: int, key: dict[str, Any]) -> dict[str, Any]:
    kid = key.get("kid")
    if not isinstance(kid, str) or not kid:
        raise BundleError(f"keys[{index}]: a jwt-svid key needs a kid")
    if "d" in key:
        raise BundleError(f"keys[{index}]: a jwt-svid key must be a public key")
    # What RFC 7517 consumers expect of a signing key: the SPIFFE ``use`` is ours to read.
    return {k: v for k, v in key.items() if k != "use"}


def parse_spiffe_bundle(body: bytes | str) -> SpiffeBundle:
    """The bundle in ``body`` (SPIFFE Trust Domain and Bundle §4); BundleError otherwise."""
    if len(body) > MAX_BUNDLE_BYTES:
        raise BundleError(f"the bundle is larger than {MAX_BUNDLE_BYTES} bytes")
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise BundleError("the bundle is not JSON") from exc
    keys = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(keys, list):
        raise BundleError("the bundle is not a JWK Set (no keys array)")
    if len(keys) > _MAX_KEYS:
        raise BundleError(f"the bundle has more than {_MAX_KEYS} keys")
    sequence = doc.get("spiffe_sequence")
    if sequence is not None and (
        isinstance(sequence, bool)
        or not isinstance(sequence, int)
        or not 0 <= sequence <= _MAX_SEQUENCE
    ):
        raise BundleError(f"spiffe_sequence must be an integer from 0 to {_MAX_SEQUENCE}")
    hint = doc.get("spiffe_refresh_hint")
    if hint is not None and (
        isinstance(hint, bool) or not isinstance(hint, int | float) or not 0 < hint < 2**31
    ):
        raise BundleError("spiffe_refresh_hint must be a positive number of seconds")
    authorities: list[x509.Certificate] = []
    jwt_keys: list[dict[str, Any]] = []
    for index, key in enumerate(keys):
        if not isinstance(key, dict):
            raise BundleError(f"keys[{index}] is not a JSON object")
        if key.get("kty") not in _KNOWN_KTY:
            continue
        if key.get("use") == "x509-svid":
            authorities.append(_authority(index, key))
        elif key.get("use") == "jwt-svid":
            jwt_keys.append(_jwt_key(index, key))
    kids = [k["kid"] for k in jwt_keys]
    if len(set(kids)) != len(kids):
        raise BundleError("two jwt-svid keys share a kid")
    return SpiffeBundle(
        sequence=sequence,
        refresh_hint=float(hint) if hint is not None else None,
        authorities=tuple(authorities),
        jwt_keys=tuple(jwt_keys),
        document=json.dumps(doc, separators=(",", ":")),
    )
