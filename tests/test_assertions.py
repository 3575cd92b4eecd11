"""private_key_jwt and client_secret_jwt (RFC 7523) over real TLS."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import unused_port
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from mtlsauth.core.thumbprint import b64url
from mtlsauth.issuer.clientauth import ASSERTION_TYPE
from mtlsauth.issuer.http.keys import GUARD
from tests.conftest import Home, Service, running

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


def public_jwk(key: PrivateKey, kid: str) -> dict[str, Any]:
    algorithm = {
        ec.EllipticCurvePrivateKey: jwt.algorithms.ECAlgorithm,
        rsa.RSAPrivateKey: jwt.algorithms.RSAAlgorithm,
        ed25519.Ed25519PrivateKey: jwt.algorithms.OKPAlgorithm,
    }
    for kind, impl in algorithm.items():
        if isinstance(key, kind):
            jwk: dict[str, Any] = json.loads(impl.to_jwk(key.public_key()))  # type: ignore[attr-defined]
            return jwk | {"kid": kid, "use": "sig"}
    raise AssertionError("unsupported key")


def assertion(
    home: Home,
    client_id: str,
    key: Any,
    alg: str,
    *,
    kid: str | None = "k1",
    aud: Any = None,
    lifetime: int = 60,
    **overrides: Any,
) -> str:
    now = int(time.time())
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": aud if aud is not None else home.settings.issuer,
        "exp": now + lifetime,
        "iat": now,
        "jti": secrets.token_urlsafe(16),
    } | overrides
    claims = {k: v for k, v in claims.items() if v is not None}
    headers = {"kid": kid} if kid else None
    return jwt.encode(claims, key, algorithm=alg, headers=headers)


async def token_with(service: Service, client_assertion: str, **extra: str) -> tuple[int, Any]:
    return await service.token(
        None, client_assertion_type=ASSERTION_TYPE, client_assertion=client_assertion, **extra
    )


@pytest.fixture
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def pkjwt(home: Home, tmp_path: Path, ec_key: ec.EllipticCurvePrivateKey) -> str:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [public_jwk(ec_key, "k1")]}))
    home.add_client("--auth-method", "private_key_jwt", "--client-id", "pk", "--jwks", str(jwks),
                    "--scope", "read")  # fmt: skip
    return "pk"


async def test_private_key_jwt(home: Home, pkjwt: str, ec_key: ec.EllipticCurvePrivateKey) -> None:
    async with running(home) as service:
        status, body = await token_with(service, assertion(home, pkjwt, ec_key, "ES256"))
        assert status == 200, body
        assert body["scope"] == "read"
        # client_id in the form may accompany the assertion (RFC 7521 §4.2), if it matches.
        status, body = await token_with(
            service, assertion(home, pkjwt, ec_key, "ES256"), client_id="pk"
        )
        assert status == 200, body
        status, body = await token_with(
            service, assertion(home, pkjwt, ec_key, "ES256"), client_id="someone"
        )
        assert (status, body["error"]) == (401, "invalid_client")


@pytest.mark.parametrize(
    ("kind", "alg"),
    [("rsa", "RS256"), ("rsa", "PS256"), ("ed25519", "EdDSA"), ("p384", "ES384")],
)
async def test_other_key_types(home: Home, tmp_path: Path, kind: str, alg: str) -> None:
    key: PrivateKey
    if kind == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif kind == "ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
    else:
        key = ec.generate_private_key(ec.SECP384R1())
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [public_jwk(key, "k1")]}))
    await home.aadd_client("--auth-method", "private_key_jwt", "--client-id", "c", "--jwks",
                           str(jwks))  # fmt: skip
    async with running(home) as service:
        status, body = await token_with(service, assertion(home, "c", key, alg))
    assert status == 200, body


async def test_client_secret_jwt(home: Home) -> None:
    added = await home.aadd_client("--auth-method", "client_secret_jwt", "--client-id", "hs")
    secret = added["client_secret"]
    async with running(home) as service:
        status, body = await token_with(service, assertion(home, "hs", secret, "HS256", kid=None))
        assert status == 200, body
        wrong = assertion(home, "hs", secret + "x", "HS256", kid=None)
        status, body = await token_with(service, wrong)
        assert (status, body["error"]) == (401, "invalid_client")


async def test_replay_refused_also_when_racing(
    home: Home, pkjwt: str, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    async with running(home) as service:
        once = assertion(home, pkjwt, ec_key, "ES256")
        assert (await token_with(service, once))[0] == 200
        status, body = await token_with(service, once)
        assert (status, body["error"]) == (401, "invalid_client")
        # Ten requests with the same fresh assertion at once: exactly one wins.
        racing = assertion(home, pkjwt, ec_key, "ES256")
        results = await asyncio.gather(*(token_with(service, racing) for _ in range(10)))
        assert sorted(status for status, _ in results) == [200] + [401] * 9


async def test_replay_refused_across_instances(
    home: Home, pkjwt: str, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    """Two servers on one database: an assertion used on one is refused by the other."""
    from aiohttp.test_utils import unused_port as free

    other = dataclasses.replace(home.settings, port=free())
    async with running(home) as first, running(home, other) as second:
        once = assertion(home, pkjwt, ec_key, "ES256")
        assert (await token_with(first, once))[0] == 200
        status, body = await token_with(second, once)
        assert (status, body["error"]) == (401, "invalid_client")


async def test_audience_variants(
    home: Home, pkjwt: str, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    """Decision D2: the issuer or the token endpoint, as a string or in an array."""
    issuer = home.settings.issuer
    accepted = [issuer, f"{issuer}/token", [issuer], ["https://other.example", f"{issuer}/token"]]
    refused = ["https://other.example", f"{issuer}/introspect", [f"{issuer}/jwks"], f"{issuer}/"]
    async with running(home) as service:
        for aud in accepted:
            status, body = await token_with(
                service, assertion(home, pkjwt, ec_key, "ES256", aud=aud)
            )
            assert status == 200, (aud, body)
        for aud in refused:
            status, body = await token_with(
                service, assertion(home, pkjwt, ec_key, "ES256", aud=aud)
            )
            assert (status, body["error"]) == (401, "invalid_client"), aud
    strict = dataclasses.replace(home.settings, strict_assertion_audience=True)
    async with running(home, strict) as service:
        status, _ = await token_with(service, assertion(home, pkjwt, ec_key, "ES256", aud=issuer))
        assert status == 200
        status, _ = await token_with(
            service, assertion(home, pkjwt, ec_key, "ES256", aud=f"{issuer}/token")
        )
        assert status == 401


def _forged(header: dict[str, Any], claims: dict[str, Any], sign: Any = None) -> str:
    signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
    signature = b64url(sign(signing_input.encode())) if sign else ""
    return f"{signing_input}.{signature}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


async def test_bad_assertions(home: Home, pkjwt: str, ec_key: ec.EllipticCurvePrivateKey) -> None:
    now = int(time.time())
    issuer = home.settings.issuer
    claims = {"iss": pkjwt, "sub": pkjwt, "aud": issuer, "exp": now + 60, "iat": now, "jti": "j1"}
    public_pem = ec_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    other_key = ec.generate_private_key(ec.SECP256R1())
    cases = {
        "alg none": _forged({"alg": "none", "kid": "k1"}, claims),
        "HS256 with the public key": _forged(
            {"alg": "HS256", "kid": "k1"},
            claims,
            lambda data: hmac.new(public_pem, data, hashlib.sha256).digest(),
        ),
        "another key": assertion(home, pkjwt, other_key, "ES256"),
        "exp too far": assertion(home, pkjwt, ec_key, "ES256", lifetime=7200),
        "expired": assertion(home, pkjwt, ec_key, "ES256", lifetime=-120),
        "no jti": assertion(home, pkjwt, ec_key, "ES256", jti=None),
        "no exp": assertion(home, pkjwt, ec_key, "ES256", exp=None),
        "sub differs": assertion(home, pkjwt, ec_key, "ES256", sub="someone"),
        "iss differs": jwt.encode(claims | {"iss": "someone"}, ec_key, "ES256", {"kid": "k1"}),
        "unknown kid": assertion(home, pkjwt, ec_key, "ES256", kid="k2"),
        "garbage": "not.a.jwt",
        "alg is a list": _forged({"alg": ["ES256"], "kid": "k1"}, claims),
        "alg is an object": _forged({"alg": {"ES256": 1}, "kid": "k1"}, claims),
        "header nested too deeply": f"{_b64(b'[' * 5000)}.{_b64(json.dumps(claims).encode())}.c2ln",
    }
    lenient = dataclasses.replace(home.settings, throttle_limit=1000)  # many failures on purpose
    async with running(home, lenient) as service:
        for label, value in cases.items():
            status, body = await token_with(service, value, client_id=pkjwt)
            assert (status, body["error"]) == (401, "invalid_client"), label
        # Without client_id the payload's iss is read (unverified) to find the client.
        deep_payload = f"{_b64(b'{}')}.{_b64(b'[' * 5000)}.c2ln"
        status, body = await token_with(service, deep_payload)
        assert (status, body["error"]) == (401, "invalid_client")
        status, body = await service.token(client_assertion=assertion(home, pkjwt, ec_key, "ES256"))
        assert (status, body["error"]) == (400, "invalid_request")  # no assertion type
        status, body = await service.token(
            client_assertion_type="urn:example:other", client_assertion="x", client_id=pkjwt
        )
        assert (status, body["error"]) == (401, "invalid_client")


async def test_secret_client_refuses_asymmetric_algorithms(home: Home) -> None:
    await home.aadd_client("--auth-method", "client_secret_jwt", "--client-id", "hs")
    key = ec.generate_private_key(ec.SECP256R1())
    async with running(home) as service:
        status, body = await token_with(service, assertion(home, "hs", key, "ES256"))
    assert (status, body["error"]) == (401, "invalid_client")


@contextlib.asynccontextmanager
async def jwks_server(home: Home, documents: list[Any]) -> AsyncIterator[str]:
    """An https JWKS endpoint serving ``documents[-1]`` (so the test can rotate keys); a
    ``bytes`` document is sent as it is."""
    hits: list[int] = []

    async def serve(request: web.Request) -> web.Response:
        hits.append(1)
        document = documents[-1]
        if isinstance(document, bytes):
            return web.Response(body=document, content_type="application/json")
        return web.json_response(document)

    app = web.Application()
    app.router.add_get("/jwks", serve)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    port = unused_port()
    from mtlsauth.bench.demo_api import demo_api_ssl_context

    await web.TCPSite(
        runner, "127.0.0.1", port, ssl_context=demo_api_ssl_context(home.settings)
    ).start()
    try:
        yield f"https://127.0.0.1:{port}/jwks"
    finally:
        await runner.cleanup()


async def test_jwks_uri_nested_too_deeply(home: Home, ec_key: ec.EllipticCurvePrivateKey) -> None:
    """A hostile jwks_uri document is a failed fetch (401), not a server error."""
    settings = dataclasses.replace(
        home.settings, jwks_uri_cafile=home.ca_cert, jwks_uri_allow_private=("127.0.0.0/8",)
    )
    async with jwks_server(home, [b'{"keys":' + b"[" * 5000]) as uri:
        await home.aadd_client("--auth-method", "private_key_jwt", "--client-id", "deep",
                               "--jwks-uri", uri)  # fmt: skip
        async with running(home, settings) as service:
            status, body = await token_with(service, assertion(home, "deep", ec_key, "ES256"))
    assert (status, body["error"]) == (401, "invalid_client")


async def test_jwks_uri_with_caching_and_rotation(home: Home) -> None:
    first, second = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    documents = [{"keys": [public_jwk(first, "one")]}]
    settings = dataclasses.replace(
        home.settings, jwks_uri_cafile=home.ca_cert, jwks_uri_allow_private=("127.0.0.0/8",)
    )
    async with jwks_server(home, documents) as uri:
        await home.aadd_client("--auth-method", "private_key_jwt", "--client-id", "remote",
                               "--jwks-uri", uri)  # fmt: skip
        async with running(home, settings) as service:
            for _ in range(3):
                status, body = await token_with(
                    service, assertion(home, "remote", first, "ES256", kid="one")
                )
                assert status == 200, body
            # The client rotates its key at its jwks_uri; an unknown kid triggers a refetch.
            documents.append({"keys": [public_jwk(second, "two")]})
            remote = service.app[GUARD].context.remote_jwks
            assert remote is not None
            remote.min_refetch = 0.0  # the 10 s rate limit, shortened for the test
            status, body = await token_with(
                service, assertion(home, "remote", second, "ES256", kid="two")
            )
            assert status == 200, body
