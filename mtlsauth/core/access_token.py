"""The JWT access-token profile (RFC 9068) with its certificate binding (RFC 8705 §3.1).

The issuer writes tokens to this profile and the checker and introspection read them by it, so
the two sides cannot drift apart:

* RFC 9068 §2.1: the JWS header's ``typ`` is ``at+jwt``; §4: a reader also accepts the full
  media type ``application/at+jwt`` (compared case-insensitively, RFC 7515 §4.1.9).
* The algorithm allow-list: ES256 only (ECDSA P-256 with SHA-256, RFC 7518 §3.4), the one
  algorithm the issuer signs with; a reader never takes the algorithm from the token.
* RFC 9068 §2.2: the claims every token carries.
* RFC 8705 §3.1: the confirmation claim ``cnf`` with the certificate thumbprint ``x5t#S256``
  binds a token to the client certificate it was issued to.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from mtlsauth.core.errors import InvalidToken

__all__ = [
    "ALGORITHM",
    "ALGORITHMS",
    "MAX_TOKEN_LENGTH",
    "REQUIRED_CLAIMS",
    "TYP",
    "bound_thumbprint",
    "confirmation",
    "header",
    "typ_accepted",
]

#: The one signing algorithm: what the issuer signs with and all a reader accepts.
ALGORITHM: Final = "ES256"
#: The allow-list handed to a JWT library (``algorithms=``).
ALGORITHMS: Final = (ALGORITHM,)
#: The ``typ`` the issuer writes (RFC 9068 §2.1).
TYP: Final = "at+jwt"
#: RFC 9068 §2.2 (``client_id`` included; ``scope`` and ``cnf`` are optional).
REQUIRED_CLAIMS: Final = ("iss", "sub", "aud", "exp", "iat", "jti", "client_id")
#: A reader refuses longer tokens unparsed (ours are well under 1 KiB).
MAX_TOKEN_LENGTH: Final = 8192

_ACCEPTED_TYPES: Final = frozenset({TYP, "application/" + TYP})


def header(kid: str) -> dict[str, str]:
    """The JWS header of a token signed with the key ``kid``."""
    return {"alg": ALGORITHM, "kid": kid, "typ": TYP}


def typ_accepted(typ: object) -> bool:
    """Whether a header's ``typ`` names an access token (RFC 9068 §4)."""
    return isinstance(typ, str) and typ.lower() in _ACCEPTED_TYPES


def confirmation(x5t_s256: str) -> dict[str, str]:
    """The ``cnf`` claim binding a token to the certificate with this thumbprint."""
    return {"x5t#S256": x5t_s256}


def bound_thumbprint(claims: Mapping[str, Any]) -> str | None:
    """The ``x5t#S256`` a token is bound to, or None for an unbound token.

    A ``cnf`` that is present but carries no certificate thumbprint is refused rather than
    ignored: reading it as unbound would drop the binding the issuer meant.
    """
    cnf = claims.get("cnf")
    if cnf is None:
        return None
    thumbprint = cnf.get("x5t#S256") if isinstance(cnf, dict) else None
    if not isinstance(thumbprint, str):
        raise InvalidToken("the token's cnf is not an x5t#S256 certificate binding")
    return thumbprint
