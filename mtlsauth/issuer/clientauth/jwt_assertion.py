"""private_key_jwt and client_secret_jwt: JWT client assertions (RFC 7523 §2.2, §3).

* ``iss`` = ``sub`` = the client_id; ``aud`` is the issuer, the token endpoint or its mTLS
  alias, as a string or in an array (decision D2; ``strict_assertion_audience`` keeps only the
  issuer); ``exp`` is required and at most ``assertion_max_lifetime`` ahead; ``jti`` is required
  and single-use across every endpoint, worker and host (the store's replay cache decides).
* ``exp``, ``iat`` and ``nbf`` are NumericDates: JSON numbers (RFC 7519 §2), finite. pyjwt
  converts strings and booleans, so the types are checked here (decision D9).
* Fixed algorithm allow-lists per method: asymmetric algorithms for private_key_jwt (so a
  public key can never be used as an HMAC secret), HMAC for client_secret_jwt; never ``none``.

The steps are public so that federated assertions (clientauth/federated.py) are checked by the
very same code, with the federation's issuer, subject and keys.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from typing import Any, Final

import jwt

from mtlsauth.core.errors import InvalidClient, InvalidRequest
from mtlsauth.issuer.clientauth.base import AuthContext, AuthRequest
from mtlsauth.issuer.model import Client
from mtlsauth.issuer.secrets import unseal_secret

__all__ = [
    "ASSERTION_TYPE",
    "PRIVATE_KEY_ALGORITHMS",
    "SECRET_ALGORITHMS",
    "assertion_header",
    "assertion_issuer",
    "authenticate_assertion",
    "jwk_keys",
    "numeric_date_error",
    "presented_assertion",
    "use_jti",
    "verify_assertion",
]

ASSERTION_TYPE: Final = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
PRIVATE_KEY_ALGORITHMS: Final = frozenset(
    {"ES256", "ES384", "ES512", "PS256", "PS384", "PS512", "RS256", "RS384", "RS512", "EdDSA"}
)
SECRET_ALGORITHMS: Final = frozenset({"HS256", "HS384", "HS512"})
_KTY: Final = {"ES": "EC", "PS": "RSA", "RS": "RSA", "Ed": "OKP"}
_MAX_JTI: Final = 256
_NUMERIC_DATES: Final = ("exp", "iat", "nbf")


def _bad(client_id: str, detail: str, reason: str = "bad_assertion") -> InvalidClient:
    return InvalidClient(f"client {client_id!r}: {detail}", reason=reason)


def numeric_date_error(claims: dict[str, Any]) -> str | None:
    """Why a NumericDate claim is not a finite JSON number (RFC 7519 §2), or None."""
    for name in _NUMERIC_DATES:
        if name not in claims:
            continue
        value = claims[name]
        # bool is an int subclass in Python; JSON true is not a number.
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"{name} is a JSON {type(value).__name__}, not a number (RFC 7519 §2)"
        try:
            finite = math.isfinite(value)
        except OverflowError:  # a JSON integer beyond a double's range
            finite = False
        if not finite:
            return f"{name} is not a finite number"
    return None


def assertion_issuer(assertion: str) -> str | None:
    """The ``iss`` of an assertion, only to choose whose keys verify it.

    Nothing is trusted from this look: the assertion is then verified with that client's keys
    and must name the same client in ``iss`` and ``sub``.
    """
    try:
        claims = jwt.decode(assertion, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    issuer = claims.get("iss")
    return issuer if isinstance(issuer, str) else None


def jwk_keys(jwks: Iterable[dict[str, Any]], alg: str, kid: str | None) -> list[Any]:
    """The public keys of a JWK Set (RFC 7517 §5) that may verify ``alg`` with ``kid``."""
    kty = _KTY.get(alg[:2])
    keys = []
    for jwk in jwks:
        if kid is not None and jwk.get("kid") != kid:
            continue
        if jwk.get("kty") != kty or jwk.get("use", "sig") != "sig" or "d" in jwk:
            continue
        try:
            keys.append(jwt.PyJWK(jwk, algorithm=alg).key)
        except jwt.PyJWTError:
            continue
    return keys


async def _candidate_keys(
    client: Client, alg: str, kid: str | None, context: AuthContext
) -> list[tuple[Any, str | None]]:
    """(verification key, matching secret hash) pairs to try, most specific first."""
    if client.auth_method == "client_secret_jwt":
        now = time.time()
        keys: list[tuple[Any, str | None]] = []
        for entry in client.secrets:
            if entry.is_active(now) and entry.sealed:
                try:
                    secret = unseal_secret(context.secret_key, entry.sealed, client.client_id)
                except ValueError:
                    continue
                keys.append((secret.encode(), entry.hash))
        return keys
    jwks: Iterable[dict[str, Any]]
    if client.jwks is not None:
        jwks = client.jwks.get("keys", [])
    elif client.jwks_uri is not None and context.remote_jwks is not None:
        jwks = await context.remote_jwks.keys(client.jwks_uri, kid=kid)
    else:
        raise _bad(client.client_id, "no keys registered", reason="no_keys")
    return [(key, None) for key in jwk_keys(jwks, alg, kid)]


def presented_assertion(client_id: str, request: AuthRequest) -> str:
    """The request's ``client_assertion`` (RFC 7523 §2.2), of the one type we accept."""
    if request.assertion_type != ASSERTION_TYPE:
        if request.assertion_type is None or request.assertion is None:
            raise InvalidRequest("client_assertion and client_assertion_type go together")
        raise _bad(client_id, f"unsupported assertion type {request.assertion_type[:60]!r}")
    if request.assertion is None:
        raise InvalidRequest("client_assertion is missing")
    return request.assertion


def assertion_header(
    client_id: str, assertion: str, allowed: frozenset[str]
) -> tuple[str, str | None]:
    """The (alg, kid) of an assertion, with ``alg`` on the allow-list (never ``none``)."""
    try:
        header = jwt.get_unverified_header(assertion)
    except jwt.PyJWTError as exc:
        raise _bad(client_id, f"malformed assertion: {exc}") from exc
    alg, kid = header.get("alg"), header.get("kid")
    if not isinstance(alg, str) or alg not in allowed:
        raise _bad(client_id, f"alg {str(alg)[:20]!r} is not allowed")
    if kid is not None and not isinstance(kid, str):
        raise _bad(client_id, "kid is not a string")
    return alg, kid


def verify_assertion(
    client_id: str,
    assertion: str,
    candidates: Iterable[tuple[Any, str | None]],
    *,
    alg: str,
    issuer: str,
    subject: str,
    audiences: Iterable[str],
    leeway: float,
    max_lifetime: int,
    require: Iterable[str] = ("iss", "sub", "aud", "exp", "jti"),
) -> tuple[dict[str, Any], str | None]:
    """RFC 7523 §3: the claims of an assertion signed by one of ``candidates`` (and that
    candidate's secret hash), naming ``issuer`` and ``subject``, for one of ``audiences``,
    unexpired and living at most ``max_lifetime`` seconds."""
    claims: dict[str, Any] | None = None
    matched: str | None = None
    for key, secret_hash in candidates:
        try:
            claims = jwt.decode(
                assertion,
                key=key,
                algorithms=[alg],
                audience=sorted(audiences),
                issuer=issuer,
                leeway=leeway,
                options={"require": list(require)},
            )
        except jwt.InvalidSignatureError:
            continue
        except jwt.PyJWTError as exc:
            raise _bad(client_id, f"{type(exc).__name__}: {exc}") from exc
        matched = secret_hash
        break
    if claims is None:
        raise _bad(client_id, "no registered key verifies the assertion's signature")
    date_error = numeric_date_error(claims)
    if date_error is not None:
        raise _bad(client_id, date_error)
    if claims.get("sub") != subject:
        raise _bad(client_id, "sub is not the registered subject")
    now = time.time()
    exp = float(claims["exp"])
    if exp - now > max_lifetime + leeway:
        raise _bad(client_id, f"exp is more than {max_lifetime} s ahead")
    iat = claims.get("iat")
    if isinstance(iat, int | float) and exp - iat > max_lifetime + leeway:
        raise _bad(client_id, f"the assertion lives longer than {max_lifetime} s")
    return claims, matched


async def use_jti(
    client_id: str, context: AuthContext, namespace: str, claims: dict[str, Any]
) -> None:
    """RFC 7523 §3 item 7: the assertion's ``jti`` is single-use within ``namespace`` (its
    issuer) until ``exp``, across every endpoint, worker and host."""
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti or len(jti) > _MAX_JTI:
        raise _bad(client_id, "jti must be a non-empty string")
    if context.store is None:
        raise _bad(client_id, "no replay cache is configured", reason="internal")
    if not await context.store.use_assertion_id(namespace, jti, float(claims["exp"])):
        raise _bad(client_id, f"assertion jti {jti[:40]!r} was already used", reason="replay")


async def authenticate_assertion(
    client: Client, request: AuthRequest, context: AuthContext
) -> str | None:
    assertion = presented_assertion(client.client_id, request)
    allowed = (
        SECRET_ALGORITHMS if client.auth_method == "client_secret_jwt" else PRIVATE_KEY_ALGORITHMS
    )
    alg, kid = assertion_header(client.client_id, assertion, allowed)
    policy = context.assertions
    claims, matched = verify_assertion(
        client.client_id,
        assertion,
        await _candidate_keys(client, alg, kid, context),
        alg=alg,
        issuer=client.client_id,
        subject=client.client_id,
        audiences=policy.audiences,
        leeway=policy.leeway,
        max_lifetime=policy.max_lifetime,
    )
    await use_jti(client.client_id, context, client.client_id, claims)
    return matched
