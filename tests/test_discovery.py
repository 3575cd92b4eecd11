"""Metadata (RFC 8414), JWKS (RFC 7517), health, and robustness of the error rendering."""

from __future__ import annotations

import logging
import random

import pytest

from tests.conftest import Home, running


async def test_metadata(home: Home) -> None:
    async with running(home) as service:
        status, doc = await service.get("/.well-known/oauth-authorization-server")
    issuer = home.settings.issuer
    assert status == 200
    assert doc["issuer"] == issuer
    assert doc["token_endpoint"] == f"{issuer}/token"
    assert doc["jwks_uri"] == f"{issuer}/jwks"
    assert doc["tls_client_certificate_bound_access_tokens"] is True
    assert doc["grant_types_supported"] == ["client_credentials"]
    methods = {
        "client_secret_basic", "client_secret_post", "client_secret_jwt", "private_key_jwt",
        "tls_client_auth", "self_signed_tls_client_auth", "federated_jwt", "spiffe_jwt", "spiffe_x509",
    }  # fmt: skip
    assert set(doc["token_endpoint_auth_methods_supported"]) == methods
    assert set(doc["introspection_endpoint_auth_methods_supported"]) == methods
    assert set(doc["revocation_endpoint_auth_methods_supported"]) == methods
    assert doc["introspection_endpoint"] == f"{issuer}/introspect"
    assert doc["revocation_endpoint"] == f"{issuer}/revoke"
    algs = set(doc["token_endpoint_auth_signing_alg_values_supported"])
    assert {"ES256", "PS256", "EdDSA", "HS256"} <= algs
    assert "none" not in algs
    assert "mtls_endpoint_aliases" not in doc


async def test_jwks_is_public_only(home: Home) -> None:
    async with running(home) as service:
        status, doc = await service.get("/jwks")
    assert status == 200
    assert len(doc["keys"]) == 2  # the active key and the next one, published ahead
    for key in doc["keys"]:
        assert key["kty"] == "EC"
        assert key["crv"] == "P-256"
        assert key["alg"] == "ES256"
        assert key["use"] == "sig"
        assert set(key) == {"kty", "crv", "x", "y", "use", "alg", "kid"}


async def test_health(home: Home) -> None:
    async with running(home) as service:
        assert await service.get("/health") == (200, {"status": "ok"})


async def test_log_has_the_reason_the_wire_does_not(
    home: Home, caplog: pytest.LogCaptureFixture
) -> None:
    await home.aadd_client("--auth-method", "tls_client_auth", "--client-id", "svc",
                           "--san-dns", "svc.internal")  # fmt: skip
    cert = home.issue("x", dns=["elsewhere.internal"])
    with caplog.at_level(logging.INFO, logger="mtlsauth.issuer.http"):
        async with running(home) as service:
            status, body = await service.token(cert, client_id="svc")
    assert status == 401
    assert "san_dns" not in body["error_description"]
    assert "does not carry the registered san_dns" in caplog.text


async def test_garbage_never_gets_a_500(home: Home) -> None:
    rng = random.Random(20261121)
    alphabet = b"=&%+ abcdefgh_client_idgrant_typescope\xff\x00\xc3\xa9"
    async with running(home) as service:
        for _ in range(60):
            body = bytes(rng.choice(alphabet) for _ in range(rng.randrange(0, 80)))
            status, _, doc = await service.post(
                data=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
            )
            assert 400 <= status < 500, (body, status, doc)
            assert doc["error"] in {"invalid_request", "invalid_client"}
