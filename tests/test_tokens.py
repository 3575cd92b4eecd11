"""A signed token's payload decodes to the claims the signer reports, for any client id RFC 6749
allows, and verifies with pyjwt (RFC 9068)."""

from __future__ import annotations

from pathlib import Path

import jwt
import pytest

from mtlsauth.issuer.keys import generate_signing_key
from mtlsauth.issuer.tokens import TokenSigner

CASES = [
    ("plain", ("https://api.example",), ("read",), "A" * 43),
    ('quote " and back\\slash', ("https://api.example",), ("read", "write"), None),
    ("space and ' and ~", ("https://a.example", "https://b.example"), (), "x5t-value_"),
    ("}{,:[]", ("urn:example:ünïcode",), ("s",), None),
]


@pytest.mark.parametrize(("client_id", "audience", "scope", "x5t"), CASES)
def test_payload_is_the_claims(
    tmp_path: Path,
    client_id: str,
    audience: tuple[str, ...],
    scope: tuple[str, ...],
    x5t: str | None,
) -> None:
    key = generate_signing_key(tmp_path / "signing.pem")
    signer = TokenSigner(issuer='https://issuer.example/"ü"', key=key, ttl=300)
    token = signer.sign(client_id=client_id, audience=audience, scope=scope, x5t_s256=x5t)

    claims = jwt.decode(
        token.token,
        key=jwt.PyJWK(key.public_jwk(), algorithm="ES256").key,
        algorithms=["ES256"],
        audience=list(audience),
        issuer='https://issuer.example/"ü"',
    )
    assert claims == token.claims
    assert claims["sub"] == claims["client_id"] == client_id
    assert claims["aud"] == (audience[0] if len(audience) == 1 else list(audience))
    assert claims.get("scope") == (" ".join(scope) if scope else None)
    assert claims.get("cnf") == ({"x5t#S256": x5t} if x5t else None)
    assert claims["exp"] - claims["iat"] == 300
    header = jwt.get_unverified_header(token.token)
    assert header == {"alg": "ES256", "kid": key.kid, "typ": "at+jwt"}
