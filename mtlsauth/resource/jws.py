"""One strict pass over an ES256 access token in JWS compact serialisation (RFC 7515 §7.1).

The checker reads only tokens of its own issuer's profile (:mod:`mtlsauth.core.access_token`),
so it parses them once and verifies with cryptography directly instead of through a general
JWT library:

* RFC 7515 §7.1 and §2: exactly three base64url segments, no padding, none empty, each in its
  canonical form (the unused bits of the last character zero), so one token has one spelling.
* The header is checked by the caller (``alg``, ``typ``, ``kid``) and cached per segment; a
  ``crit`` header (RFC 7515 §4.1.11) names extensions this reader does not implement, so a
  token carrying one is refused.
* RFC 7515 §5.2 / RFC 7519 §7.2: the payload is a JSON object.
* RFC 7518 §3.4: the ES256 signature is R || S, 32 octets each, converted to DER for
  cryptography's ECDSA verification; any other length is refused before any arithmetic.
"""

from __future__ import annotations

import binascii
import json
import re
from dataclasses import dataclass
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from mtlsauth.core.errors import InvalidToken

__all__ = ["CompactJWS", "decode_segment", "parse", "verify_es256"]

_COMPACT: Final = re.compile(r"([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)\Z")
_TO_STANDARD: Final = bytes.maketrans(b"-_", b"+/")
_PAD: Final = (b"", b"", b"==", b"=")
#: RFC 4648 §3.5: with 2 (3) characters in the last quantum, the last one's low 4 (2) bits are
#: unused and must be zero — these are the characters that leave them so.
_CANONICAL_LAST: Final = ("", "", "AQgw", "AEIMQUYcgkosw048")
#: RFC 7518 §3.4: R and S of P-256, 32 octets each.
_ES256_HALF: Final = 32
_ECDSA_SHA256: Final = ec.ECDSA(hashes.SHA256())


@dataclass(frozen=True, slots=True)
class CompactJWS:
    header_segment: str
    payload: dict[str, Any]
    signing_input: bytes
    signature: bytes


def decode_segment(segment: str, what: str) -> bytes:
    """The octets of one unpadded base64url segment; InvalidToken unless it is canonical.

    The caller has matched the segment against the base64url alphabet already.
    """
    tail = len(segment) % 4
    # A last character with unused bits set decodes to the same octets: a second spelling.
    if tail == 1 or (tail and segment[-1] not in _CANONICAL_LAST[tail]):
        raise InvalidToken(f"malformed token {what}: not canonical base64url")
    try:
        return binascii.a2b_base64(segment.encode("ascii").translate(_TO_STANDARD) + _PAD[tail])
    except (binascii.Error, ValueError) as exc:  # not reached for matched segments
        raise InvalidToken(f"malformed token {what}: not base64url") from exc


def parse(token: str) -> CompactJWS:
    """Split and decode ``token``; the header segment is left to the caller (it is cached)."""
    match = _COMPACT.match(token)
    if match is None:
        raise InvalidToken("the token is not three base64url segments (RFC 7515 §7.1)")
    header_segment, payload_segment, signature_segment = match.groups()
    try:
        payload = json.loads(decode_segment(payload_segment, "payload"))
    except (ValueError, RecursionError) as exc:  # UTF-8, JSON, nesting too deep
        raise InvalidToken(f"malformed token payload: {type(exc).__name__}") from exc
    if not isinstance(payload, dict):
        raise InvalidToken("malformed token payload: not a JSON object")
    signature = decode_segment(signature_segment, "signature")
    signing_input = token[: len(header_segment) + 1 + len(payload_segment)].encode("ascii")
    return CompactJWS(header_segment, payload, signing_input, signature)


def verify_es256(key: ec.EllipticCurvePublicKey, jws: CompactJWS) -> None:
    """RFC 7518 §3.4: verify R || S over the signing input with ``key`` (P-256)."""
    if len(jws.signature) != 2 * _ES256_HALF:
        raise InvalidToken("the ES256 signature is not 64 octets (RFC 7518 §3.4)")
    r = int.from_bytes(jws.signature[:_ES256_HALF])
    s = int.from_bytes(jws.signature[_ES256_HALF:])
    try:
        key.verify(encode_dss_signature(r, s), jws.signing_input, _ECDSA_SHA256)
    except InvalidSignature as exc:
        raise InvalidToken("the token's signature does not verify") from exc
