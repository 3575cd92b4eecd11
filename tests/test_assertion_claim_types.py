"""private_key_jwt assertions whose claims have the wrong JSON types are refused with 401
invalid_client (RFC 7519 §2 NumericDate; decision D9), never accepted or answered with a 500."""

from __future__ import annotations

import json
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from tests.conftest import Home, running
from tests.test_assertions import assertion, public_jwk, token_with
from tests.test_federation import forged


async def test_claim_types(home: Home, tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [public_jwk(key, "k1")]}))
    await home.aadd_client("--auth-method", "private_key_jwt", "--client-id", "pk",
                           "--jwks", str(jwks))  # fmt: skip
    now = int(time.time())
    cases = {
        "alg as an array": forged({"alg": ["ES256"], "kid": "k1"}, {"iss": "pk"}),
        "exp as a string": assertion(home, "pk", key, "ES256", exp=str(now + 60)),
        "iat as a string": assertion(home, "pk", key, "ES256", iat=str(now)),
        "nbf as a string": assertion(home, "pk", key, "ES256", nbf=str(now - 10)),
        # Integers past a double's range: a NumericDate that is no finite number (not a 500).
        "exp a 400-digit integer": assertion(home, "pk", key, "ES256", exp=10**400),
        "iat a 400-digit negative integer": assertion(home, "pk", key, "ES256", iat=-(10**400)),
        "nbf a 400-digit negative integer": assertion(home, "pk", key, "ES256", nbf=-(10**400)),
    }
    async with running(home) as service:
        assert (await token_with(service, assertion(home, "pk", key, "ES256"), client_id="pk"))[
            0
        ] == 200
        for label, value in cases.items():
            status, body = await token_with(service, value, client_id="pk")
            assert (status, body.get("error")) == (401, "invalid_client"), label
