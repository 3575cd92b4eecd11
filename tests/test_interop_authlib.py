"""Authlib, the most used Python OAuth client, against a real server over real TLS.

Authlib's ``PrivateKeyJWT`` and ``ClientSecretJWT`` sign assertions that live an hour
(``exp = iat + 3600``); decision D9 accepts what such clients send out of the box, and the jti
stays single-use until ``exp``.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import jwt
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc7523 import ClientSecretJWT, PrivateKeyJWT
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from joserfc.jwk import ECKey

from mtlsauth.issuer.store import open_store
from tests.conftest import Home, Service, running
from tests.test_assertions import public_jwk


class _Recorder:
    """Wraps an Authlib auth method to keep the assertions it signs, to inspect them."""

    def __init__(self, method: Any) -> None:
        self.method = method
        self.name = method.name
        self.assertions: list[str] = []

    def __call__(self, auth: Any, method: str, uri: str, headers: Any, body: str) -> Any:
        uri, headers, body = self.method(auth, method, uri, headers, body)
        form = dict(pair.split("=", 1) for pair in body.split("&"))
        self.assertions.append(form["client_assertion"])
        return uri, headers, body


async def _fetch(service: Service, client_id: str, secret: Any, method: Any) -> dict[str, Any]:
    """Authlib's requests integration, as a service would use it (blocking: in a thread)."""

    def fetch() -> dict[str, Any]:
        with OAuth2Session(client_id, secret, token_endpoint_auth_method=method) as session:
            token: dict[str, Any] = session.fetch_token(
                service.url + "/token",
                grant_type="client_credentials",
                verify=str(service.home.ca_cert),
            )
            return token

    return await asyncio.to_thread(fetch)


def _lifetime(assertion: str) -> int:
    claims = jwt.decode(assertion, options={"verify_signature": False})
    return int(claims["exp"]) - int(claims["iat"])


async def test_authlib_private_key_jwt_rs256_out_of_the_box(home: Home, tmp_path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [public_jwk(key, "k1")]}))
    await home.aadd_client("--auth-method", "private_key_jwt", "--client-id", "authlib-pk",
                           "--jwks", str(jwks), "--scope", "read")  # fmt: skip
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # The default algorithm (RS256) and the default lifetime: what a user writes first.
    method = _Recorder(PrivateKeyJWT(f"{home.settings.issuer}/token"))
    async with running(home) as service:
        token = await _fetch(service, "authlib-pk", pem.decode(), method)
        assert token["token_type"] == "Bearer"
        assert token["scope"] == "read"
        assert _lifetime(method.assertions[0]) == 3600

        # The same assertion sent again is a replay.
        status, body = await service.token(
            None,
            client_assertion_type="urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            client_assertion=method.assertions[0],
        )
        assert (status, body["error"]) == (401, "invalid_client")


async def test_authlib_private_key_jwt_es256(home: Home, tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [public_jwk(key, "k1")]}))
    await home.aadd_client("--auth-method", "private_key_jwt", "--client-id", "authlib-ec",
                           "--jwks", str(jwks))  # fmt: skip

    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    method = PrivateKeyJWT(f"{home.settings.issuer}/token", headers={"kid": "k1"}, alg="ES256")
    async with running(home) as service:
        token = await _fetch(service, "authlib-ec", ECKey.import_key(pem), method)
    assert token["token_type"] == "Bearer"


async def test_authlib_client_secret_jwt_out_of_the_box(home: Home) -> None:
    added = await home.aadd_client(
        "--auth-method", "client_secret_jwt", "--client-id", "authlib-hs"
    )
    method = _Recorder(ClientSecretJWT(f"{home.settings.issuer}/token"))
    async with running(home) as service:
        token = await _fetch(service, "authlib-hs", added["client_secret"], method)
    assert token["token_type"] == "Bearer"
    assert _lifetime(method.assertions[0]) == 3600


async def test_jti_is_kept_until_the_assertion_expires(tmp_path: Path) -> None:
    """The replay cache's purge must not forget a jti whose hour-long assertion still lives."""
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    await store.migrate()
    await store.open()
    try:
        now = time.time()
        assert await store.use_assertion_id("c", "j1", now + 3600)
        await store.purge(now + 3590)  # ten seconds before exp (and within the leeway after)
        assert not await store.use_assertion_id("c", "j1", now + 3600)
        await store.purge(now + 3600 + 30)
        assert not await store.use_assertion_id("c", "j1", now + 3600)
    finally:
        await store.close()
