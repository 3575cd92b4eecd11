"""spiffe_jwt: a SPIFFE JWT-SVID as the client credential (draft-ietf-oauth-spiffe-client-auth
§3.1, a profile of RFC 7523 §2.2).

* ``client_assertion_type`` is ``urn:ietf:params:oauth:client-assertion-type:jwt-spiffe`` and
  ``client_assertion`` one JWT-SVID; ``spiffe_jwt`` is the method's name (§4). X.509-SVIDs are
  ``spiffe_x509`` (§3.2: RFC 8705 mutual TLS, see :mod:`.mtls`).
* The client: the ``client_id`` parameter, or, without one, a client registered under the
  SPIFFE ID itself (``--client-id spiffe://TD/path``, the draft's §3.2 convention), found by
  the ``sub`` and then verified like any other.
* Checks (§3.1 items 1-5, JWT-SVID §2-§3): ``alg`` on the JWT-SVID allow-list (RS, ES, PS;
  never ``none`` or HMAC); ``typ``, when present, JWT or JOSE; the signature by a
  ``jwt-svid`` key of the bundle of the client's trust anchor (so only that trust domain's
  keys count); ``sub``, ``aud`` and ``exp`` required, NumericDates numbers; ``aud`` the issuer
  identifier as its sole value (§3.1 item 3, after draft-ietf-oauth-rfc7523bis: no token
  endpoint, no other audience alongside); ``exp`` at most ``assertion_max_lifetime`` ahead;
  ``sub`` a SPIFFE ID of the anchor's trust domain matching the registered ``--spiffe-id``
  (exact, or strictly below the path for ``.../*``). ``iss`` is not required, and ``jti``
  neither: SPIFFE workloads reuse a JWT-SVID until it expires, so it is not single-use here.
* A trust domain whose bundle is past its staleness budget refuses every JWT-SVID.
"""

from __future__ import annotations

import time
from typing import Any, Final

import jwt

from mtlsauth.core.errors import InvalidClient, InvalidRequest
from mtlsauth.issuer.clientauth.base import AuthContext, AuthRequest
from mtlsauth.issuer.clientauth.jwt_assertion import jwk_keys, numeric_date_error
from mtlsauth.issuer.clientauth.mtls import check_bundle_fresh
from mtlsauth.issuer.model import Client
from mtlsauth.issuer.trust.spiffe import SpiffeError, SpiffeId, SpiffePattern

__all__ = ["JWT_SVID_ALGORITHMS", "SPIFFE_ASSERTION_TYPE", "authenticate_jwt_svid", "svid_subject"]

SPIFFE_ASSERTION_TYPE: Final = "urn:ietf:params:oauth:client-assertion-type:jwt-spiffe"
#: JWT-SVID §2.1: the JWS algorithms a JWT-SVID may be signed with.
JWT_SVID_ALGORITHMS: Final = frozenset(
    {"RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512"}
)
_TYPES: Final = frozenset({"JWT", "JOSE"})


def _bad(client_id: str, detail: str, reason: str = "bad_assertion") -> InvalidClient:
    return InvalidClient(f"client {client_id!r}: {detail}", reason=reason)


def svid_subject(assertion: str) -> str | None:
    """The ``sub`` of a JWT-SVID, only to find a client registered under its SPIFFE ID.

    Nothing is trusted from this look: the JWT-SVID is then verified with the keys of that
    client's trust anchor and its ``sub`` must match the client's registration.
    """
    try:
        claims = jwt.decode(assertion, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    sub = claims.get("sub")
    return sub if isinstance(sub, str) and sub.startswith("spiffe://") else None


def _header(client_id: str, assertion: str) -> tuple[str, str | None]:
    try:
        header = jwt.get_unverified_header(assertion)
    except jwt.PyJWTError as exc:
        raise _bad(client_id, f"malformed JWT-SVID: {exc}") from exc
    alg, kid, typ = header.get("alg"), header.get("kid"), header.get("typ")
    if not isinstance(alg, str) or alg not in JWT_SVID_ALGORITHMS:
        raise _bad(client_id, f"alg {str(alg)[:20]!r} is not allowed for a JWT-SVID")
    if kid is not None and not isinstance(kid, str):
        raise _bad(client_id, "kid is not a string")
    if typ is not None and (not isinstance(typ, str) or typ not in _TYPES):
        raise _bad(client_id, f"typ {str(typ)[:20]!r} is not a JWT-SVID's (JWT or JOSE)")
    return alg, kid


def _claims(client_id: str, assertion: str, keys: list[Any], alg: str, leeway: float
            ) -> dict[str, Any]:  # fmt: skip
    for key in keys:
        try:
            claims: dict[str, Any] = jwt.decode(
                assertion,
                key=key,
                algorithms=[alg],
                leeway=leeway,
                options={"require": ["sub", "aud", "exp"], "verify_aud": False},
            )
        except jwt.InvalidSignatureError:
            continue
        except jwt.PyJWTError as exc:
            raise _bad(client_id, f"{type(exc).__name__}: {exc}") from exc
        return claims
    raise _bad(client_id, "no jwt-svid key of the trust domain's bundle verifies the signature")


async def authenticate_jwt_svid(client: Client, request: AuthRequest, context: AuthContext) -> None:
    """Authenticate ``client`` with a JWT-SVID (see the module docstring)."""
    if request.assertion_type != SPIFFE_ASSERTION_TYPE:
        if request.assertion_type is None or request.assertion is None:
            raise InvalidRequest("client_assertion and client_assertion_type go together")
        raise _bad(client.client_id, f"unsupported assertion type {request.assertion_type[:60]!r}")
    if request.assertion is None:
        raise InvalidRequest("client_assertion is missing")
    if client.trust is None or client.spiffe_id is None:
        raise _bad(client.client_id, "no trust anchor or SPIFFE ID registered", "no_keys")
    pattern = SpiffePattern.parse(client.spiffe_id)
    anchor = context.trust.get(client.trust)
    if anchor is None or pattern.base.trust_domain not in anchor.spiffe_trust_domains:
        raise _bad(client.client_id, f"trust anchor {client.trust!r} is not registered for "
                   f"{pattern.base.trust_domain!r}", "no_keys")  # fmt: skip
    check_bundle_fresh(client, context)
    alg, kid = _header(client.client_id, request.assertion)
    bundle_keys = context.bundles.jwt_keys(client.trust) if context.bundles else ()
    keys = jwk_keys(bundle_keys, alg, kid)
    if not keys:
        raise _bad(client.client_id, f"no jwt-svid key of trust anchor {client.trust!r} for "
                   f"alg {alg} and kid {str(kid)[:40]!r}", "no_keys")  # fmt: skip
    policy = context.assertions
    claims = _claims(client.client_id, request.assertion, keys, alg, policy.leeway)
    date_error = numeric_date_error(claims)
    if date_error is not None:
        raise _bad(client.client_id, date_error)
    aud = claims["aud"]
    if not policy.issuer or aud not in (policy.issuer, [policy.issuer]):
        raise _bad(client.client_id, f"aud {str(aud)[:200]!r} is not {policy.issuer!r} alone")
    exp = float(claims["exp"])
    if exp - time.time() > policy.max_lifetime + policy.leeway:
        raise _bad(client.client_id, f"exp is more than {policy.max_lifetime} s ahead")
    iat = claims.get("iat")
    if isinstance(iat, int | float) and exp - iat > policy.max_lifetime + policy.leeway:
        raise _bad(client.client_id, f"the JWT-SVID lives longer than {policy.max_lifetime} s")
    sub = claims["sub"]
    try:
        svid = SpiffeId.parse(sub) if isinstance(sub, str) else None
    except SpiffeError as exc:
        raise _bad(client.client_id, f"sub is not a SPIFFE ID: {exc}") from exc
    if svid is None or not svid.path:
        raise _bad(client.client_id, "sub is not a workload's SPIFFE ID")
    if svid.trust_domain not in anchor.spiffe_trust_domains or not pattern.matches(svid):
        raise _bad(client.client_id, f"SPIFFE ID {svid} does not match {pattern}")
