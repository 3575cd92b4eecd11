"""Verifying an access token and its certificate binding: the framework-free core.

RFC 9068 §4: signature with the profile's algorithm allow-list (ES256), ``typ`` ``at+jwt``,
``iss``, ``aud``, ``exp``/``nbf``/``iat`` with a small leeway, and the required claims (the
profile itself is :mod:`mtlsauth.core.access_token`). RFC 8705 §3: a token with
``cnf.x5t#S256`` is accepted only over a connection whose client certificate has that
thumbprint; whether unbound tokens are accepted at all is a setting (off by default).

The token is parsed once, strictly, and its ES256 signature verified with cryptography
directly (:mod:`mtlsauth.resource.jws`); the claims are then checked here as RFC 7519 §4.1
and RFC 9068 §4 say (the same checks pyjwt's ``decode`` made, which stays for foreign input
elsewhere). A verified token is cached (keyed by the token itself: only tokens whose signature
verified get in, so the keys are the issuer's own, short tokens) until it expires, so a token
reused for many calls costs a dictionary lookup after the first; the binding is still checked
on every call, against the certificate that last matched it first (a byte comparison) before
the thumbprint is computed. With a revocation list (:mod:`mtlsauth.resource.revocation`), a
token the issuer revoked is refused within the list's poll interval, at the cost of one set
lookup.
"""

from __future__ import annotations

import functools
import hmac
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from mtlsauth.core.access_token import (
    ALGORITHM,
    ALGORITHMS,
    MAX_TOKEN_LENGTH,
    REQUIRED_CLAIMS,
    bound_thumbprint,
    typ_accepted,
)
from mtlsauth.core.errors import InsufficientScope, InvalidToken
from mtlsauth.core.thumbprint import x5t_s256
from mtlsauth.resource.jws import decode_segment, parse, verify_es256

__all__ = [
    "ALGORITHMS",
    "Claims",
    "KeySource",
    "RevocationSource",
    "TokenVerifier",
    "VerifierConfig",
    "require_scopes",
]

Claims = dict[str, Any]


class KeySource(Protocol):
    async def key(self, kid: str) -> jwt.PyJWK: ...


class RevocationSource(Protocol):
    def refuses(self, jti: str, client_id: str, iat: float, bound_to: str | None) -> bool: ...


@dataclass(frozen=True, slots=True)
class VerifierConfig:
    """What a resource server accepts."""

    issuer: str
    audience: str | Sequence[str]
    leeway: int = 30
    allow_unbound: bool = False
    cache_size: int = 10000


@dataclass(slots=True)
class _Verified:
    claims: Claims
    exp: float
    bound_to: str | None
    jti: str
    client_id: str
    iat: float
    #: The DER of the last certificate whose thumbprint matched ``bound_to``: the next call
    #: over the same connection (or from the same client) compares bytes instead of hashing.
    matched_der: bytes | None = None


class TokenVerifier:
    """Verifies tokens of one issuer for one resource server."""

    def __init__(
        self,
        config: VerifierConfig,
        keys: KeySource,
        *,
        revocations: RevocationSource | None = None,
    ) -> None:
        self.config = config
        self._keys = keys
        self.revocations = revocations
        self._cache: dict[str, _Verified] = {}

    async def verify(
        self, token: str, peer_der: bytes | None, *, allow_unbound: bool | None = None
    ) -> Claims:
        """The token's claims; InvalidToken (with the precise reason as detail) otherwise."""
        verified = self._cache.get(token)
        if verified is None or time.time() > verified.exp + self.config.leeway:
            if verified is not None:
                del self._cache[token]
            verified = await self._verify_jwt(token)
            self._remember(token, verified)
        if self.revocations is not None and self.revocations.refuses(
            verified.jti, verified.client_id, verified.iat, verified.bound_to
        ):
            raise InvalidToken("the token, its client or its certificate was revoked")
        self._check_binding(verified, peer_der, allow_unbound)
        return verified.claims

    def _remember(self, token: str, verified: _Verified) -> None:
        if len(self._cache) >= self.config.cache_size:
            now = time.time()
            self._cache = {k: v for k, v in self._cache.items() if v.exp > now}
            if len(self._cache) >= self.config.cache_size:
                self._cache.clear()
        self._cache[token] = verified

    def _check_binding(
        self, verified: _Verified, peer_der: bytes | None, allow_unbound: bool | None
    ) -> None:
        if verified.bound_to is None:
            unbound_ok = self.config.allow_unbound if allow_unbound is None else allow_unbound
            if not unbound_ok:
                raise InvalidToken("the token is not certificate-bound and this route needs one")
            return
        if peer_der is None:
            raise InvalidToken("a certificate-bound token was presented without a certificate")
        if peer_der == verified.matched_der:
            return
        if not hmac.compare_digest(x5t_s256(peer_der), verified.bound_to):
            raise InvalidToken("the token is bound to another certificate")
        verified.matched_der = peer_der

    async def _verify_jwt(self, token: str) -> _Verified:
        if len(token) > MAX_TOKEN_LENGTH:
            raise InvalidToken("the token is not a well-formed JWS")
        jws = parse(token)  # strict: three base64url segments only
        key = await self._keys.key(_key_id(jws.header_segment))
        public = key.key
        if (
            key.algorithm_name != ALGORITHM
            or not isinstance(public, ec.EllipticCurvePublicKey)
            or not isinstance(public.curve, ec.SECP256R1)
        ):
            raise InvalidToken("the issuer's key for this kid is not an ES256 key")
        verify_es256(public, jws)
        claims = jws.payload
        _check_claims(claims, self.config, time.time())
        return _Verified(
            claims=claims,
            exp=float(claims["exp"]),
            bound_to=bound_thumbprint(claims),
            jti=str(claims["jti"]),
            client_id=str(claims["client_id"]),
            iat=float(claims["iat"]),
        )


def _numeric_date(claims: Claims, name: str) -> int:
    """RFC 7519 §2 NumericDate, read as pyjwt reads it (``int()``, fractions dropped)."""
    try:
        return int(claims[name])
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidToken(f"the {name} claim is not a NumericDate") from exc


def _check_claims(claims: Claims, config: VerifierConfig, now: float) -> None:
    """RFC 9068 §4 / RFC 7519 §4.1: required claims, times with leeway, ``iss``, ``aud``."""
    for name in REQUIRED_CLAIMS:
        if claims.get(name) is None:
            raise InvalidToken(f"the token lacks the {name} claim")
    leeway = config.leeway
    if _numeric_date(claims, "iat") > now + leeway:
        raise InvalidToken("the token is not yet valid (iat)")
    if "nbf" in claims and _numeric_date(claims, "nbf") > now + leeway:
        raise InvalidToken("the token is not yet valid (nbf)")
    if _numeric_date(claims, "exp") <= now - leeway:
        raise InvalidToken("the token has expired")
    if claims["iss"] != config.issuer:
        raise InvalidToken("the token is from another issuer")
    audiences = claims["aud"]
    if isinstance(audiences, str):
        audiences = [audiences]
    if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
        raise InvalidToken("the token's aud is not a string or a list of strings")
    accepted = [config.audience] if isinstance(config.audience, str) else config.audience
    if all(audience not in audiences for audience in accepted):
        raise InvalidToken("the token is for another audience")
    for name in ("sub", "jti"):
        if not isinstance(claims[name], str):
            raise InvalidToken(f"the token's {name} is not a string")


@functools.lru_cache(maxsize=64)
def _key_id(segment: str) -> str:
    """The ``kid`` of a JWS header segment whose ``alg`` and ``typ`` are acceptable.

    Every token of one signing key carries the same header, so the answer is cached per
    segment (errors are not cached).
    """
    try:
        header = json.loads(decode_segment(segment, "header"))
    except (ValueError, RecursionError) as exc:  # UTF-8, JSON, nesting too deep
        raise InvalidToken(f"malformed token header: {type(exc).__name__}") from exc
    if not isinstance(header, dict):
        raise InvalidToken("malformed token header: not a JSON object")
    alg, kid, typ = header.get("alg"), header.get("kid"), header.get("typ")
    if alg not in ALGORITHMS:
        raise InvalidToken(f"algorithm {str(alg)[:20]!r} is not allowed")
    if not typ_accepted(typ):
        raise InvalidToken(f"typ {str(typ)[:30]!r} is not at+jwt (RFC 9068 §4)")
    if not isinstance(kid, str):
        raise InvalidToken("the token header has no kid")
    if "crit" in header or header.get("b64", True) is False:
        # RFC 7515 §4.1.11, RFC 7797 §3: extensions this reader does not implement.
        raise InvalidToken("the token header needs an extension this reader does not implement")
    return kid


def require_scopes(claims: Claims, scopes: Iterable[str]) -> None:
    """RFC 6750 §3.1: every needed scope must be in the token, else 403 insufficient_scope."""
    needed = list(scopes)
    granted = set(str(claims.get("scope", "")).split())
    missing = [s for s in needed if s not in granted]
    if missing:
        raise InsufficientScope(f"the token lacks scope(s) {missing}", scope=" ".join(needed))
