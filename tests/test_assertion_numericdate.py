"""Client assertions' NumericDate claims are JSON numbers (RFC 7519 §2; decision D9).

pyjwt converts ``"exp": "1767225600"`` and ``true`` itself, so without a check of our own a
string or a boolean passes as a date.
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.conftest import Home, running
from tests.test_assertions import public_jwk, token_with


def _signed(key: ec.EllipticCurvePrivateKey, client_id: str, aud: str, dates: str) -> str:
    """An ES256 assertion whose date members are the raw JSON text ``dates``."""
    jti = secrets.token_urlsafe(16)
    payload = f'{{"iss":"{client_id}","sub":"{client_id}","aud":"{aud}","jti":"{jti}",{dates}}}'
    json.loads(payload)  # the test's own input is valid JSON (Infinity/NaN as Python reads it)
    return jwt.api_jws.encode(payload.encode(), key, algorithm="ES256", headers={"kid": "k1"})


@pytest.fixture
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def client_id(home: Home, tmp_path: Path, key: ec.EllipticCurvePrivateKey) -> str:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [public_jwk(key, "k1")]}))
    home.add_client("--auth-method", "private_key_jwt", "--client-id", "nd", "--jwks", str(jwks))
    return "nd"


async def test_numeric_dates_must_be_finite_json_numbers(
    home: Home, client_id: str, key: ec.EllipticCurvePrivateKey
) -> None:
    now = int(time.time())
    exp, iat = now + 60, now
    refused = {
        "exp as a string": f'"exp":"{exp}","iat":{iat}',
        "iat as a string": f'"exp":{exp},"iat":"{iat}"',
        "nbf as a string": f'"exp":{exp},"iat":{iat},"nbf":"{iat}"',
        "iat true": f'"exp":{exp},"iat":true',
        "nbf false": f'"exp":{exp},"iat":{iat},"nbf":false',
        "exp Infinity": f'"exp":Infinity,"iat":{iat}',
        "exp overflowing": f'"exp":1e400,"iat":{iat}',
        "iat NaN": f'"exp":{exp},"iat":NaN',
        "nbf -Infinity": f'"exp":{exp},"iat":{iat},"nbf":-Infinity',
    }
    accepted = {
        "integers": f'"exp":{exp},"iat":{iat},"nbf":{iat}',
        "fractions": f'"exp":{exp}.5,"iat":{iat}.25',
    }
    aud = home.settings.issuer
    async with running(home) as service:
        for label, dates in accepted.items():
            status, body = await token_with(service, _signed(key, client_id, aud, dates))
            assert status == 200, (label, body)
        for label, dates in refused.items():
            status, body = await token_with(service, _signed(key, client_id, aud, dates))
            assert (status, body["error"]) == (401, "invalid_client"), label
