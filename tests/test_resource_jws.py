"""Known answers for the checker's own JWS pass (RFC 7515 §7.1, RFC 7518 §3.4): tokens pyjwt
signs verify; every tampered, mis-signed or oddly spelled token is invalid_token (401)."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from mtlsauth.core.errors import InvalidToken
from mtlsauth.core.thumbprint import x5t_s256
from mtlsauth.resource import TokenVerifier, VerifierConfig

ISSUER = "https://issuer.example.test"
AUDIENCE = "https://api.example.test"
KID = "k1"
PEER = b"the client certificate (DER)"


class _OneKey:
    def __init__(self, jwk: jwt.PyJWK) -> None:
        self._jwk = jwk

    async def key(self, kid: str) -> jwt.PyJWK:
        if kid != KID:
            raise InvalidToken(f"unknown kid {kid!r}")
        return self._jwk


@pytest.fixture(scope="module")
def private() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _verifier(private: ec.EllipticCurvePrivateKey, **config: Any) -> TokenVerifier:
    jwk = jwt.PyJWK(json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private.public_key())),
                    algorithm="ES256")  # fmt: skip
    return TokenVerifier(VerifierConfig(ISSUER, AUDIENCE, **config), _OneKey(jwk))


def _claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER, "sub": "svc", "aud": AUDIENCE, "exp": now + 300, "iat": now,
        "jti": "j-1", "client_id": "svc", "scope": "read", "cnf": {"x5t#S256": x5t_s256(PEER)},
    }  # fmt: skip
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _pyjwt(private: ec.EllipticCurvePrivateKey, claims: dict[str, Any], **header: Any) -> str:
    return jwt.encode(claims, private, algorithm="ES256",
                      headers={"kid": KID, "typ": "at+jwt", **header})  # fmt: skip


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _resign(private: ec.EllipticCurvePrivateKey, header: bytes, payload: bytes) -> str:
    """A correctly signed token over arbitrary header and payload octets."""
    from cryptography.hazmat.primitives import hashes

    signing_input = f"{_b64(header)}.{_b64(payload)}"
    r, s = decode_dss_signature(private.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return f"{signing_input}.{_b64(r.to_bytes(32) + s.to_bytes(32))}"


async def _refused(verifier: TokenVerifier, token: str) -> None:
    with pytest.raises(InvalidToken) as excinfo:
        await verifier.verify(token, PEER)
    assert (excinfo.value.error, excinfo.value.status) == ("invalid_token", 401)


async def test_tokens_signed_by_pyjwt_verify(private: ec.EllipticCurvePrivateKey) -> None:
    verifier = _verifier(private)
    for header in ({}, {"typ": "application/at+jwt"}):
        for claims in (_claims(), _claims(aud=[AUDIENCE, "other"]), _claims(nbf=int(time.time()))):
            assert await verifier.verify(_pyjwt(private, claims, **header), PEER) == claims


async def test_every_bit_of_the_signature_counts(private: ec.EllipticCurvePrivateKey) -> None:
    verifier = _verifier(private)
    header, payload, signature = _pyjwt(private, _claims()).split(".")
    raw = _unb64(signature)
    for position in (0, 31, 32, 63):
        flipped = bytearray(raw)
        flipped[position] ^= 0x01
        await _refused(verifier, f"{header}.{payload}.{_b64(bytes(flipped))}")
    # r = 0, s = 0, and r, s beyond the group order: no arithmetic accepts them.
    for bad in (bytes(64), raw[:32] + bytes(32), b"\xff" * 64):
        await _refused(verifier, f"{header}.{payload}.{_b64(bad)}")


async def test_tampered_payload_and_header_are_refused(private: ec.EllipticCurvePrivateKey) -> None:
    verifier = _verifier(private)
    header, payload, signature = _pyjwt(private, _claims()).split(".")
    widened = _b64(json.dumps(_claims(scope="read write admin")).encode())
    await _refused(verifier, f"{header}.{widened}.{signature}")
    rebound = _b64(json.dumps(_claims(cnf={"x5t#S256": x5t_s256(b"mine")})).encode())
    await _refused(verifier, f"{header}.{rebound}.{signature}")
    other_header = _b64(json.dumps({"alg": "ES256", "kid": KID, "typ": "at+jwt", "x": 1}).encode())
    await _refused(verifier, f"{other_header}.{payload}.{signature}")


async def test_wrong_algorithms_are_refused(private: ec.EllipticCurvePrivateKey) -> None:
    verifier = _verifier(private)
    claims = _claims()
    headers = {"kid": KID, "typ": "at+jwt"}
    await _refused(verifier, jwt.encode(claims, "a-shared-secret-of-32-bytes-or-more!",
                                        algorithm="HS256", headers=headers))  # fmt: skip
    await _refused(verifier, jwt.encode(claims, "", algorithm="none", headers=headers))
    p384 = ec.generate_private_key(ec.SECP384R1())
    await _refused(verifier, jwt.encode(claims, p384, algorithm="ES384", headers=headers))
    # ES256 signature, header saying ES384: the header is refused before any key is used.
    _, payload, signature = _pyjwt(private, claims).split(".")
    es384 = _b64(json.dumps({"alg": "ES384", "kid": KID, "typ": "at+jwt"}).encode())
    await _refused(verifier, f"{es384}.{payload}.{signature}")


async def test_signatures_of_the_wrong_length_are_refused(
    private: ec.EllipticCurvePrivateKey,
) -> None:
    verifier = _verifier(private)
    header, payload, signature = _pyjwt(private, _claims()).split(".")
    raw = _unb64(signature)
    r, s = int.from_bytes(raw[:32]), int.from_bytes(raw[32:])
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    for bad in (raw[:63], raw + b"\x00", b"\x00" + raw, raw[:32], encode_dss_signature(r, s)):
        await _refused(verifier, f"{header}.{payload}.{_b64(bad)}")


async def test_non_canonical_spellings_are_refused(private: ec.EllipticCurvePrivateKey) -> None:
    verifier = _verifier(private)
    # "~~~" puts a "~" (0x7e) on a 3-octet boundary: its last six bits are "-" in base64url,
    # so the payload can be spelled in the other alphabet below.
    token = _pyjwt(private, _claims(jti="j~~~"))
    header, payload, signature = token.split(".")
    assert {"-", "_"} & set(payload)
    assert len(signature) % 4 == 2  # 64 octets: the last character carries 4 unused bits
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(signature[-1])
    same_octets = alphabet[last | 0x01]  # a set unused bit: decodes to the same 64 octets
    assert same_octets != signature[-1]
    assert _unb64(signature[:-1] + same_octets) == _unb64(signature)
    for spelling in (
        f"{header}.{payload}.{signature[:-1]}{same_octets}",
        f"{header}.{payload}.{signature}==",
        f"{header}==.{payload}.{signature}",
        f"{header}.{payload}.{signature}.",
        f"{header}.{payload}",
        f"{header}..{signature}",
        f"{header}.{payload}.{signature}.{signature}",
        f"{header}.{payload}.{signature[:-1]}",  # 4n+1 characters: no octets fit
        f"{header}.{payload.replace('-', '+').replace('_', '/')}.{signature}",
    ):
        await _refused(verifier, spelling)
    assert await verifier.verify(token, PEER)  # the canonical spelling still verifies


async def test_payloads_that_are_not_json_objects_are_refused(
    private: ec.EllipticCurvePrivateKey,
) -> None:
    verifier = _verifier(private)
    header = json.dumps({"alg": "ES256", "kid": KID, "typ": "at+jwt"}).encode()
    for payload in (b"[1, 2]", b'"text"', b"not json", b"\xff\xfe", b"[" * 100_000):
        await _refused(verifier, _resign(private, header, payload))
    for bad_header in (b"[]", b"not json", json.dumps({"alg": "ES256", "kid": KID}).encode(),
                       json.dumps({"alg": "ES256", "kid": KID, "typ": "at+jwt",
                                   "crit": ["exp"], "exp": 1}).encode()):  # fmt: skip
        await _refused(verifier, _resign(private, bad_header, json.dumps(_claims()).encode()))


@pytest.mark.parametrize(
    "changes",
    [
        {"exp": int(time.time()) - 3600},
        {"iat": int(time.time()) + 3600},
        {"nbf": int(time.time()) + 3600},
        {"exp": "soon"},
        {"iss": "https://elsewhere.example.test"},
        {"aud": "https://other-api.example.test"},
        {"aud": [AUDIENCE, 7]},
        {"aud": {"a": AUDIENCE}},
        {"jti": None},
        {"client_id": None},
        {"sub": 42},
        {"jti": 42},
        {"cnf": {"jkt": "x"}},
    ],
)
async def test_claims_are_checked_as_before(
    private: ec.EllipticCurvePrivateKey, changes: dict[str, Any]
) -> None:
    await _refused(_verifier(private), _pyjwt(private, _claims(**changes)))


async def test_leeway_still_applies(private: ec.EllipticCurvePrivateKey) -> None:
    verifier = _verifier(private, leeway=30)
    now = int(time.time())
    late = _claims(exp=now - 10, iat=now - 300, nbf=now + 10)
    assert await verifier.verify(_pyjwt(private, late), PEER) == late
